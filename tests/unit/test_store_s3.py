"""s3:// connector without an endpoint: the ETag an upload of a local file
gets, computed from the file (the functional tests compare it with what
the embedded cluster's S3 API gives)."""

import hashlib
import io
import os

import pytest

from mlstorlets.client.stores.local import FileStore
from mlstorlets.client.stores.s3 import DEFAULT_PART, MAX_PARTS, S3Store, multipart_etag

MIB = 1 << 20


def composite(data, part):
    """The ETag S3 documents for a multipart upload, spelled out."""
    parts = [data[i : i + part] for i in range(0, len(data), part)]
    whole = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return "%s-%d" % (whole, len(parts))


@pytest.mark.parametrize(
    "size, part",
    [(10, 10), (11, 10), (29, 10), (30, 10), (3 * MIB + 1, MIB), (2 * MIB, 5 * MIB)],
)
def test_multipart_etag_is_the_md5_of_the_parts_md5s(size, part):
    data = os.urandom(size)
    assert multipart_etag(io.BytesIO(data), part) == composite(data, part)
    assert multipart_etag(io.BytesIO(data), part, size) == composite(data, part)


def test_multipart_etag_of_a_body_not_of_its_size_is_none():
    assert multipart_etag(io.BytesIO(b"x" * 25), 10, 24) is None
    assert multipart_etag(io.BytesIO(b"x" * 25), 10, 26) is None


def test_upload_etag_follows_the_part_rule_of_write(tmp_path):
    files = FileStore(str(tmp_path))
    store = S3Store(None, "bucket", part_size=5 * MIB)
    for name, size, parts in [
        ("small", 1000, None),  # one PUT: the body's MD5
        ("below", 5 * MIB - 1, None),
        ("at", 5 * MIB, 1),  # s3transfer: a multipart upload from the threshold on
        ("above", 11 * MIB + 7, 3),
    ]:
        data = os.urandom(size)
        (tmp_path / name).write_bytes(data)
        etag = store.upload_etag(files.head(name))
        if parts is None:
            assert etag == hashlib.md5(data).hexdigest()
        else:
            assert etag == composite(data, 5 * MIB) and etag.endswith("-%d" % parts)
    # Below S3's minimum part, s3transfer sends 5 MiB parts (past the
    # threshold, which it does not raise).
    small_parts = S3Store(None, "bucket", part_size=MIB)
    data = (tmp_path / "above").read_bytes()
    assert small_parts.upload_etag(files.head("above")) == composite(data, 5 * MIB)
    data = (tmp_path / "below").read_bytes()
    assert small_parts.upload_etag(files.head("below")) == composite(data, 5 * MIB)


def test_upload_etag_of_a_file_that_changed_size_or_of_another_entry_is_none(tmp_path):
    files = FileStore(str(tmp_path))
    store = S3Store(None, "bucket", part_size=5 * MIB)
    (tmp_path / "a").write_bytes(b"x" * (6 * MIB))
    entry = files.head("a")
    with open(tmp_path / "a", "ab") as f:
        f.write(b"more")
    assert store.upload_etag(entry) is None
    from mlstorlets.client.stores.base import Entry

    assert store.upload_etag(Entry("k", 6 * MIB, "e")) is None


def test_the_part_size_grows_to_fit_ten_thousand_parts():
    store = S3Store(None, "bucket")
    assert store._part(0) == store._part(80 * 1000 * MIB) == DEFAULT_PART
    big = DEFAULT_PART * MAX_PARTS + 1
    assert store._part(big) == -(-big // MAX_PARTS)
