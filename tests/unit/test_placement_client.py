"""Storlets and copies on the client, between stores outside the cluster:
file:// and dropbox:// (a local stand-in for the Dropbox API)."""

import os

import pytest
from dropbox_server import TOKEN, DropboxServer, dropbox_hash, session_for

from mlstorlets.client.placement import copy, run_anywhere
from mlstorlets.client.stores import NotFound, Stores
from mlstorlets.client.stores.dropbox import make_client
from mlstorlets.client.stores.local import FileStore

HERE = os.path.dirname(os.path.abspath(__file__))
TEST_STORLETS = os.path.join(os.path.dirname(HERE), "storlets")


@pytest.fixture
def server():
    with DropboxServer(page_size=4) as server:
        yield server


@pytest.fixture
def stores(server):
    # No Swift, S3 or Dropbox variables: nothing is reached but these.
    return Stores(
        environ={},
        dropbox=make_client({"DROPBOX_ACCESS_TOKEN": TOKEN}, session=session_for(server)),
    )


@pytest.fixture
def photos(tmp_path):
    files = FileStore(str(tmp_path))
    for i in range(6):
        files.put("in/d%d/p%d.jpg" % (i % 2, i), b"p" * (i + 1), {"label": "l%d" % i})
    return tmp_path


def test_file_to_file_runs_the_storlet_on_the_client(photos, stores):
    src, dest = "file://%s/in/" % photos, "file://%s/out/" % photos
    summary = run_anywhere(
        "probe.py", src, dest, {"k": "v"}, stores=stores, storlets_dir=TEST_STORLETS
    )
    assert summary.placement == "client" and summary.ok
    assert len(summary.done) == 6
    data = sum(range(1, 7))
    assert summary.source_bytes == data
    assert summary.client_bytes == 2 * data  # read once, written once
    body, metadata = FileStore().get("%s/out/d1/p3.jpg" % str(photos)[1:])
    assert body == b"pppp" and metadata["Label"] == "l3"
    assert metadata["Probe-Params"] == "k=v,source=file://%s/in/d1/p3.jpg" % photos
    assert "on the client" in summary.format()

    again = run_anywhere(
        "probe.py", src, dest, {"k": "v"}, stores=stores, storlets_dir=TEST_STORLETS
    )
    assert len(again.skipped) == 6 and again.client_bytes == 0
    FileStore(str(photos)).put("in/d0/p0.jpg", b"changed")
    again = run_anywhere(
        "probe.py", src, dest, {"k": "v"}, stores=stores, storlets_dir=TEST_STORLETS
    )
    assert again.done == ["file://%s/in/d0/p0.jpg" % photos]
    # Other parameters make other outputs: nothing is kept.
    other = run_anywhere(
        "probe.py", src, dest, {"k": "w"}, stores=stores, storlets_dir=TEST_STORLETS
    )
    assert len(other.done) == 6


def test_failures_are_per_object_and_write_nothing(photos, stores):
    summary = run_anywhere(
        "probe.py",
        "file://%s/in/" % photos,
        "file://%s/bad/" % photos,
        {"action": "fail"},
        stores=stores,
        storlets_dir=TEST_STORLETS,
    )
    assert len(summary.failed) == 6 and not summary.done
    name, reason = summary.failed[0]
    assert name == "file://%s/in/d0/p0.jpg" % photos
    assert reason == "storlet probe.py failed: RuntimeError: probe asked to fail"
    assert not os.path.exists(photos / "bad")


def test_dropbox_to_file_resumes_after_a_broken_download(server, stores, tmp_path):
    source = stores.open("dropbox://")[0]
    for i in range(5):
        source.put("Camera/p%d.jpg" % i, b"%d" % i * 100)
    server.cut_download("/Camera/p2.jpg")
    dest = "file://%s/faces/" % tmp_path
    summary = run_anywhere(
        "probe.py",
        "dropbox://Camera/",
        dest,
        stores=stores,
        storlets_dir=TEST_STORLETS,
        concurrency=2,
    )
    assert [name for name, _ in summary.failed] == ["dropbox://Camera/p2.jpg"]
    assert "the download broke off" in summary.failed[0][1]
    assert len(summary.done) == 4
    # the outputs and nothing else: their metadata is in their attributes
    assert sorted(os.listdir(tmp_path / "faces")) == [
        "p0.jpg",
        "p1.jpg",
        "p3.jpg",
        "p4.jpg",
    ]

    again = run_anywhere(
        "probe.py", "dropbox://Camera/", dest, stores=stores, storlets_dir=TEST_STORLETS
    )
    assert again.done == ["dropbox://Camera/p2.jpg"] and again.ok
    assert len(again.skipped) == 4
    assert (tmp_path / "faces" / "p2.jpg").read_bytes() == b"2" * 100


