"""Frame-by-frame recognition in the sample video."""

import cv2
import pytest

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces.video import NO_FACE, recognize_video


def _frame_count(path):
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def test_obama_is_named_in_at_least_95_percent_of_face_frames(faces_model, faces_data, tmp_path):
    out = tmp_path / "tagged.avi"
    summary = recognize_video(
        faces_model, str(faces_data / "video" / "obama_mov.avi"), str(out), "videos/obama"
    )
    frames = summary["frames"]
    with_face = sum(count for person, count in frames.items() if person != NO_FACE)
    assert summary["name"] == "obama" and not summary["truncated"]
    assert sum(frames.values()) == 122
    assert with_face >= 110
    assert frames.get("obama", 0) >= 0.95 * with_face
    assert summary["read"] == summary["declared"] == 122 and summary["damaged"] is None
    assert _frame_count(out) == 122


def test_max_frames_bounds_the_work_and_the_output(faces_model, faces_data, tmp_path):
    out = tmp_path / "short.avi"
    summary = recognize_video(
        faces_model,
        str(faces_data / "video" / "obama_mov.avi"),
        str(out),
        "v",
        max_frames=5,
    )
    assert summary["truncated"] and sum(summary["frames"].values()) == 5
    assert _frame_count(out) == 5


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100])
def test_undecodable_files_are_refused(faces_model, tmp_path, content):
    src = tmp_path / "bad.mp4"
    src.write_bytes(content)
    with pytest.raises(ObjectError, match="videos/bad.mp4: cannot be decoded"):
        recognize_video(faces_model, str(src), str(tmp_path / "out.avi"), "videos/bad.mp4")


def test_truncated_video_is_processed_up_to_the_cut_and_says_so(faces_model, faces_data, tmp_path):
    # FFmpeg conceals damaged frames rather than failing, so a cut file is
    # not an error: what can be decoded is processed, and the summary says
    # that the container announced more.
    data = (faces_data / "video" / "obama_mov.avi").read_bytes()
    src = tmp_path / "half.avi"
    src.write_bytes(data[: len(data) // 4])
    summary = recognize_video(faces_model, str(src), None, "half.avi")
    read = sum(summary["frames"].values())
    assert 10 < read < 122 and summary["read"] == read
    assert summary["name"] == "obama"
    assert summary["damaged"] == "truncated or damaged: %d of 122 frames decoded" % read


def test_missing_file_and_urls_are_not_opened(faces_model, tmp_path):
    for src in (str(tmp_path / "absent.avi"), "http://127.0.0.1:9/x.avi"):
        with pytest.raises(ObjectError, match="not found"):
            recognize_video(faces_model, src, str(tmp_path / "out.avi"), "v")
