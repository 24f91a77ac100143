"""Streaming bodies: readers check what they read, writers consume a
stream in chunks, content headers go with the body, and a client-side
storlet reads its input as a stream."""

import hashlib
import io
import os
import types

import pytest
from dropbox_server import TOKEN, DropboxServer, session_for

from mlstorlets.client.local_storlet import InputFile, stream
from mlstorlets.client.stores import StoreError
from mlstorlets.client.stores import dropbox as dropbox_store
from mlstorlets.client.stores import local as local_store
from mlstorlets.client.stores.base import (
    CHUNK,
    Counted,
    Entry,
    FullReads,
    Progress,
    Reader,
    Tally,
    content_headers,
)
from mlstorlets.client.stores.dropbox import ContentHasher, DropboxStore, content_hash, make_client
from mlstorlets.client.stores.local import FileStore

HEADERS = {"Content-Type": "text/csv", "Content-Disposition": 'attachment; filename="a.csv"'}


def reader(chunks, size, digest=None):
    data = b"".join(chunks)
    check = (hashlib.md5(), digest or hashlib.md5(data).hexdigest())
    return Reader("s3://b/k", chunks, Entry("k", size, check[1]), check)


def test_a_reader_gives_the_body_in_any_read_sizes():
    body = reader([b"abc", b"", b"defgh", b"i"], 9)
    # A raw stream: at most what was asked, short at a chunk's end.
    assert body.read(2) == b"ab" and body.read(4) == b"c"
    assert body.read(4) == b"defg"
    assert body.read() == b"hi" and body.read() == b""
    assert body.bytes_read == 9


def test_a_short_or_damaged_body_fails_before_its_end():
    short = reader([b"abc"], 4)
    with pytest.raises(StoreError, match="s3://b/k: the download ended after 3 of 4 bytes"):
        short.read()
    damaged = reader([b"abc"], 3, digest="0" * 32)
    assert damaged.read(3) == b"abc"
    with pytest.raises(StoreError, match="arrived damaged"):
        damaged.read(1)

    def broken():
        yield b"ab"
        raise ConnectionResetError("reset by peer")

    cut = Reader("swift://c/o", broken(), Entry("o", 4))
    with pytest.raises(StoreError, match="swift://c/o: the download broke off: reset by peer"):
        cut.read()


def test_counted_and_full_reads():
    seen = []
    counted = Counted(reader([b"ab", b"cd", b"e"], 5), seen.append)
    full = FullReads(counted)
    assert full.read(4) == b"abcd"  # over two raw chunks
    assert full.read(4) == b"e" and full.read(4) == b""
    assert sum(seen) == 5


def test_a_large_body_is_hashed_beside_its_reading_and_given_whole():
    chunks = [bytes([i]) * CHUNK for i in range(20)]  # past the inline part
    body = Counted(reader(chunks, 20 * CHUNK), lambda n: None)
    assert body.checks_md5 and body.md5 is None
    # A read that holds a chunk gets the chunk itself, not a copy.
    assert all(body.read(CHUNK) is chunk for chunk in chunks)
    assert body.read(CHUNK) == b""
    assert body.md5 == hashlib.md5(b"".join(chunks)).hexdigest()
    damaged = reader(chunks, 20 * CHUNK, digest="0" * 32)
    with pytest.raises(StoreError, match="arrived damaged"):
        damaged.read()
    # Closed half-way: its hashing thread ends.
    half = reader(chunks, 20 * CHUNK)
    half.read(15 * CHUNK)
    half.close()
    assert half._hasher._thread is None


def test_a_dropbox_hash_is_not_taken_for_an_md5():
    data = b"abc"
    body = Reader("dropbox://k", [data], Entry("k", 3), (ContentHasher(), content_hash(data)))
    assert not body.checks_md5
    assert body.read() == data and body.md5 is None


def test_progress_is_counted_a_mib_at_a_time():
    seen = []
    tally = Tally(seen.append)
    for _ in range(3000):
        tally.add(1000)
    assert seen == [1000 * 1049] * 2
    tally.finish()
    assert sum(seen) == 3_000_000 and len(seen) == 3
    read = Progress(io.BytesIO(b"x" * (CHUNK + 5)), seen.append)
    assert read.read(CHUNK - 1) and seen[3:] == []
    assert read.read(10) and seen[3:] == [CHUNK + 5]
    assert read.seek(0) == 0 and read.tell() == 0


def test_a_file_written_from_a_checked_download_is_not_hashed_again(tmp_path, monkeypatch):
    data = bytes(range(256)) * 9000
    updates = []

    class Md5:
        def __init__(self, **kwargs):
            self.real = hashlib.md5()

        def update(self, chunk):
            updates.append(len(chunk))
            self.real.update(chunk)

        def hexdigest(self):
            return self.real.hexdigest()

    monkeypatch.setattr(local_store, "hashlib", types.SimpleNamespace(md5=Md5))
    store = FileStore(str(tmp_path))
    entry = store.write("a.bin", reader([data[:1000], data[1000:]], len(data)), {"k": "v"})
    assert entry.etag == hashlib.md5(data).hexdigest() and updates == []
    assert store.head("a.bin").etag == entry.etag
    # A body of unknown hash is hashed as it is written.
    assert store.write("b.bin", io.BytesIO(data)).etag == entry.etag and sum(updates) == len(data)


