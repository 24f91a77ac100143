"""The rotoscope workflow on the embedded cluster: the sample video to
frames, a filter over every frame, back to a video, all inside the cluster.

One short run (one frame in five, scaled to 320 pixels) keeps the test
quick; ranges of eight frames make four segments, and groups of eight
inputs make the assembly of frames take two levels.
"""

import json
import os
import tempfile

import cv2
import numpy as np
import pytest
from support import data_dir

from mlstorlets.client.cli import main
from mlstorlets.client.rotoscope import rotoscope
from mlstorlets.sandbox.video.filters import apply_filter

META = "x-object-meta-"
EVERY, WIDTH, GROUP, RANGE = 5, 320, 8, 8


def _video_path():
    root = os.path.join(data_dir(), "video")
    return os.path.join(root, sorted(os.listdir(root))[0])


def _source_frames():
    """The sample video's frames as the test expects them: one in EVERY,
    scaled, through the colormap filter."""
    capture = cv2.VideoCapture(_video_path())
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames, i = [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if i % EVERY == 0:
            height = round(frame.shape[0] * WIDTH / frame.shape[1] / 2) * 2
            small = cv2.resize(frame, (WIDTH, height), interpolation=cv2.INTER_AREA)
            frames.append(apply_filter(small, "colormap", {}, "test").astype(np.float32))
        i += 1
    return frames, fps


def _decode(data):
    with tempfile.NamedTemporaryFile(suffix=".avi") as f:
        f.write(data)
        f.flush()
        capture = cv2.VideoCapture(f.name)
        fps, count = capture.get(cv2.CAP_PROP_FPS), capture.get(cv2.CAP_PROP_FRAME_COUNT)
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame.astype(np.float32))
    return fps, count, frames


@pytest.fixture(scope="module")
def video(conn):
    container = "test-rotoscope"
    conn.put_container(container)
    with open(_video_path(), "rb") as f:
        conn.put_object(container, "in/clip.avi", f.read(), content_type="video/x-msvideo")
    yield container
    for entry in conn.get_container(container, full_listing=True)[1]:
        conn.delete_object(container, entry["name"])
    conn.delete_container(container)


@pytest.fixture
def cli_env(cluster, monkeypatch):
    for key, value in cluster.env().items():
        monkeypatch.setenv(key, value)


def _check_video(body, expected, source_fps):
    fps, count, frames = _decode(body)
    assert fps == pytest.approx(source_fps / EVERY)
    assert count == len(frames) == len(expected)
    # In order: every output frame is closest to its own source frame.
    for k, frame in enumerate(frames):
        errors = [np.abs(frame - e).mean() for e in expected]
        assert int(np.argmin(errors)) == k, (k, errors[k], min(errors))
        assert errors[k] < 4


def test_video_to_filtered_segments_to_video_in_the_cluster(conn, video):
    summary = rotoscope(
        conn,
        "swift://%s/in/clip.avi" % video,
        "swift://%s/out/" % video,
        "colormap",
        every=EVERY,
        width=WIDTH,
        range_size=RANGE,
        group_size=GROUP,
        progress=False,
    )
    assert summary.ok, summary.format()
    assert summary.client_bytes == 0
    expected, source_fps = _source_frames()
    assert summary.frames == len(expected) == 25
    # One request per range of 8 frames, each on the object server holding
    # the video (decode, filter, encode), then one assembly.
    assert summary.stages[0].storlet == "segments"
    assert len(summary.stages[0].done) == 4
    assert [len(s.done) for s in summary.stages[1:2]] == [1]

    headers, body = conn.get_object(video, "out/clip-colormap.avi")
    _check_video(body, expected, source_fps)
    # No frame object: four segments and the video.
    work = [e["name"] for e in conn.get_container(video, prefix="out/clip-colormap.work/")[1]]
    assert not [n for n in work if n.endswith(".jpg")]
    assert len([n for n in work if "/segments-" in n]) == 4


def test_segments_resume_one_by_one(conn, video):
    work = [e["name"] for e in conn.get_container(video, prefix="out/clip-colormap.work/")[1]]
    (lost,) = [n for n in work if "/segments-" in n and n.endswith("000002.avi")]
    for name in [lost] + [n for n in work if "/video-" in n] + ["out/clip-colormap.avi"]:
        conn.delete_object(video, name)
    summary = rotoscope(
        conn,
        "swift://%s/in/clip.avi" % video,
        "swift://%s/out/" % video,
        "colormap",
        every=EVERY,
        width=WIDTH,
        range_size=RANGE,
        group_size=GROUP,
        progress=False,
    )
    assert summary.ok, summary.format()
    segments = summary.stages[0]
    assert segments.done == ["clip.avi frames 16-23"]
    assert len(segments.skipped) == 3
    expected, source_fps = _source_frames()
    _check_video(conn.get_object(video, "out/clip-colormap.avi")[1], expected, source_fps)


