"""Frames out of a video file: a probe, and a tar of JPEG frames per range.

The tar is what Swift's bulk extraction makes into objects, one per member
(see :mod:`mlstorlets.server.middleware.storlet_copy`): each member carries
its metadata as pax headers ``SCHILY.xattr.user.meta.<key>``, which the bulk
middleware stores as ``X-Object-Meta-<key>``.
"""

import io
import os
import tarfile

import cv2

from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces.image import MAX_PIXELS

__all__ = ["frame_name", "probe", "extract_range", "MAX_RANGE"]

#: Most frames one request extracts; with 720p JPEG frames about 30 MB of
#: tar, a few seconds of decoding: well within the storlet timeout.
MAX_RANGE = 2000

# Frame object names: zero-padded, so that name order is frame order.
_NAME = "%06d.jpg"


def frame_name(index):
    """The object name (under the frames prefix) of output frame ``index``."""
    return _NAME % index


def _open(path, name, max_pixels):
    # FFmpeg would also read URLs and image sequence patterns; a storlet
    # must only ever read the local file it was given.
    if not os.path.isfile(path):
        raise ObjectError(name, "video file not found")
    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise ObjectError(name, "cannot be decoded as a video")
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if not 0 < width * height <= max_pixels:
        capture.release()
        raise ObjectError(
            name, f"video frames of {width}x{height}: not in (0, {max_pixels}] pixels"
        )
    return capture, width, height


def probe(path, name, max_pixels=MAX_PIXELS):
    """``frames``, ``fps``, ``width``, ``height`` of a video file.

    ``frames`` is the container's count (exact for AVI and MP4); the last
    range extracted runs to the end whatever it says.
    """
    capture, width, height = _open(path, name, max_pixels)
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if not 0 < fps <= 1000:
            raise ObjectError(name, f"video without a usable frame rate ({fps})")
        if frames <= 0:
            raise ObjectError(name, "video without a frame count")
        return {"frames": frames, "fps": fps, "width": width, "height": height}
    finally:
        capture.release()


def _scaled(frame, width):
    if not width or width == frame.shape[1]:
        return frame
    height = max(2, round(frame.shape[0] * width / frame.shape[1] / 2) * 2)
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


def extract_range(path, name, start, count, every=1, width=0, quality=90, max_pixels=MAX_PIXELS):
    """A tar of the JPEG frames ``start .. start + count - 1`` of a video.

    Output frame ``k`` is source frame ``k * every``; ``count`` 0 runs to
    the end of the video.

    Parameters
    ----------
    path : str
        The video, a local file.
    name : str
        The video object's name, for errors and the frames' ``Source``.
    start, count, every : int
    width : int
        Scale frames to this width (0: as they are).
    quality : int
        JPEG quality of the frames.

    Returns
    -------
    tar : bytes
        Members :func:`frame_name` ``(k)`` with metadata ``Frame-Index``,
        ``Frame-Time`` (seconds into the source), ``Frame-Fps`` (the frames'
        rate: the source's divided by ``every``) and ``Source``.
    info : dict
        ``frames`` written, ``fps`` of the frames, ``width``, ``height``.
    """
    if count > MAX_RANGE or count < 0:
        raise ObjectError(name, f"at most {MAX_RANGE} frames per request, asked {count}")
    capture, _, _ = _open(path, name, max_pixels)
    buffer = io.BytesIO()
    written, size = 0, (0, 0)
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        if not 0 < fps <= 1000:
            raise ObjectError(name, f"video without a usable frame rate ({fps})")
        first = start * every
        if first:
            capture.set(cv2.CAP_PROP_POS_FRAMES, first)
        position = int(capture.get(cv2.CAP_PROP_POS_FRAMES))
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            limit = count or MAX_RANGE
            while written < limit:
                ok, frame = capture.read()
                if not ok:
                    break
                source_index, position = position, position + 1
                if source_index < first or (source_index - first) % every:
                    continue
                frame = _scaled(frame, width)
                ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
                if not ok:
                    raise RuntimeError(f"cannot encode frame {source_index} of {name} as JPEG")
                index = source_index // every
                member = tarfile.TarInfo(frame_name(index))
                member.size = len(jpeg)
                member.pax_headers = {
                    protocol.PAX_TYPE: "image/jpeg",
                    protocol.PAX_META + "Frame-Index": str(index),
                    protocol.PAX_META + "Frame-Time": "%.6f" % (source_index / fps),
                    protocol.PAX_META + "Frame-Fps": "%.6g" % (fps / every),
                    protocol.PAX_META + "Source": name[:200],
                }
                tar.addfile(member, io.BytesIO(jpeg.tobytes()))
                written += 1
                size = (frame.shape[1], frame.shape[0])
    finally:
        capture.release()
    if not written:
        raise ObjectError(name, f"no frame from output frame {start} on")
    info = {"frames": written, "fps": fps / every, "width": size[0], "height": size[1]}
    return buffer.getvalue(), info
