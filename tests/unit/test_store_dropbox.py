"""dropbox:// connector, through the official SDK, against a local stand-in
for the Dropbox API (tests/dropbox_server.py)."""

import pytest
from dropbox_server import TOKEN, DropboxServer, dropbox_hash, session_for

from mlstorlets.client.stores import NotFound, StoreError
from mlstorlets.client.stores import dropbox as dropbox_store
from mlstorlets.client.stores.dropbox import DropboxStore, content_hash, make_client


@pytest.fixture
def server():
    with DropboxServer(page_size=2) as server:
        yield server


def connect(server, token=TOKEN):
    return DropboxStore(make_client({"DROPBOX_ACCESS_TOKEN": token}, session=session_for(server)))


def test_content_hash_is_dropboxs():
    data = bytes(range(256)) * 40000  # three 4 MiB blocks
    assert content_hash(data) == dropbox_hash(data)
    assert content_hash(b"") == dropbox_hash(b"")


def test_round_trip_with_listing_pages(server):
    store = connect(server)
    for i in range(5):
        store.put("Photos/in/p%d.jpg" % i, b"x" * i, {"label": "l%d" % i})
    store.put("Photos/other.jpg", b"o")
    entries = store.list("Photos/in/")
    assert [e.name for e in entries] == ["Photos/in/p%d.jpg" % i for i in range(5)]
    assert entries[3].size == 3 and entries[3].etag == dropbox_hash(b"xxx")
    # Several pages (2 entries each) were listed; sidecars are not data.
    assert ("api.dropboxapi.com", "files/list_folder/continue") in server.requests
    assert all(not e.name.count(".mlstorlets") for e in store.list(""))
    assert store.get("Photos/in/p2.jpg") == (b"xx", {"Label": "l2"})
    entry = store.head("photos/IN/p4.jpg")
    assert entry.metadata == {"Label": "l4"} and entry.size == 4
    assert store.head("Photos/none.jpg") is None
    store.delete("Photos/in/p0.jpg")
    store.delete("Photos/in/p0.jpg")
    assert not store.exists("Photos/in/p0.jpg")
    assert "/photos/in/.mlstorlets/p0.jpg.json" not in server.files


def test_big_files_go_through_an_upload_session(server, monkeypatch):
    monkeypatch.setattr(dropbox_store, "UPLOAD_CHUNK", 1000)
    store = connect(server)
    data = bytes(range(256)) * 10
    store.put("big.bin", data, {"k": "v"})
    routes = [route for _, route in server.requests]
    assert routes.count("files/upload_session/append_v2") == 1
    assert "files/upload_session/finish" in routes
    assert store.get("big.bin") == (data, {"K": "v"})


def test_a_stale_sidecar_is_ignored(server):
    store = connect(server)
    store.put("a.txt", b"one", {"k": "v"})
    server.store("/a.txt", b"replaced by another Dropbox client")
    assert store.head("a.txt").metadata == {}


def test_errors_name_the_uri(server):
    with pytest.raises(
        StoreError,
        match=r"dropbox://: Dropbox refused the "
        r"credentials \(invalid_access_token\)",
    ):
        connect(server, "wrong").list("")
    store = connect(server)
    with pytest.raises(NotFound, match="dropbox://missing/: no such folder"):
        store.list("missing/")
    with pytest.raises(NotFound, match="dropbox://missing.jpg: not found"):
        store.get("missing.jpg")
    with pytest.raises(StoreError, match="no Dropbox credentials"):
        make_client({})


def test_a_broken_transfer_leaves_nothing(server):
    store = connect(server)
    store.put("a.bin", b"0123456789")
    server.cut_download("/a.bin")
    with pytest.raises(StoreError, match="dropbox://a.bin: the download broke off"):
        store.get("a.bin")
    server.cut_upload("/b.bin")
    with pytest.raises(StoreError, match="dropbox://b.bin: cannot reach"):
        store.put("b.bin", b"0123456789")
    assert not store.exists("b.bin")
    store.put("b.bin", b"0123456789")
    assert store.get("b.bin")[0] == b"0123456789"
