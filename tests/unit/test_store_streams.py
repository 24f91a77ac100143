"""Streaming bodies: readers check what they read, writers consume a
stream in chunks, content headers go with the body, and a client-side
storlet reads its input as a stream."""

import hashlib
import io

import pytest
from dropbox_server import TOKEN, DropboxServer, session_for

from mlstorlets.client.local_storlet import InputFile, stream
from mlstorlets.client.stores import StoreError
from mlstorlets.client.stores import dropbox as dropbox_store
from mlstorlets.client.stores.base import Counted, Entry, FullReads, Reader, content_headers
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
