"""The rotoscope's plain functions: frames out of a video, filters, Motion
JPEG AVI written and read, assembly, and the client's planning."""

import io
import os
import tarfile

import cv2
import numpy as np
import pytest
from support import data_dir

from mlstorlets.client.rotoscope import default_outputs, groups, plan_ranges
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.video import avi, filters, frames, tasks


class Input:
    """A storlet input file over bytes."""

    def __init__(self, data, metadata=None):
        self._data = io.BytesIO(data)
        self._metadata = metadata or {}

    def read(self, size=-1):
        return self._data.read(size)

    def get_metadata(self):
        return self._metadata

    def close(self):
        pass


def _video():
    root = os.path.join(data_dir(), "video")
    return os.path.join(root, sorted(os.listdir(root))[0])


def _jpeg(value, size=(64, 48)):
    image = np.full((size[1], size[0], 3), value, np.uint8)
    cv2.putText(image, str(value), (2, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
    return cv2.imencode(".jpg", image)[1].tobytes()


def test_frames_of_a_range_carry_index_time_and_rate():
    tar, info = frames.extract_range(_video(), "v.avi", start=3, count=4, every=2, width=160)
    members = tarfile.open(fileobj=io.BytesIO(tar)).getmembers()
    assert [m.name for m in members] == ["000003.jpg", "000004.jpg", "000005.jpg", "000006.jpg"]
    meta = members[1].pax_headers
    assert meta["SCHILY.xattr.user.meta.Frame-Index"] == "4"
    assert float(meta["SCHILY.xattr.user.meta.Frame-Time"]) == pytest.approx(8 / 25)
    assert meta["SCHILY.xattr.user.meta.Frame-Fps"] == "12.5"
    assert info == {"frames": 4, "fps": 12.5, "width": 160, "height": 90}


def test_the_last_range_runs_to_the_end():
    count = frames.probe(_video(), "v")["frames"]
    _, info = frames.extract_range(_video(), "v", start=count - 5, count=0, width=64)
    assert info["frames"] == 5


def test_a_file_that_is_no_video_is_refused_by_name(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"RIFF\0\0\0\0AVI garbage" * 10)
    with pytest.raises(ObjectError, match="notes.avi"):
        frames.probe(str(path), "notes.avi")
    with pytest.raises(ObjectError, match="empty"):
        tasks.video_frames([Input(b"")], {"source": "empty.avi"})


@pytest.mark.parametrize("name", sorted(filters.FILTERS))
def test_every_filter_keeps_the_frame_size(name):
    image = cv2.imdecode(np.frombuffer(_jpeg(90, (96, 64)), np.uint8), cv2.IMREAD_COLOR)
    out = filters.apply_filter(image, name, {}, "f")
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)


def test_a_bad_filter_or_parameter_names_the_object():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ObjectError, match="frame.jpg.*unknown filter"):
        filters.apply_filter(image, "nosuch", {}, "frame.jpg")
    with pytest.raises(ObjectError, match="sigma_s"):
        filters.apply_filter(image, "pencil", {"sigma_s": "-1"}, "frame.jpg")
    with pytest.raises(ObjectError, match="colour map"):
        filters.apply_filter(image, "colormap", {"map": "nosuch"}, "frame.jpg")


def test_filter_frame_outputs_a_jpeg_of_the_same_size():
    meta, body = tasks.filter_frame([Input(_jpeg(40))], {"filter": "cartoon", "source": "f"})
    assert meta == {"Filter": "cartoon"}
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
    with pytest.raises(ObjectError, match="not a JPEG or PNG"):
        tasks.filter_frame([Input(b"GIF89a....")], {"filter": "cartoon", "source": "f"})


def test_an_avi_round_trips_through_opencv(tmp_path):
    jpegs = [_jpeg(10 * i) for i in range(7)]
    path = tmp_path / "v.avi"
    with open(path, "wb") as f:
        avi.write_avi(f, jpegs, 64, 48, 29.97)
    capture = cv2.VideoCapture(str(path))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(29.97, abs=1e-3)
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 7
    info, read = avi.read_avi(path.read_bytes(), "v")
    assert [bytes(f) for f in read] == jpegs
    assert (info["width"], info["height"]) == (64, 48)


def test_assembly_copies_frames_and_joins_videos_in_order():
    jpegs = [_jpeg(10 * i) for i in range(6)]
    meta = {"Frame-Fps": "5"}
    _, first = tasks.assemble([Input(j, meta) for j in jpegs[:4]], {})
    _, second = tasks.assemble([Input(j, meta) for j in jpegs[4:]], {})
    result, joined = tasks.assemble([Input(first), Input(second)], {})
    assert result == {"Video-Frames": 6, "Video-Fps": "5"}
    info, read = avi.read_avi(joined, "v")
    assert [bytes(f) for f in read] == jpegs and info["fps"] == 5


def test_assembly_scales_a_frame_of_another_size():
    _, body = tasks.assemble([Input(_jpeg(1)), Input(_jpeg(2, (32, 32)))], {"fps": "10"})
    _, read = avi.read_avi(body, "v")
    assert cv2.imdecode(np.frombuffer(bytes(read[1]), np.uint8), 1).shape == (48, 64, 3)


def test_a_malformed_avi_is_refused():
    _, body = tasks.assemble([Input(_jpeg(1))], {"fps": "10"})
    with pytest.raises(ObjectError, match="bad.avi"):
        avi.read_avi(body[: len(body) // 2], "bad.avi")
    with pytest.raises(ObjectError, match="no frame rate"):
        tasks.assemble([Input(_jpeg(1))], {})


def test_missing_frames_are_asked_for_in_runs():
    assert plan_ranges([0, 1, 2, 3, 4], 2) == [(0, 2), (2, 2), (4, 1)]
    assert plan_ranges([7, 3, 4, 9, 10], 500) == [(3, 2), (7, 1), (9, 2)]
    assert plan_ranges([], 5) == []
    assert groups(list("abcde"), 2) == [["a", "b"], ["c", "d"], ["e"]]


def test_default_outputs_sit_beside_the_video():
    assert default_outputs("swift://v/in/clip.mp4", "swift://out/x/", "cartoon") == (
        "swift://out/x/clip-cartoon.avi",
        "swift://out/x/clip-cartoon.work/",
    )
    assert default_outputs("swift://v/in/clip.mp4", "file:///tmp/r/", "pencil") == (
        "file:///tmp/r/clip-pencil.avi",
        "swift://v/in/clip-pencil.work/",
    )