def test_copy_file_to_dropbox_and_back(photos, stores, server):
    up = copy("file://%s/in/" % photos, "dropbox://backup/", stores=stores)
    assert up.placement == "client" and len(up.done) == 6
    assert server.files["/backup/d1/p5.jpg"][1] == b"p" * 6
    # Dropbox and local files hash differently: the outputs' Source-Etag
    # says they are up to date.
    assert len(copy("file://%s/in/" % photos, "dropbox://backup/", stores=stores).skipped) == 6

    down = copy("dropbox://backup/", "file://%s/restored/" % photos, stores=stores)
    assert down.ok and len(down.done) == 6
    restored = FileStore(str(photos))
    assert restored.get("restored/d0/p2.jpg") == (
        b"ppp",
        {"Label": "l2", "Source-Etag": dropbox_hash(b"ppp")},
    )
    # The same content under local MD5s: skipped without any Source-Etag.
    assert (
        len(copy("file://%s/restored/" % photos, "file://%s/in/" % photos, stores=stores).skipped)
        == 6
    )


def test_copy_resumes_after_a_broken_upload(photos, stores, server):
    server.cut_upload("/backup/d0/p2.jpg")
    first = copy("file://%s/in/" % photos, "dropbox://backup/", stores=stores)
    assert [n for n, _ in first.failed] == ["file://%s/in/d0/p2.jpg" % photos]
    assert "cannot reach Dropbox" in first.failed[0][1]
    assert "/backup/d0/p2.jpg" not in server.files
    second = copy("file://%s/in/" % photos, "dropbox://backup/", stores=stores)
    assert second.done == ["file://%s/in/d0/p2.jpg" % photos]
    assert len(second.skipped) == 5


def test_a_missing_source_is_named(stores, tmp_path):
    with pytest.raises(NotFound, match="file://%s/none.jpg: no such object" % tmp_path):
        copy("file://%s/none.jpg" % tmp_path, "file://%s/x/" % tmp_path, stores=stores)
    with pytest.raises(NotFound, match="dropbox://nowhere/: no such folder"):
        run_anywhere(
            "probe.py",
            "dropbox://nowhere/",
            "file://%s/x/" % tmp_path,
            stores=stores,
            storlets_dir=TEST_STORLETS,
        )


def test_a_dry_run_names_each_output(photos, stores):
    src, dest = "file://%s/in/" % photos, "file://%s/out/" % photos
    summary = run_anywhere(
        "probe.py", src, dest, stores=stores, storlets_dir=TEST_STORLETS, dry_run=True
    )
    source = "file://%s/in/d1/p3.jpg" % photos
    assert summary.outputs[source] == "file://%s/out/d1/p3.jpg" % photos
    assert "  would do %s -> file://%s/out/d1/p3.jpg" % (source, photos) in summary.format()
    assert summary.as_dict()["outputs"][source] == summary.outputs[source]
    assert not (photos / "out").exists()


def test_outputs_are_named_and_typed_as_the_storlet_declares(tmp_path, stores, faces_data):
    from mlstorlets.client.deploy import artifacts, default_source_dir

    photo = faces_data / "train" / "obama14.jpeg"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpeg").write_bytes(photo.read_bytes())
    summary = run_anywhere(
        "extract_face.py", "file://%s/in/" % tmp_path, "file://%s/out/" % tmp_path, stores=stores
    )
    assert summary.ok, summary.format()
    assert summary.outputs == {"file://%s/in/a.jpeg" % tmp_path: "file://%s/out/a.png" % tmp_path}
    store, uri = stores.open("file://%s/out/a.png" % tmp_path)
    assert store.head(uri.key).headers["Content-Type"] == "image/png"
    # What deploy records, for the same naming in the cluster.
    (storlet,) = [a for a in artifacts(default_source_dir(), False) if a.name == "extract_face.py"]
    assert storlet.headers["X-Object-Meta-Mlstorlets-Output-Type"] == ".png image/png"