@pytest.mark.parametrize("where", ["beside the work", "in another container"])
def test_frames_to_keeps_the_filtered_frames_as_objects(conn, video, where):
    look = "look/" if where == "beside the work" else None
    if look is None:
        conn.put_container(video + "-look")
    frames_to = "swift://%s/look/" % video if look else "swift://%s-look/f/" % video
    summary = rotoscope(
        conn,
        "swift://%s/in/clip.avi" % video,
        "swift://%s/framed-%s/" % (video, "a" if look else "b"),
        "colormap",
        every=EVERY,
        width=WIDTH,
        group_size=GROUP,
        range_size=RANGE,
        frames_to=frames_to,
        progress=False,
    )
    assert summary.ok, summary.format()
    expected, source_fps = _source_frames()
    if look:
        # One request per range writes its filtered frames and its segment.
        assert summary.stages[0].storlet == "segments"
        assert len(summary.stages[0].done) == 4
    else:
        # Frames extracted in one request per range, filtered many per
        # call, then assembled in two levels: 4 segments, then one video.
        assert len(summary.stages[0].done) == 4
        assert len(summary.stages[1].done) == 25
        assert [len(s.done) for s in summary.stages[2:4]] == [4, 1]
    name = "framed-%s/clip-colormap.avi" % ("a" if look else "b")
    _check_video(conn.get_object(video, name)[1], expected, source_fps)
    # The filtered frames, with their index, time and rate.
    container, prefix = (video, look) if look else (video + "-look", "f/")
    names = sorted(e["name"] for e in conn.get_container(container, prefix=prefix)[1])
    assert len(names) == 25
    meta = conn.head_object(container, names[7])
    assert meta["content-type"] == "image/jpeg"
    assert meta[META + "frame-index"] == "7"
    assert meta[META + "filter"] == "colormap"
    assert float(meta[META + "frame-time"]) == pytest.approx(7 * EVERY / source_fps)
    assert float(meta[META + "frame-fps"]) == pytest.approx(source_fps / EVERY)
    # The frames are the video's.
    _, body = conn.get_object(container, names[7])
    frame = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).astype(np.float32)
    assert np.abs(frame - expected[7]).mean() < 4
    if not look:
        for entry in conn.get_container(container, full_listing=True)[1]:
            conn.delete_object(container, entry["name"])
        conn.delete_container(container)


def test_rotoscope_again_does_nothing_twice(conn, video, capsys, cli_env):
    before = {e["name"]: e["last_modified"] for e in conn.get_container(video, prefix="out/")[1]}
    assert (
        main(
            [
                "rotoscope",
                "swift://%s/in/clip.avi" % video,
                "swift://%s/out/" % video,
                "--filter",
                "colormap",
                "--every",
                str(EVERY),
                "--width",
                str(WIDTH),
                "--range-size",
                str(RANGE),
                "--group-size",
                str(GROUP),
                "--json",
            ]
        )
        == 0
    )
    found = json.loads(capsys.readouterr().out)
    assert found["ok"] and found["client_bytes"] == 0
    assert all(not stage["done"] for stage in found["stages"]), found
    after = {e["name"]: e["last_modified"] for e in conn.get_container(video, prefix="out/")[1]}
    assert after == before


def test_a_bad_filter_parameter_is_refused_before_any_work(conn, video, capsys, cli_env):
    assert (
        main(
            [
                "rotoscope",
                "swift://%s/in/clip.avi" % video,
                "swift://%s/bad/" % video,
                "--filter",
                "colormap",
                "-p",
                "nosuch=1",
            ]
        )
        == 2
    )
    assert "nosuch" in capsys.readouterr().err
    assert not conn.get_container(video, prefix="bad/")[1]


def test_not_a_video_names_the_object(conn, video):
    conn.put_object(video, "in/notes.avi", b"RIFF....AVI not really")
    summary_error = None
    try:
        rotoscope(
            conn,
            "swift://%s/in/notes.avi" % video,
            "swift://%s/notes/" % video,
            "cartoon",
            progress=False,
        )
    except Exception as err:
        summary_error = err
    assert summary_error is not None and "in/notes.avi" in str(summary_error)
    assert not conn.get_container(video, prefix="notes/")[1]


def test_temporal_segments_flicker_less_than_frames_filtered_alone(conn, video):
    from mlstorlets.sandbox.video.temporal import flicker

    made = {}
    for temporal in (0.0, 0.7):
        dest = "swift://%s/steady-%g/" % (video, temporal)
        summary = rotoscope(
            conn,
            "swift://%s/in/clip.avi" % video,
            dest,
            "cartoon",
            temporal=temporal,
            every=EVERY,
            width=WIDTH,
            group_size=GROUP,
            progress=False,
        )
        assert summary.ok and summary.client_bytes == 0, summary.format()
        _, body = conn.get_object(video, "steady-%g/clip-cartoon.avi" % temporal)
        made[temporal] = _decode(body)[2]
    alone, carried = made[0.0], made[0.7]
    assert len(alone) == len(carried) == 25
    assert flicker(carried) < 0.95 * flicker(alone), (flicker(carried), flicker(alone))
    # In segments, no filtered frame object is stored.
    work = [e["name"] for e in conn.get_container(video, prefix="steady-0.7/")[1]]
    assert not [n for n in work if "/cartoon-" in n]
