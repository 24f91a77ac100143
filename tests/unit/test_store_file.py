"""file:// connector: atomic writes, metadata in an extended attribute or,
when asked, a sidecar."""

import errno
import hashlib
import io
import os
import shutil

import pytest

from mlstorlets.client.stores import NotFound, StoreError
from mlstorlets.client.stores.local import FileStore


@pytest.fixture(params=[False, True], ids=["attribute", "sidecar"])
def store(tmp_path, request):
    return FileStore(str(tmp_path), sidecars=request.param)


def test_round_trip(store, tmp_path):
    entry = store.put("d/a.txt", b"hello", {"source-etag": "e1", "x": "y"})
    assert entry.etag == "5d41402abc4b2a76b9719d911017c592"
    assert (tmp_path / "d" / "a.txt").read_bytes() == b"hello"
    assert store.get("d/a.txt") == (b"hello", {"Source-Etag": "e1", "X": "y"})
    store.put("d/e/b.txt", b"")
    (tmp_path / "d" / "plain.txt").write_bytes(b"not put by us")
    names = [e.name for e in store.list("d/")]
    assert names == ["d/a.txt", "d/e/b.txt", "d/plain.txt"]
    assert store.head("d/plain.txt").metadata == {}
    assert store.head("d/plain.txt").etag == hashlib.md5(b"not put by us").hexdigest()
    assert [e.name for e in store.list("d/a")] == ["d/a.txt"]
    store.delete("d/a.txt")
    store.delete("d/a.txt")
    assert not store.exists("d/a.txt")
    assert not os.path.exists(store._sidecar(store.path("d/a.txt")))


def test_a_replaced_file_loses_its_stale_metadata(store, tmp_path):
    store.put("a", b"one", {"source-etag": "e1"})
    path = tmp_path / "a"
    os.unlink(path)
    path.write_bytes(b"two, written by something else")
    entry = store.head("a")
    assert entry.metadata == {} and entry.size == len(path.read_bytes())


def test_a_failed_write_leaves_nothing(store, tmp_path, monkeypatch):
    store.put("a", b"old", {"k": "v"})

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(StoreError, match="file://.*/a: No space left"):
        store.put("a", b"new")
    monkeypatch.undo()
    assert store.get("a") == (b"old", {"K": "v"})
    assert sorted(os.listdir(tmp_path)) == [".mlstorlets", "a"] if store.sidecars else ["a"]


def test_errors_name_the_uri(store, tmp_path):
    with pytest.raises(NotFound, match="file://%s/nope: no such file" % tmp_path):
        store.get("nope")
    with pytest.raises(NotFound, match="no such directory"):
        store.list("nope/")
    (tmp_path / "dir").mkdir()
    with pytest.raises(StoreError, match="a directory"):
        store.get("dir")
    assert store.head("dir") is None


def test_a_killed_writers_temporary_file_is_removed_by_the_next(store, tmp_path):
    import subprocess
    import sys

    from mlstorlets.client.stores import local

    # A writer killed mid-write: its temporary file, named after its pid.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    pid = int(dead.stdout)
    (tmp_path / "d").mkdir()
    left = tmp_path / "d" / ("%s%d-abc" % (local.TEMP_PREFIX, pid))
    left.write_bytes(b"x" * 1000)
    mine = tmp_path / "d" / ("%s%d-def" % (local.TEMP_PREFIX, os.getpid()))
    mine.write_bytes(b"in flight")  # a live writer's: kept
    local._cleaned.discard(str(tmp_path / "d"))
    store.put("d/new.bin", b"fresh")
    assert not left.exists() and mine.exists()
    assert [e.name for e in store.list("d/")] == ["d/new.bin"]


def test_a_destination_holds_the_files_written_and_nothing_else(tmp_path):
    store = FileStore(str(tmp_path))
    store.put("out/a.png", b"png", {"source-etag": "e1"}, headers={"Content-Type": "image/png"})
    store.put("out/b.png", b"png")
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png"]
    entry = store.head("out/a.png")
    assert entry.metadata == {"Source-Etag": "e1"} and entry.headers["Content-Type"] == "image/png"
    assert entry.etag == hashlib.md5(b"png").hexdigest()
    # a copy that drops extended attributes drops the metadata, as a sidecar
    # left behind would
    shutil.copyfile(tmp_path / "out" / "a.png", tmp_path / "out" / "c.png")
    assert store.head("out/c.png").metadata == {}


def test_sidecars_asked_for_and_read_back_by_either(tmp_path):
    sidecars, attributes = FileStore(str(tmp_path), sidecars=True), FileStore(str(tmp_path))
    sidecars.put("a", b"one", {"k": "v"})
    assert os.path.exists(tmp_path / ".mlstorlets" / "a.json")
    assert attributes.get("a") == (b"one", {"K": "v"})
    # rewritten without sidecars: the old sidecar and its folder go
    attributes.put("a", b"two", {"k": "w"})
    assert os.listdir(tmp_path) == ["a"]
    assert sidecars.get("a") == (b"two", {"K": "w"})


def test_a_file_system_without_extended_attributes_warns_once(tmp_path, monkeypatch):
    def refused(*args):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", refused)
    store = FileStore(str(tmp_path))
    with pytest.warns(UserWarning, match="MLSTORLETS_FILE_METADATA=sidecar") as caught:
        store.put("a", b"one", {"k": "v"})
        store.put("b", b"two", {"k": "v"})
    assert len(caught) == 1
    assert store.get("a") == (b"one", {})
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


