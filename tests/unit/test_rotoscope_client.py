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
    # No frame object: one filtered segment per range, then the video.
    work = folder / "clip-colormap.work"
    assert not [d for d in os.listdir(work) if d.startswith("frames-")]
    (segments,) = [d for d in os.listdir(work) if d.startswith("segments-")]
    assert [n for n in os.listdir(work / segments) if n.endswith(".avi")] == ["000000.avi"]
    assert found["stages"][0]["storlet"] == "segments"
    # The segments read the video here: the bytes that went through the
    # client say so.
    assert found["stages"][0]["client_bytes"] >= os.path.getsize(folder / "clip.avi")

    # A second run finds every stage done.
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["ok"] and all(not s["done"] for s in again["stages"]), again


def test_frames_to_keeps_every_filtered_frame_as_an_object(clip, tmp_path, capsys):
    folder, expected = clip
    argv = [
        "rotoscope",
        "file://%s/clip.avi" % folder,
        "file://%s/out/" % tmp_path,
        "--filter",
        "colormap",
        "--every",
        str(EVERY),
        "--width",
        str(WIDTH),
        "--range-size",
        "7",
        "--frames-to",
        "file://%s/look/" % tmp_path,
        "--json",
    ]
    assert main(argv) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["ok"] and found["frames"] == expected
    names = sorted(n for n in os.listdir(tmp_path / "look") if n.endswith(".jpg"))
    assert len(names) == expected
    # With their metadata, as the cluster writes them.
    store, uri = Stores(environ={}).open("file://%s/look/000007.jpg" % tmp_path)
    meta = store.head(uri.key).metadata
    assert meta["Frame-Index"] == "7" and meta["Filter"] == "colormap"
    frames = _frames((tmp_path / "out" / "clip-colormap.avi").read_bytes())
    assert len(frames) == expected


def test_frames_to_and_temporal_are_one_or_the_other(clip, tmp_path, capsys):
    folder, _ = clip
    argv = ["rotoscope", "file://%s/clip.avi" % folder, "file://%s/o/" % tmp_path]
    argv += ["--filter", "cartoon", "--temporal", "0.5", "--frames-to", "file://%s/f/" % tmp_path]
    assert main(argv) == 2
    assert "one of the two" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


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
    # Segments made straight from the video: no frame object at all.
    folders = sorted(os.listdir(tmp_path / "work"))
    assert [f for f in folders if f.startswith("segments-")]
    assert not [f for f in folders if f.startswith(("frames-", "cartoon-"))]


def test_a_range_not_written_whole_leaves_no_segment(clip, tmp_path, monkeypatch):
    from mlstorlets.client.errors import StorletFailed
    from mlstorlets.client.runners.client import ClientRunner

    folder, _ = clip
    extract = ClientRunner.extract

    def lost_a_frame(self, *args, **kwargs):
        extract(self, *args, **kwargs)
        raise StorletFailed(args[1], "extraction failed: a frame was not written")

    monkeypatch.setattr(ClientRunner, "extract", lost_a_frame)
    summary = rotoscope(
        Stores(environ={}),
        "file://%s/clip.avi" % folder,
        "file://%s/out/" % tmp_path,
        "colormap",
        every=EVERY,
        width=WIDTH,
        frames_to="file://%s/look/" % tmp_path,
        work="file://%s/work/" % tmp_path,
        progress=False,
    )
    assert not summary.ok
    assert "a frame was not written" in summary.stages[0].failed[0][1]
    # Its segment was removed: the next run makes the range again.
    segments = [d for d in os.listdir(tmp_path / "work") if d.startswith("segments-")]
    assert segments and not [
        n for n in os.listdir(tmp_path / "work" / segments[0]) if n.endswith(".avi")
    ]
    monkeypatch.setattr(ClientRunner, "extract", extract)
    again = rotoscope(
        Stores(environ={}),
        "file://%s/clip.avi" % folder,
        "file://%s/out/" % tmp_path,
        "colormap",
        every=EVERY,
        width=WIDTH,
        frames_to="file://%s/look/" % tmp_path,
        work="file://%s/work/" % tmp_path,
        progress=False,
    )
    assert again.ok and len(again.stages[0].done) == 1
