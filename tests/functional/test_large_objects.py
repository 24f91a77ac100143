"""Large objects across stores against the embedded cluster: Static Large
Objects written in segments, S3 multipart uploads, manifests kept by
in-cluster copies, content headers and metadata kept on every path.  The
segment sizes are small (1 MiB for Swift, S3's minimum of 5 MiB) so that
a few MiB make a segmented object."""

import hashlib
import json
import os
import uuid

import boto3
import pytest
from boto3.s3.transfer import TransferConfig

from mlstorlets.client.placement import copy
from mlstorlets.client.stores import StoreError, Stores
from mlstorlets.client.stores.local import FileStore

MIB = 1 << 20
HEADERS = {"Content-Type": "image/png", "Content-Disposition": 'attachment; filename="big.png"'}


@pytest.fixture
def env(cluster):
    return cluster.env()


@pytest.fixture
def segmented(conn, container):
    """The test's container and its segments container, both emptied
    afterwards (manifests first, with their segments)."""
    yield container
    for name in (container, container + "_segments"):
        try:
            listing = conn.get_container(name, full_listing=True)[1]
        except Exception:
            continue
        for entry in listing:
            conn.delete_object(name, entry["name"])
        if name != container:
            conn.delete_container(name)


@pytest.fixture
def bucket(env, conn):
    s3 = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    name = "mls-%s" % uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name)
    yield s3, name
    for entry in s3.list_objects_v2(Bucket=name).get("Contents", ()):
        s3.delete_object(Bucket=name, Key=entry["Key"])  # and its parts
    s3.delete_bucket(Bucket=name)


def local_file(tmp_path, name, size):
    """A file of ``size`` random bytes with content headers and metadata
    (in its extended attribute), and its bytes."""
    data = os.urandom(size)
    key = "%s/%s" % (str(tmp_path)[1:], name)
    FileStore().put(key, data, {"label": "big"}, HEADERS)
    return "file:///" + key, data


def test_a_big_file_becomes_a_static_large_object_copied_as_a_manifest(
    env, conn, segmented, tmp_path
):
    src, data = local_file(tmp_path, "big.png", 3 * MIB + 12345)
    stores = Stores(env, segment_size=MIB)
    up = copy(src, "swift://%s/big.png" % segmented, stores=stores)
    assert up.ok and up.placement == "client"
    # Uploaded by path; a copy's bytes count once.
    assert up.client_bytes == len(data)
    headers = conn.head_object(segmented, "big.png")
    assert headers["x-static-large-object"] == "True"
    assert headers["content-type"] == HEADERS["Content-Type"]
    assert headers["content-disposition"] == HEADERS["Content-Disposition"]
    assert headers["x-object-meta-label"] == "big"
    segments = conn.get_container(segmented + "_segments")[1]
    assert [s["bytes"] for s in segments] == [MIB] * 3 + [12345]
    assert conn.get_object(segmented, "big.png")[1] == data

    # In the cluster: the manifest is copied, not the concatenation; the
    # copy shares the segments.
    inside = copy(
        "swift://%s/big.png" % segmented, "swift://%s/copy.png" % segmented, stores=stores
    )
    assert inside.ok and inside.placement == "cluster"
    assert inside.client_bytes == 0
    copied = conn.head_object(segmented, "copy.png")
    assert copied["x-static-large-object"] == "True"
    assert copied["etag"] == headers["etag"]
    assert copied["content-type"] == HEADERS["Content-Type"]
    assert copied["content-disposition"] == HEADERS["Content-Disposition"]
    _, manifest = conn.get_object(segmented, "copy.png", query_string="multipart-manifest=get")
    assert [s["bytes"] for s in json.loads(manifest)] == [MIB] * 3 + [12345]
    assert len(conn.get_container(segmented + "_segments")[1]) == 4
    assert conn.get_object(segmented, "copy.png")[1] == data

    # Back out to a file: the body, the headers and the metadata.
    down = copy("swift://%s/copy.png" % segmented, "file://%s/back/" % tmp_path, stores=stores)
    assert down.ok and down.client_bytes == len(data)
    assert (tmp_path / "back" / "copy.png").read_bytes() == data
    entry = FileStore().head("%s/back/copy.png" % str(tmp_path)[1:])
    assert entry.headers == HEADERS
    assert entry.metadata["Label"] == "big"


