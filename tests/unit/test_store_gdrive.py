"""gdrive:// connector, through google-api-python-client, against a local
stand-in for the Drive v3 API (tests/gdrive_server.py), and the command
line's cp and run to and from it."""

import hashlib
import io
import os
import subprocess
import sys
import threading

import pytest
from gdrive_server import FOLDER, DriveServer

from mlstorlets.client.placement import run_anywhere
from mlstorlets.client.stores import NotFound, StoreError, Stores, gdrive
from mlstorlets.client.stores.gdrive import GDriveStore, make_client
from mlstorlets.client.stores.local import FileStore

HERE = os.path.dirname(os.path.abspath(__file__))
TEST_STORLETS = os.path.join(os.path.dirname(HERE), "storlets")


@pytest.fixture
def server(tmp_path):
    with DriveServer(str(tmp_path), page_size=2) as server:
        yield server


def environ(server, credentials=None):
    return {
        "GDRIVE_CREDENTIALS": credentials or server.authorized_user_file(),
        "GDRIVE_API_ENDPOINT": server.api_endpoint,
    }


def connect(server, credentials=None):
    return GDriveStore(make_client(environ(server, credentials), ca_certs=server.ca_certs))


def folders(server, name):
    return [f for f in server.files.values() if f["name"] == name and f["mimeType"] == FOLDER]


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(gdrive, "UPLOAD_CHUNK", 256 << 10)  # Drive's quantum
    monkeypatch.setattr(gdrive, "DOWNLOAD_CHUNK", 100 << 10)


def test_round_trip_folders_pages_and_metadata(server):
    store = connect(server)
    for i in range(5):
        store.put(
            "Photos/in/p%d.jpg" % i, b"x" * i, {"label": "l%d" % i}, {"Content-Type": "image/jpeg"}
        )
    store.put(
        "Photos/in/sub/s.png",
        b"s",
        headers={"Content-Type": "image/png", "Content-Disposition": "inline"},
    )
    store.put("Photos/it's.jpg", b"o")
    entries = store.list("Photos/in/")
    assert [e.name for e in entries] == ["Photos/in/p%d.jpg" % i for i in range(5)] + [
        "Photos/in/sub/s.png"
    ]
    assert entries[3].size == 3 and entries[3].etag == hashlib.md5(b"xxx").hexdigest()
    assert entries[3].metadata == {"Label": "l3"}
    assert entries[5].headers == {"Content-Type": "image/png", "Content-Disposition": "inline"}
    # The listing took several pages (2 entries each).
    assert any("pageToken" in q for m, p, q, _ in server.requests if p == "/drive/v3/files")
    # Each path component is one Drive folder, made once.
    assert len(folders(server, "Photos")) == 1
    in_folder = folders(server, "in")[0]
    assert in_folder["parents"] == [folders(server, "Photos")[0]["id"]]
    assert [e.name for e in store.list("Photos/i")] == [e.name for e in entries] + [
        "Photos/it's.jpg"
    ]
    assert store.get("Photos/in/p2.jpg") == (b"xx", {"Label": "l2"})
    with store.reader("Photos/in/p4.jpg") as body:
        assert body.headers == {"Content-Type": "image/jpeg"}
    assert store.get("Photos/it's.jpg")[0] == b"o"
    assert store.head("Photos/none.jpg") is None
    assert store.head("Nowhere/none.jpg") is None
    store.delete("Photos/in/p0.jpg")
    store.delete("Photos/in/p0.jpg")
    assert not store.exists("Photos/in/p0.jpg")
    assert len(store.list("")) == 6


def test_overwrite_keeps_the_file_and_replaces_its_metadata(server):
    store = connect(server)
    store.put("a.txt", b"one", {"k": "v", "old": "x"}, {"Content-Disposition": "attachment"})
    file_id = server.find("a.txt")["id"]
    entry = store.put("a.txt", b"two", {"k": "w"}, {"Content-Type": "text/plain"})
    assert server.find("a.txt")["id"] == file_id
    assert entry.metadata == {"K": "w"}
    assert store.head("a.txt").headers == {"Content-Type": "text/plain"}
    assert store.get("a.txt") == (b"two", {"K": "w"})
    # Another Drive client made a second file of that name: the newest is
    # read, and a write leaves one.
    server.save({"name": "a.txt", "parents": ["root"]}, b"three")
    assert store.get("a.txt")[0] == b"three"
    store.put("a.txt", b"four")
    assert [f["name"] for f in server.files.values()].count("a.txt") == 1


