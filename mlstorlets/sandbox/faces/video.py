"""Recognising the people in a video, frame by frame."""

import collections
import os

import cv2

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces.image import MAX_PIXELS
from mlstorlets.sandbox.faces.model import UNKNOWN
from mlstorlets.sandbox.faces.people import MIN_FACE, name_faces

__all__ = ["NO_FACE", "MAX_FRAMES", "recognize_video"]

#: Key counting the frames in which no face was found.
NO_FACE = "none"

#: Default bound on the frames read and written: two minutes at 25 fps.
MAX_FRAMES = 3000

# Motion JPEG in AVI is in every OpenCV build with FFmpeg and plays
# everywhere; frames are independent, so a cut-off output stays readable.
_FOURCC = "MJPG"

_GREEN = (0, 200, 0)
_RED = (0, 0, 220)


def _annotate(frame, box, label):
    x, y, w, h = box
    colour = _RED if label.startswith(UNKNOWN) else _GREEN
    thickness = max(2, frame.shape[1] // 400)
    cv2.rectangle(frame, (x, y), (x + w, y + h), colour, thickness)
    scale = max(0.6, frame.shape[1] / 1280)
    # Above the box, or inside it when the face touches the top edge.
    baseline = y - 8 if y > 30 * scale else y + int(30 * scale)
    cv2.putText(
        frame, label, (x, baseline), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA
    )


def recognize_video(
    model,
    src_path,
    dst_path,
    name,
    threshold=None,
    max_frames=MAX_FRAMES,
    max_pixels=MAX_PIXELS,
    min_face=MIN_FACE,
    cnn="auto",
):
    """Recognise every face in every frame, and optionally annotate.

    Parameters
    ----------
    model : FaceModel
        The recognizer.
    src_path : str
        A local video file (AVI, MP4 or anything FFmpeg reads), typically in
        the calling storlet's private temporary directory.
    dst_path : str or None
        Where to write the annotated video, as Motion JPEG; give it an
        ``.avi`` suffix. None: tag only, write no video. Both files belong
        to the caller, who must remove them.
    name : str
        The source object's name, for error messages.
    threshold : float, optional
        Overrides the model's open-set threshold; see
        :func:`mlstorlets.sandbox.faces.model.recognize`.
    max_frames : int, default=MAX_FRAMES
        Frames to process at most; later frames are neither read nor
        written, which bounds the time taken and the output size.
    max_pixels : int, default=MAX_PIXELS
        Largest accepted frame size, checked before the first frame is
        decoded.
    min_face : int, default=MIN_FACE
        Narrowest face named, in pixels.
    cnn : {'auto', 'always', 'never'}, default='auto'
        When the CNN detector runs (:func:`~mlstorlets.sandbox.faces.embed.find_faces`).

    Returns
    -------
    summary : dict
        ``name``: the name of the most faces (:data:`NO_FACE` if there was
        none); ``frames``: a dict counting the faces per name (a frame of
        two people counts for both), with :data:`NO_FACE` counting frames
        without a face; ``truncated``: whether ``max_frames`` stopped the reading;
        ``read``: frames decoded; ``declared``: frames the container
        announces (0 if it does not say); ``damaged``: None, or why the
        video ended before its container said it would.

    Raises
    ------
    ObjectError
        If the file cannot be decoded as a video or its frames are too large.
    RuntimeError
        If the output file cannot be written.
    """
    # FFmpeg would also read URLs and image sequence patterns; a storlet
    # must only ever read the local file it was given.
    if not os.path.isfile(src_path):
        raise ObjectError(name, "video file not found")
    capture = cv2.VideoCapture(src_path, cv2.CAP_FFMPEG)
    writer = None
    try:
        if not capture.isOpened():
            raise ObjectError(name, "cannot be decoded as a video")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > max_pixels:
            raise ObjectError(
                name, f"video frames too large: {width}x{height} exceeds {max_pixels} pixels"
            )
        fps = capture.get(cv2.CAP_PROP_FPS)
        if not 0 < fps <= 240:
            fps = 25.0
        declared = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        counts = collections.Counter()
        n_frames = 0
        truncated = False
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if n_frames >= max_frames:
                truncated = True
                break
            if frame.ndim != 3 or frame.shape[1] * frame.shape[0] > max_pixels:
                raise ObjectError(name, f"unexpected frame of shape {frame.shape}")
            if writer is None and dst_path is not None:
                writer = cv2.VideoWriter(
                    dst_path,
                    cv2.VideoWriter_fourcc(*_FOURCC),
                    fps,
                    (frame.shape[1], frame.shape[0]),
                )
                if not writer.isOpened():
                    raise RuntimeError(f"cannot open {dst_path} for writing {_FOURCC} video")
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            named = name_faces(model, rgb, threshold, min_face, cnn, small=False)
            if not named:
                counts[NO_FACE] += 1
            for face in named:
                counts[face.name] += 1
                if writer is not None:
                    _annotate(frame, face.box, f"{face.name} {face.confidence:.2f}")
            if writer is not None:
                writer.write(frame)
            n_frames += 1
        if n_frames == 0:
            raise ObjectError(name, "cannot be decoded as a video (no frame could be read)")
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    damaged = None
    # A video cut short still opens, and FFmpeg decodes what is there: the
    # container's frame count (AVI and MP4 headers carry it) tells.
    if not truncated and declared and n_frames < declared:
        damaged = f"truncated or damaged: {n_frames} of {declared} frames decoded"
    faces = {person: count for person, count in counts.items() if person != NO_FACE}
    # Counter.most_common keeps first-seen order on ties, which is stable.
    best = collections.Counter(faces).most_common(1)[0][0] if faces else NO_FACE
    frames = dict(sorted(counts.items()))
    frames.setdefault(NO_FACE, 0)
    return {
        "name": best,
        "frames": frames,
        "truncated": truncated,
        "read": n_frames,
        "declared": declared,
        "damaged": damaged,
    }