def test_a_dynamic_large_object_is_copied_as_a_manifest(env, conn, segmented):
    for i in range(3):
        conn.put_object(segmented, "parts/%03d" % i, b"%d" % i * 1000)
    conn.put_object(
        segmented,
        "dlo",
        b"",
        headers={"X-Object-Manifest": "%s/parts/" % segmented, "Content-Type": "text/csv"},
    )
    summary = copy(
        "swift://%s/dlo" % segmented, "swift://%s/dlo-copy" % segmented, stores=Stores(env)
    )
    assert summary.ok and summary.placement == "cluster"
    headers, body = conn.get_object(segmented, "dlo-copy")
    assert headers["x-object-manifest"] == "%s/parts/" % segmented
    assert headers["content-type"] == "text/csv"
    assert body == b"0" * 1000 + b"1" * 1000 + b"2" * 1000


def test_s3_multipart_both_ways_with_headers_and_metadata(env, bucket, tmp_path):
    s3, name = bucket
    src, data = local_file(tmp_path, "big.png", 11 * MIB + 7)
    stores = Stores(env, segment_size=5 * MIB)
    up = copy(src, "s3://%s/in/big.png" % name, stores=stores)
    assert up.ok
    answer = s3.head_object(Bucket=name, Key="in/big.png")
    assert answer["ETag"].strip('"').endswith("-3")  # three parts
    assert answer["ContentLength"] == len(data)
    assert answer["ContentType"] == HEADERS["Content-Type"]
    assert answer["ContentDisposition"] == HEADERS["Content-Disposition"]
    assert answer["Metadata"]["label"] == "big"
    down = copy("s3://%s/in/" % name, "file://%s/back/" % tmp_path, stores=stores)
    assert down.ok
    assert (tmp_path / "back" / "big.png").read_bytes() == data
    entry = FileStore().head("%s/back/big.png" % str(tmp_path)[1:])
    assert entry.headers == HEADERS
    assert entry.metadata["Label"] == "big"
    assert entry.metadata["Source-Etag"] == answer["ETag"].strip('"')


@pytest.fixture
def counted(monkeypatch):
    """Every read of a local file for a hash, by path: MD5s, and the ETags
    of uploads ({'md5': [...], 'etag': [...], 'at_upload': [...]}, the
    last the MD5s computed when each upload started)."""
    from mlstorlets.client.stores import local, s3

    reads = {"md5": [], "etag": [], "at_upload": []}
    md5, etag, write = local._file_md5, s3.multipart_etag, s3.S3Store.write

    def counted_md5(path, st):
        reads["md5"].append(path)
        return md5(path, st)

    def counted_etag(f, *args):
        reads["etag"].append(f.name)
        return etag(f, *args)

    def upload(self, key, body, *args, **kwargs):
        reads["at_upload"].append({k[0] for k in local._md5s})
        return write(self, key, body, *args, **kwargs)

    monkeypatch.setattr(local, "_file_md5", counted_md5)
    monkeypatch.setattr(s3, "multipart_etag", counted_etag)
    monkeypatch.setattr(s3.S3Store, "write", upload)
    return reads


