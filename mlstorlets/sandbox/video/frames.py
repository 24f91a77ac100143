"""Frames out of a video file: a probe, a tar of JPEG frames per range, and
a range filtered into a video segment.

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
from mlstorlets.sandbox.video import avi

__all__ = ["frame_name", "probe", "extract_range", "filter_range", "frames_tar", "MAX_RANGE"]

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


def _decoded(capture, name, start, count, every, width):
    """``(output index, source index, fps, frame)`` of output frames
    ``start`` .. ``start + count - 1`` (``count`` 0: to the end, at most
    :data:`MAX_RANGE`), scaled to ``width``."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    if not 0 < fps <= 1000:
        raise ObjectError(name, f"video without a usable frame rate ({fps})")
    first = start * every
    if first:
        capture.set(cv2.CAP_PROP_POS_FRAMES, first)
    position = int(capture.get(cv2.CAP_PROP_POS_FRAMES))
    written, limit = 0, count or MAX_RANGE
    while written < limit:
        ok, frame = capture.read()
        if not ok:
            break
        source_index, position = position, position + 1
        if source_index < first or (source_index - first) % every:
            continue
        yield source_index // every, source_index, fps, _scaled(frame, width)
        written += 1


def _checked_range(name, count):
    if count > MAX_RANGE or count < 0:
        raise ObjectError(name, f"at most {MAX_RANGE} frames per request, asked {count}")


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
    _checked_range(name, count)
    capture, _, _ = _open(path, name, max_pixels)
    buffer = io.BytesIO()
    written, size, fps = 0, (0, 0), 0.0
    try:
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for index, source_index, fps, frame in _decoded(
                capture, name, start, count, every, width
            ):
                jpeg = _jpeg(frame, quality, name, source_index)
                _add_frame(
                    tar, frame_name(index), jpeg, index, source_index / fps, fps / every, name
                )
                written += 1
                size = (frame.shape[1], frame.shape[0])
    finally:
        capture.release()
    if not written:
        raise ObjectError(name, f"no frame from output frame {start} on")
    info = {"frames": written, "fps": fps / every, "width": size[0], "height": size[1]}
    return buffer.getvalue(), info


def filter_range(
    path,
    name,
    start,
    count,
    style,
    every=1,
    width=0,
    quality=90,
    stabilizer=None,
    max_pixels=MAX_PIXELS,
    kept=None,
):
    """A Motion JPEG AVI of frames ``start .. start + count - 1`` of a video,
    each through ``style``: a segment of the filtered video, made without a
    frame object.

    Parameters
    ----------
    path, name, start, count, every, width, quality
        As :func:`extract_range`.
    style : callable
        ``style(frame, frame name) -> frame``, BGR ``uint8``.
    stabilizer : mlstorlets.sandbox.video.temporal.Stabilizer, optional
        Carries each output along the motion from the previous one; the
        frame before ``start`` (if any) primes it and is not output.
    kept : list, optional
        Given, receives ``(output index, source index, JPEG)`` of each
        filtered frame, the bytes the segment holds.

    Returns
    -------
    avi : bytes
    info : dict
        ``frames`` written, ``fps`` of the frames, ``width``, ``height``.
    """
    _checked_range(name, count)
    capture, _, _ = _open(path, name, max_pixels)
    chunks, size, fps = [], None, 0.0
    # The previous frame primes the stabilizer: segments join without a
    # seam.
    prime = 1 if stabilizer is not None and start > 0 else 0
    try:
        for index, source_index, fps, frame in _decoded(
            capture, name, start - prime, count + prime if count else 0, every, width
        ):
            label = "%s frame %d" % (name, index)
            out = style(frame, label)
            if stabilizer is not None:
                out = stabilizer.step(frame, out)
            if index < start:
                continue
            size = size or (frame.shape[1], frame.shape[0])
            if (out.shape[1], out.shape[0]) != size:
                out = cv2.resize(out, size, interpolation=cv2.INTER_AREA)
            chunks.append(_jpeg(out, quality, name, source_index))
            if kept is not None:
                kept.append((index, source_index, chunks[-1]))
    finally:
        capture.release()
    if not chunks:
        raise ObjectError(name, f"no frame from output frame {start} on")
    body = io.BytesIO()
    avi.write_avi(body, chunks, size[0], size[1], fps / every)
    info = {"frames": len(chunks), "fps": fps / every, "width": size[0], "height": size[1]}
    return body.getvalue(), info


def frames_tar(kept, avi_body, info, name, frames_prefix, segment, metadata):
    """A tar of the filtered frames ``kept`` (by :func:`filter_range`) as
    members ``frames_prefix`` + :func:`frame_name`, with their index, time,
    rate, source and ``metadata``, then the segment ``avi_body`` as member
    ``segment``: written last, so that its object says its range is whole."""
    buffer = io.BytesIO()
    fps = info["fps"]
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for index, _, jpeg in kept:
            _add_frame(
                tar,
                frames_prefix + frame_name(index),
                jpeg,
                index,
                index / fps,
                fps,
                name,
                metadata,
            )
        member = tarfile.TarInfo(segment)
        member.size = len(avi_body)
        member.pax_headers = {
            protocol.PAX_TYPE: "video/x-msvideo",
            protocol.PAX_META + "Video-Frames": str(info["frames"]),
            protocol.PAX_META + "Video-Fps": "%.6g" % fps,
        }
        tar.addfile(member, io.BytesIO(avi_body))
    return buffer.getvalue()


def _add_frame(tar, member_name, jpeg, index, seconds, fps, name, metadata=None):
    """Add frame ``index`` (``seconds`` into the source, at ``fps``) of the
    video ``name`` to ``tar``, its metadata as pax headers."""
    member = tarfile.TarInfo(member_name)
    member.size = len(jpeg)
    member.pax_headers = {
        protocol.PAX_TYPE: "image/jpeg",
        protocol.PAX_META + "Frame-Index": str(index),
        protocol.PAX_META + "Frame-Time": "%.6f" % seconds,
        protocol.PAX_META + "Frame-Fps": "%.6g" % fps,
        protocol.PAX_META + "Source": name[:200],
    }
    member.pax_headers.update((protocol.PAX_META + k, str(v)) for k, v in (metadata or {}).items())
    tar.addfile(member, io.BytesIO(jpeg))


def _jpeg(frame, quality, name, source_index):
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"cannot encode frame {source_index} of {name} as JPEG")
    return jpeg.tobytes()