def test_the_environment_asks_for_sidecars(tmp_path):
    from mlstorlets.client.stores import Stores

    plain = Stores(environ={}).open("file://%s/x" % tmp_path)[0]
    asked = Stores(environ={"MLSTORLETS_FILE_METADATA": "sidecar"}).open("file://%s/x" % tmp_path)[
        0
    ]
    assert (plain.sidecars, asked.sidecars) == (False, True)


def test_metadata_over_an_attributes_size_goes_to_a_sidecar(tmp_path):
    store = FileStore(str(tmp_path))
    big = {"k%02d" % i: "v" * 200 for i in range(19)}  # 4 KB, as Swift allows
    store.put("a", b"one", big)
    assert store.head("a").metadata == {k.title(): v for k, v in big.items()}
    assert os.path.exists(tmp_path / ".mlstorlets" / "a.json")
    # a smaller record again: in the attribute, the sidecar gone
    store.put("a", b"two", {"k": "v"})
    assert os.listdir(tmp_path) == ["a"] and store.get("a") == (b"two", {"K": "v"})


def test_a_files_md5_is_computed_when_asked_for_not_when_listed(tmp_path, monkeypatch):
    from mlstorlets.client.stores import local

    reads = []
    real = local._file_md5
    monkeypatch.setattr(local, "_file_md5", lambda path, st: reads.append(path) or real(path, st))
    store = FileStore(str(tmp_path))
    (tmp_path / "plain").write_bytes(b"not put by us")
    store.put("put", b"put by us")
    entries = store.list("")
    assert store.head("plain").size == 13
    with store.reader("plain") as body:
        assert body.read() == b"not put by us"
    assert reads == []
    assert [e.path for e in entries] == [str(tmp_path / "plain"), str(tmp_path / "put")]
    # A record's MD5 needs no read; a plain file's is computed once.
    assert entries[1].etag == hashlib.md5(b"put by us").hexdigest()
    assert reads == []
    assert entries[0].etag == hashlib.md5(b"not put by us").hexdigest()
    assert entries[0].etag == entries[0].etag and reads == [str(tmp_path / "plain")]
    assert store.head("plain").etag == entries[0].etag
    assert [k for k in local._md5s if k[0] == str(tmp_path / "plain")] == [
        (str(tmp_path / "plain"), *local._stat_key(os.stat(tmp_path / "plain")))
    ]


def test_a_file_replaced_before_its_md5_is_asked_for_is_hashed_as_it_is(tmp_path):
    from mlstorlets.client.stores import local

    store = FileStore(str(tmp_path))
    path = tmp_path / "a"
    path.write_bytes(b"one")
    listed = store.head("a")
    os.unlink(path)
    path.write_bytes(b"two, longer")
    assert listed.etag == hashlib.md5(b"two, longer").hexdigest()
    # Kept under the stat of what was hashed, not the one listed.
    key = (str(path), *local._stat_key(os.stat(path)))
    assert local._md5s[key] == listed.etag
    assert (str(path), *local._stat_key(listed._stat)) not in local._md5s


def test_a_hashed_file_gives_its_md5_once_read_if_it_did_not_change(tmp_path):
    from mlstorlets.client.stores import local

    path = tmp_path / "a"
    path.write_bytes(b"0123456789")
    counted = []
    with open(path, "rb") as f:
        sent = local.HashedFile(f, str(path), counted.append)
        assert sent.read(4) == b"0123"
        # A client that retries reads from the start again: hashed once.
        sent.seek(0)
        assert sent.read() == b"0123456789" and sent.read(1) == b""
        assert sent.end() == hashlib.md5(b"0123456789").hexdigest()
        with pytest.raises(io.UnsupportedOperation):
            sent.seek(3)
    assert sum(counted) == 14  # every byte read, as sent
    assert [k for k in local._md5s if k[0] == str(path)] == []
    sent.keep()
    assert store_md5(tmp_path, "a") == hashlib.md5(b"0123456789").hexdigest()


@pytest.mark.parametrize("change", ["append", "touch", "replace", "remove"])
def test_a_hashed_file_that_changed_while_read_gives_no_md5(tmp_path, change):
    from mlstorlets.client.stores import local

    path = tmp_path / "a"
    path.write_bytes(b"0123456789")
    with open(path, "rb") as f:
        sent = local.HashedFile(f, str(path), lambda n: None)
        sent.read()
        if change == "append":
            with open(path, "ab") as g:
                g.write(b"!")
        elif change == "touch":
            os.utime(path, ns=(0, 1))
        elif change == "replace":
            # Another file of the same size (another inode: f holds its own).
            os.unlink(path)
            path.write_bytes(b"abcdefghij")
        else:
            os.unlink(path)
        with pytest.raises(StoreError, match="changed while being copied") as err:
            sent.end()
    assert err.value.uri == "file://" + str(path)


def test_a_listed_file_knows_its_md5_only_from_its_record_or_a_hash_made(tmp_path):
    store = FileStore(str(tmp_path))
    (tmp_path / "plain").write_bytes(b"plain")
    store.put("put", b"put")
    assert store.head("put").known_etag == hashlib.md5(b"put").hexdigest()
    listed = store.head("plain")
    assert listed.known_etag is None
    with store.reader("plain") as body:
        assert body.file_md5 is None
    assert listed.etag == hashlib.md5(b"plain").hexdigest()  # read now
    assert store.head("plain").known_etag == listed.etag
    with store.reader("plain") as body:
        assert body.file_md5 == listed.etag


def store_md5(root, name):
    """What a later listing of ``root/name`` knows of its MD5 unread."""
    return FileStore(str(root)).head(name).known_etag