@pytest.mark.parametrize(
    "size, parts", [(11 * MIB + 7, 3), (5 * MIB, 1), (12345, 0)], ids=["3-parts", "1-part", "put"]
)
def test_a_file_copied_to_s3_is_not_read_before_and_resumes_by_etag(
    env, bucket, tmp_path, counted, size, parts
):
    s3, name = bucket
    src, data = local_file(tmp_path, "big.png", size)
    path = src[len("file://") :]
    # A file copied from elsewhere records where it came from.
    FileStore().put(path[1:], data, {"label": "big", "source-etag": "elsewhere"}, HEADERS)
    dest = "s3://%s/in/big.png" % name
    stores = Stores(env, segment_size=5 * MIB)
    assert copy(src, dest, stores=stores).done == [src]
    # Nothing hashed the file: no MD5 before the upload, none after.
    assert counted["md5"] == counted["etag"] == []
    assert [path in known for known in counted["at_upload"]] == [False]
    answer = s3.head_object(Bucket=name, Key="in/big.png")
    etag = answer["ETag"].strip('"')
    if parts:
        # What S3 documents, spelled out: the MD5 of the parts' MD5s.
        md5s = b"".join(
            hashlib.md5(data[i : i + 5 * MIB]).digest() for i in range(0, size, 5 * MIB)
        )
        assert etag == "%s-%d" % (hashlib.md5(md5s).hexdigest(), parts)
    else:
        assert etag == hashlib.md5(data).hexdigest()
    # The object's ETag identifies it: no Source-Etag, not even the file's own.
    assert answer["Metadata"] == {"label": "big"}
    assert copy(src, dest, stores=stores).skipped == [src]
    # The second run read the file's parts once; the MD5 of one PUT, its
    # record holds.
    assert counted["etag"] == ([path] if parts else []) and counted["md5"] == []
    # The same size, another byte: copied again, then up to date again.
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(bytes([data[size // 2] ^ 1]))
    assert copy(src, dest, stores=stores).done == [src]
    assert s3.head_object(Bucket=name, Key="in/big.png")["ETag"].strip('"') != etag
    if parts:
        # Its parts compared, nothing else read (no Source-Etag to check).
        assert counted["etag"] == [path] * 2 and counted["md5"] == []
    assert copy(src, dest, stores=stores).skipped == [src]


def test_an_s3_copy_in_other_parts_is_up_to_date_by_its_source_etag(env, bucket, tmp_path):
    s3, name = bucket
    src, data = local_file(tmp_path, "big.png", 11 * MIB)
    stores = Stores(env, segment_size=5 * MIB)
    # Uploaded in 6 MiB parts (another part size, or an older copy that
    # recorded its source's MD5): its ETag is not the one of 5 MiB parts.
    six = TransferConfig(multipart_threshold=6 * MIB, multipart_chunksize=6 * MIB)
    md5 = hashlib.md5(data).hexdigest()
    path = src[len("file://") :]
    s3.upload_file(
        path, name, "in/old.png", ExtraArgs={"Metadata": {"source-etag": md5}}, Config=six
    )
    s3.upload_file(path, name, "in/other.png", Config=six)
    assert s3.head_object(Bucket=name, Key="in/other.png")["ETag"].strip('"').endswith("-2")
    assert copy(src, "s3://%s/in/old.png" % name, stores=stores).skipped == [src]
    assert copy(src, "s3://%s/in/other.png" % name, stores=stores).done == [src]
    assert copy(src, "s3://%s/in/other.png" % name, stores=stores).skipped == [src]


def test_the_etag_of_a_file_is_the_one_boto3s_upload_gives(env, bucket, tmp_path):
    """As ``aws s3 cp`` uploads (8 MiB parts from 8 MiB): a file it
    copied is up to date for the next copy."""
    s3, name = bucket
    store = Stores(env).open("s3://%s/" % name)[0]
    for size in (8 * MIB - 1, 8 * MIB, 17 * MIB + 3):
        src, _ = local_file(tmp_path, "f%d" % size, size)
        path = src[len("file://") :]
        s3.upload_file(path, name, "aws/f%d" % size)
        uploaded = s3.head_object(Bucket=name, Key="aws/f%d" % size)["ETag"].strip('"')
        assert store.upload_etag(FileStore().head(path[1:])) == uploaded
        summary = copy(src, "s3://%s/aws/f%d" % (name, size), stores=Stores(env))
        assert summary.skipped == [src]


@pytest.fixture
def hashed(monkeypatch):
    """Every read of a local file for its MD5 (by path: a hash this
    process knew reads nothing), and whether each Swift upload started
    with the file's MD5 known ({'md5': [...], 'known_at_upload': [...]})."""
    from mlstorlets.client.stores import local, swift

    reads = {"md5": [], "known_at_upload": []}
    md5, write = local._file_md5, swift.SwiftStore.write

    def counted_md5(path, st):
        if (path, *local._stat_key(st)) not in local._md5s:
            reads["md5"].append(path)
        return md5(path, st)

    def upload(self, key, body, *args, **kwargs):
        path = getattr(body, "path", None)
        reads["known_at_upload"].append(any(k[0] == path for k in local._md5s))
        return write(self, key, body, *args, **kwargs)

    monkeypatch.setattr(local, "_file_md5", counted_md5)
    monkeypatch.setattr(swift.SwiftStore, "write", upload)
    return reads


def plain_file(tmp_path, name, data):
    """A file without a record (no MD5 known): its path and its URI."""
    path = tmp_path / name
    path.write_bytes(data)
    return str(path), "file://" + str(path)


def test_a_file_copied_to_swift_is_hashed_as_it_is_sent_and_resumes_by_etag(
    env, conn, container, tmp_path, hashed
):
    from mlstorlets.client.stores import local

    data = os.urandom(3 * MIB + 5)
    path, src = plain_file(tmp_path, "big.png", data)
    dest = "swift://%s/in/big.png" % container
    assert copy(src, dest, stores=Stores(env)).done == [src]
    # Nothing read the file before its upload, nor after: its MD5 was
    # computed as it was sent, and is the object's ETag.
    assert hashed == {"md5": [], "known_at_upload": [False]}
    headers = conn.head_object(container, "in/big.png")
    assert headers["etag"] == hashlib.md5(data).hexdigest()
    assert local._md5s[(path, *local._stat_key(os.stat(path)))] == headers["etag"]
    # The ETag identifies the copy: no Source-Etag.
    assert not [k for k in headers if k.endswith("source-etag")]
    # Skipped, by the MD5 the upload kept: the file is not read again.
    assert copy(src, dest, stores=Stores(env)).skipped == [src]
    assert hashed["md5"] == []
    # In another process, it would be read once for the comparison.
    local._md5s.clear()
    assert copy(src, dest, stores=Stores(env)).skipped == [src]
    assert hashed["md5"] == [path]
    # The same size, another byte: copied again, then up to date again.
    with open(path, "r+b") as f:
        f.seek(len(data) // 2)
        f.write(bytes([data[len(data) // 2] ^ 1]))
    assert copy(src, dest, stores=Stores(env)).done == [src]
    changed = conn.head_object(container, "in/big.png")["etag"]
    with open(path, "rb") as f:
        assert changed != headers["etag"] and changed == hashlib.md5(f.read()).hexdigest()
    assert copy(src, dest, stores=Stores(env)).skipped == [src]


def test_a_file_whose_md5_is_known_sends_it_for_swift_to_check(
    env, conn, container, tmp_path, monkeypatch
):
    from mlstorlets.client.stores import swift

    src, data = local_file(tmp_path, "known.png", MIB + 3)  # its record holds its MD5
    sent = []
    real = swift._Service.upload

    def upload(self, container, objects, options):
        sent.append(options["header"])
        return real(self, container, objects, options)

    monkeypatch.setattr(swift._Service, "upload", upload)
    assert copy(src, "swift://%s/known.png" % container, stores=Stores(env)).done == [src]
    assert "Etag: %s" % hashlib.md5(data).hexdigest() in sent[0]
    headers = conn.head_object(container, "known.png")
    assert headers["x-object-meta-label"] == "big"
    assert not [k for k in headers if k.endswith("source-etag")]


def test_a_copy_by_an_older_version_with_a_source_etag_resumes(env, conn, container, tmp_path):
    data = os.urandom(1000)
    path, src = plain_file(tmp_path, "old.bin", data)
    md5 = hashlib.md5(data).hexdigest()
    conn.put_object(container, "old.bin", data, headers={"X-Object-Meta-Source-Etag": md5})
    dest = "swift://%s/old.bin" % container
    assert copy(src, dest, stores=Stores(env)).skipped == [src]
    with open(path, "r+b") as f:
        f.write(bytes([data[0] ^ 1]))
    assert copy(src, dest, stores=Stores(env)).done == [src]
    assert copy(src, dest, stores=Stores(env)).skipped == [src]


def test_a_file_written_to_while_it_is_copied_to_swift_leaves_no_object(
    env, container, tmp_path, monkeypatch
):
    from mlstorlets.client.stores import local

    data = os.urandom(2 * MIB)
    path, src = plain_file(tmp_path, "growing.bin", data)
    read = local.HashedFile.read

    def appending(self, size=-1):
        chunk = read(self, size)
        if chunk and self.f.tell() == len(chunk):
            with open(path, "ab") as f:  # another writer, after the first read
                f.write(b"more")
        return chunk

    monkeypatch.setattr(local.HashedFile, "read", appending)
    store, uri = Stores(env).open("swift://%s/growing.bin" % container)
    summary = copy(src, str(uri), stores=Stores(env))
    assert summary.done == [] and len(summary.failed) == 1
    name, reason = summary.failed[0]
    assert (name, reason) == (src, "changed while being copied; %s not kept" % uri)
    assert store.head("growing.bin") is None
    # A file touched (its modification time) counts as changed too.
    monkeypatch.setattr(local.HashedFile, "read", read)
    with pytest.raises(StoreError, match="changed while being copied") as err:
        with FileStore().reader(path[1:]) as body:
            original = local.HashedFile.end

            def touched(self):
                os.utime(path, ns=(0, 1))
                return original(self)

            monkeypatch.setattr(local.HashedFile, "end", touched)
            store.write(uri.key, body)
    assert err.value.uri == src
    assert store.head("growing.bin") is None


def test_swift_storing_other_bytes_than_were_read_removes_the_object(
    env, container, tmp_path, monkeypatch
):
    from mlstorlets.client.stores import local

    path, src = plain_file(tmp_path, "damaged.bin", os.urandom(MIB + 1))
    read = local.HashedFile.read

    def misread(self, size=-1):
        # The hash sees a byte Swift never got.
        chunk = read(self, size)
        if chunk and self.f.tell() == len(chunk):
            self._md5.update(b"x")
        return chunk

    monkeypatch.setattr(local.HashedFile, "read", misread)
    store, uri = Stores(env).open("swift://%s/damaged.bin" % container)
    with pytest.raises(StoreError, match="arrived damaged.*is not the MD5") as err:
        with FileStore().reader(path[1:]) as body:
            store.write(uri.key, body)
    assert err.value.uri == str(uri) and path in err.value.reason
    assert store.head("damaged.bin") is None
    # Nor is the wrong MD5 kept for the file.
    assert not [k for k in local._md5s if k[0] == path]


class Breaking:
    """A body that fails after ``limit`` bytes."""

    def __init__(self, limit):
        self.left = limit

    def read(self, size=-1):
        if self.left <= 0:
            raise StoreError("file:///src", "the download broke off")
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return b"y" * size


def test_a_segmented_upload_that_breaks_leaves_nothing(env, conn, segmented):
    store, uri = Stores(env, segment_size=MIB).open("swift://%s/broken" % segmented)
    with pytest.raises(StoreError, match="the download broke off"):
        store.write(uri.key, Breaking(2 * MIB + 10), size=3 * MIB)
    assert store.head("broken") is None
    assert conn.get_container(segmented + "_segments")[1] == []
    # Nor does a single PUT that breaks.
    store.segment_size = None
    with pytest.raises(StoreError, match="the download broke off"):
        store.write(uri.key, Breaking(MIB + 10), size=3 * MIB)
    assert store.head("broken") is None