def test_a_large_file_is_synced_as_it_is_written(tmp_path, monkeypatch):
    synced = []
    real = os.fdatasync
    monkeypatch.setattr(local_store._Syncing, "EVERY", CHUNK)
    monkeypatch.setattr(os, "fdatasync", lambda fd: synced.append(fd) or real(fd))
    data = os.urandom(5 * CHUNK)
    entry = FileStore(str(tmp_path)).write("a.bin", io.BytesIO(data))
    assert entry.etag == hashlib.md5(data).hexdigest()
    assert (tmp_path / "a.bin").read_bytes() == data
    assert 1 <= len(synced) <= 5  # one at a time, each a CHUNK or more apart


def test_the_md5_of_a_file_without_a_record_is_computed_once(tmp_path, monkeypatch):
    (tmp_path / "a.bin").write_bytes(b"abc")
    store = FileStore(str(tmp_path))
    opened = []
    real_open = open
    monkeypatch.setattr(
        local_store,
        "open",
        lambda *a, **k: opened.append(a[0]) or real_open(*a, **k),
        raising=False,
    )
    assert store.head("a.bin").etag == hashlib.md5(b"abc").hexdigest()
    with store.reader("a.bin") as body:
        assert body.file_md5 == hashlib.md5(b"abc").hexdigest()
    assert opened.count(str(tmp_path / "a.bin")) == 2  # hashed once, then read
    # Another content under the same name is hashed again.
    (tmp_path / "a.bin").write_bytes(b"abcd")
    assert store.head("a.bin").etag == hashlib.md5(b"abcd").hexdigest()


def test_content_headers_are_picked_and_spelled_alike():
    assert content_headers(
        {"content-type": "a/b", "etag": "x", "CONTENT-DISPOSITION": "inline"}
    ) == {"Content-Type": "a/b", "Content-Disposition": "inline"}
    assert content_headers({"Content-Type": ""}) == {}


def test_a_file_is_written_from_a_stream_with_its_headers(tmp_path):
    store = FileStore(str(tmp_path))
    data = bytes(range(256)) * 9000  # more than one chunk
    entry = store.write(
        "d/a.csv", io.BufferedReader(io.BytesIO(data)), {"k": "v"}, dict(HEADERS, Etag="ignored")
    )
    assert entry.etag == hashlib.md5(data).hexdigest()
    assert entry.headers == HEADERS
    assert (tmp_path / "d" / "a.csv").read_bytes() == data
    with store.reader("d/a.csv") as body:
        assert body.headers == HEADERS and body.metadata == {"K": "v"}
        assert body.read() == data
    # No temporary file is left behind.
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["a.csv"]


def test_dropbox_streams_with_headers(monkeypatch):
    monkeypatch.setattr(dropbox_store, "UPLOAD_CHUNK", 1000)
    data = bytes(range(256)) * 20
    with DropboxServer() as server:
        store = DropboxStore(
            make_client({"DROPBOX_ACCESS_TOKEN": TOKEN}, session=session_for(server))
        )
        # A raw stream that returns short reads: still whole chunks.
        raw = Counted(io.BytesIO(data), lambda n: None)
        entry = store.write("a.csv", raw, {"k": "v"}, HEADERS)
        assert entry.etag == content_hash(data)
        routes = [route for _, route in server.requests]
        assert routes.count("files/upload_session/append_v2") == 4
        with store.reader("a.csv") as body:
            assert body.read() == data
            assert body.headers == HEADERS
            assert body.metadata == {"K": "v"}


def test_the_content_hasher_takes_any_pieces():
    data = bytes(range(256)) * 40000
    hasher = ContentHasher()
    for start in range(0, len(data), 1000003):
        hasher.update(data[start : start + 1000003])
    assert hasher.hexdigest() == content_hash(data)


class Lines:
    """A storlet that reads its input line by line."""

    def __init__(self, logger):
        pass

    def __call__(self, in_files, out_files, params):
        out_files[0].set_metadata({"lines": "0"})
        for line in iter(in_files[0].readline, b""):
            out_files[0].write(line.upper())


def test_a_client_side_storlet_reads_a_stream_and_writes_a_file():
    data = b"a line\n" * 200000
    source = reader([data[i : i + 65536] for i in range(0, len(data), 65536)], len(data))
    metadata, body, length = stream(Lines, [(source, {})], {}, "k", "lines")
    with body:
        assert length == len(data) and body.read() == data.upper()
    assert metadata == {"Lines": "0"}
    f = InputFile(reader([b"x\ny", b"\n"], 4), {})
    assert f.readlines() == [b"x\n", b"y\n"]
