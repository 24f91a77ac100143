"""Rotoscope of a video outside the cluster: the same storlets, stage for
stage, run on the client (tests/functional/test_rotoscope.py runs them in
the cluster and checks the pictures; here the same frames must come out)."""

import json
import os
import tempfile

import cv2
import pytest

from mlstorlets.client.cli import main
from mlstorlets.client.rotoscope import rotoscope
from mlstorlets.client.stores import Stores

EVERY, WIDTH, GROUP = 5, 160, 8


@pytest.fixture(scope="module")
def clip(faces_data, tmp_path_factory):
    root = faces_data / "video"
    source = root / sorted(os.listdir(root))[0]
    folder = tmp_path_factory.mktemp("video")
    (folder / "clip.avi").write_bytes(source.read_bytes())
    capture = cv2.VideoCapture(str(source))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return folder, -(-count // EVERY)


def _frames(data):
    with tempfile.NamedTemporaryFile(suffix=".avi") as f:
        f.write(data)
        f.flush()
        capture = cv2.VideoCapture(f.name)
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                return frames
            frames.append(frame)


def test_a_local_video_is_rotoscoped_on_the_client(clip, capsys):
    folder, expected = clip
    argv = [
        "rotoscope",
        "file://%s/clip.avi" % folder,
        "file://%s/out/" % folder,
        "--filter",
        "colormap",
        "--every",
        str(EVERY),
        "--width",
        str(WIDTH),
        "--group-size",
        str(GROUP),
        "--json",
    ]
    assert main(argv) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["ok"] and found["frames"] == expected
    assert all(s["placement"] == "client" for s in found["stages"][:-1])
    frames = _frames((folder / "out" / "clip-colormap.avi").read_bytes())
    assert len(frames) == expected and frames[0].shape[1] == WIDTH
    # Frame objects beside the video, with their metadata, as the cluster
    # writes them; hidden from nothing: they are the user's work objects.
    work = folder / "clip-colormap.work"
    (extracted,) = [d for d in os.listdir(work) if d.startswith("frames-")]
    assert len([n for n in os.listdir(work / extracted) if n.endswith(".jpg")]) == expected
    stores = Stores(environ={})
    store, uri = stores.open("file://%s/%s/000007.jpg" % (work, extracted))
    meta = store.head(uri.key).metadata
    assert meta["Frame-Index"] == "7" and float(meta["Frame-Fps"]) > 0

    # A second run finds every stage done.
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["ok"] and all(not s["done"] for s in again["stages"]), again


def test_not_a_video_names_the_object_and_writes_nothing(tmp_path):
    (tmp_path / "notes.avi").write_bytes(b"RIFF....AVI not really")
    with pytest.raises(Exception, match="notes.avi") as err:
        rotoscope(
            None,
            "file://%s/notes.avi" % tmp_path,
            "file://%s/out/" % tmp_path,
            "cartoon",
            progress=False,
            stores=Stores(environ={}),
        )
    assert "refused" in str(err.value) or "failed" in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["notes.avi"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--filter", "cartonn"], "unknown filter 'cartonn'"),
        (["--filter", "cartoon", "-p", "passes=abc"], "passes must be an integer"),
        (["--filter", "colormap", "-p", "map=nosuch"], "unknown colour map 'nosuch'"),
    ],
)
def test_a_bad_filter_is_refused_before_any_work(clip, tmp_path, capsys, extra, message):
    folder, _ = clip
    argv = ["rotoscope", "file://%s/clip.avi" % folder, "file://%s/bad/" % tmp_path]
    assert main(argv + extra + ["--work", "file://%s/work/" % tmp_path]) == 2
    assert message in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_temporal_filters_in_segments_without_frame_objects(clip, tmp_path):
    folder, expected = clip
    summary = rotoscope(
        Stores(environ={}),
        "file://%s/clip.avi" % folder,
        "file://%s/steady/" % tmp_path,
        "cartoon",
        temporal=0.7,
        every=EVERY,
        width=WIDTH,
        group_size=GROUP,
        work="file://%s/work/" % tmp_path,
        progress=False,
    )
    assert summary.ok, summary.format()
    frames = _frames((tmp_path / "steady" / "clip-cartoon.avi").read_bytes())
    assert len(frames) == expected == summary.frames
    # Frames extracted, segments made; no filtered frame stored.
    folders = sorted(os.listdir(tmp_path / "work"))
    assert [f for f in folders if f.startswith("frames-")] and not [
        f for f in folders if f.startswith("cartoon-")
    ]