def test_concurrent_writes_make_each_folder_once(server):
    store = connect(server)
    threads = [
        threading.Thread(target=store.put, args=("New/deep/f%d" % i, b"%d" % i)) for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(folders(server, "New")) == len(folders(server, "deep")) == 1
    assert len(store.list("New/")) == 8


def test_a_service_account_key(server):
    store = connect(server, server.service_account_file())
    store.put("sa.bin", b"data")
    assert store.get("sa.bin")[0] == b"data"
    # Its signed assertion was exchanged for a token at the key's token_uri.
    assert ("POST", "/token") in [(m, p) for m, p, _, _ in server.requests]


def test_big_files_stream_in_chunks(server, small_chunks):
    store = connect(server)
    quantum = 256 << 10
    for size in (3 * quantum, 3 * quantum + 1):  # a last chunk full or not
        data = os.urandom(size)
        body = Paced(data, server)
        store.write("big.bin", body, {"k": "v"}, {"Content-Type": "video/x"})
        # Read as sent: never more than two chunks ahead of Drive.
        assert body.ahead <= 2 * quantum + 1
        puts = [r for r in server.requests if r[0] == "PUT"]
        assert len(puts) == size // quantum + (size % quantum > 0)
        server.requests.clear()
        with store.reader("big.bin") as reader:
            assert reader.headers == {"Content-Type": "video/x"}
            assert reader.read() == data
        ranges = [r[3] for r in server.requests if r[3]]
        assert len(ranges) == -(-size // (100 << 10))
        server.requests.clear()
    assert store.head("big.bin").metadata == {"K": "v"}


class Paced(io.RawIOBase):
    """A body that records how far its reads ran ahead of what the server
    has received."""

    def __init__(self, data, server):
        super().__init__()
        self.data, self.server, self.pos, self.ahead = data, server, 0, 0

    def readable(self):
        return True

    def readinto(self, buf):
        received = max([len(u["data"]) for u in self.server.uploads.values()] or [0])
        n = min(len(buf), len(self.data) - self.pos)
        buf[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        self.ahead = max(self.ahead, self.pos - received)
        return n


def test_errors_name_the_uri(server):
    with pytest.raises(
        StoreError,
        match=r"gdrive://: Google Drive refused "
        r"the credentials",
    ):
        GDriveStore(
            make_client(
                {"GDRIVE_ACCESS_TOKEN": "wrong", "GDRIVE_API_ENDPOINT": server.api_endpoint},
                ca_certs=server.ca_certs,
            )
        ).list("")
    store = connect(server)
    with pytest.raises(NotFound, match="gdrive://missing/: no such folder"):
        store.list("missing/")
    with pytest.raises(NotFound, match="gdrive://missing.jpg: not found"):
        store.get("missing.jpg")
    with pytest.raises(
        StoreError,
        match=r"gdrive://m.jpg: Google Drive "
        r"refused: 400 The property Long exceeds",
    ):
        store.put("m.jpg", b"x", {"long": "v" * 200})
    assert not store.exists("m.jpg")
    with pytest.raises(StoreError, match="no Google Drive credentials"):
        make_client({})
    with pytest.raises(StoreError, match="cannot use the credentials file"):
        make_client({"GDRIVE_CREDENTIALS": "/nonexistent.json"})


def test_a_broken_transfer_leaves_nothing(server, small_chunks, monkeypatch):
    monkeypatch.setattr(gdrive, "RETRIES", 0)
    store = connect(server)
    store.put("a.bin", b"0123456789")
    server.cut_download("a.bin")
    with pytest.raises(StoreError, match="gdrive://a.bin: the download broke off"):
        store.get("a.bin")
    server.cut_upload("b.bin")
    with pytest.raises(StoreError, match="gdrive://b.bin: cannot reach"):
        store.put("b.bin", b"0123456789")
    assert not store.exists("b.bin")
    # A resumable upload's chunk is sent again once on a new connection
    # (httplib2); cut every time, the file is never created.
    data = os.urandom(600 << 10)
    server.cut_upload("c.bin")
    store.put("c.bin", data)
    assert store.get("c.bin")[0] == data
    server.cut_upload("d.bin", times=10)
    with pytest.raises(StoreError, match="gdrive://d.bin: cannot reach"):
        store.put("d.bin", data)
    assert not store.exists("d.bin")
    store.put("b.bin", b"0123456789")
    assert store.get("b.bin")[0] == b"0123456789"
    # Content that no longer matches its MD5 is refused at the end.
    item = server.find("b.bin")
    item["md5"], item["data"] = hashlib.md5(item["data"]).hexdigest(), b"0123456780"
    with pytest.raises(
        StoreError,
        match="gdrive://b.bin: the download "
        r"arrived damaged \(hash mismatch\)",
    ):
        store.get("b.bin")


def test_run_a_storlet_from_gdrive_to_gdrive(server):
    stores = Stores(environ={}, gdrive=make_client(environ(server), ca_certs=server.ca_certs))
    source = stores.open("gdrive://")[0]
    for i in range(3):
        source.put("Camera/p%d.jpg" % i, b"p" * (i + 1), {"label": "l%d" % i})
    summary = run_anywhere(
        "probe.py",
        "gdrive://Camera/",
        "gdrive://Out/",
        {"k": "v"},
        stores=stores,
        storlets_dir=TEST_STORLETS,
    )
    assert summary.placement == "client" and summary.ok
    assert len(summary.done) == 3
    body, metadata = source.get("Out/p1.jpg")
    assert body == b"pp" and metadata["Label"] == "l1"
    assert metadata["Probe-Params"] == "k=v,source=gdrive://Camera/p1.jpg"
    again = run_anywhere(
        "probe.py",
        "gdrive://Camera/",
        "gdrive://Out/",
        {"k": "v"},
        stores=stores,
        storlets_dir=TEST_STORLETS,
    )
    assert len(again.skipped) == 3


def test_the_command_line_copies_to_gdrive_and_back(server, tmp_path):
    files = FileStore(str(tmp_path))
    for i in range(4):
        files.put(
            "in/d%d/p%d.jpg" % (i % 2, i),
            b"p" * (i + 1),
            {"label": "l%d" % i},
            {"Content-Type": "image/jpeg"},
        )
    env = dict(
        os.environ,
        HTTPLIB2_CA_CERTS=server.ca_certs,
        **environ(server, server.service_account_file()),
    )

    def cli(*argv):
        return subprocess.run(
            [sys.executable, "-m", "mlstorlets.client.cli"] + list(argv),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    up = cli("cp", "file://%s/in/" % tmp_path, "gdrive://backup/")
    assert up.returncode == 0, up.stderr
    assert "4 done" in up.stdout
    assert server.find("backup/d1/p3.jpg")["data"] == b"pppp"
    assert server.find("backup/d1/p3.jpg")["mimeType"] == "image/jpeg"
    # Local files and Drive both hash with MD5: a second copy skips all.
    again = cli("cp", "file://%s/in/" % tmp_path, "gdrive://backup/")
    assert again.returncode == 0 and "4 skipped" in again.stdout
    down = cli("cp", "gdrive://backup/", "file://%s/restored/" % tmp_path)
    assert down.returncode == 0, down.stderr
    body, metadata = files.get("restored/d1/p3.jpg")
    assert body == b"pppp" and metadata["Label"] == "l3"
    with files.reader("restored/d1/p3.jpg") as reader:
        assert reader.headers["Content-Type"] == "image/jpeg"
    missing = cli("cp", "gdrive://nowhere/", "file://%s/x/" % tmp_path)
    assert missing.returncode != 0
    assert "gdrive://nowhere/: no such folder" in missing.stdout + missing.stderr
