"""Large objects across stores against the embedded cluster: Static Large
Objects written in segments, S3 multipart uploads, manifests kept by
in-cluster copies, content headers and metadata kept on every path.  The
segment sizes are small (1 MiB for Swift, S3's minimum of 5 MiB) so that
a few MiB make a segmented object."""

import json
import os
import uuid

import boto3
import pytest

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
