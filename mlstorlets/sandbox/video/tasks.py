"""What the rotoscope storlets compute, as functions of their inputs.

Each function takes the storlet's input files and string parameters and
returns ``(metadata, body)`` for :func:`mlstorlets.sandbox.invocation.run`;
inputs are any objects with ``read(size)`` and ``get_metadata()``, so that
the tests need no engine.

* :func:`video_frames` (storlet ``video_frames.py``, on the object server
  holding the video): ``op=probe`` answers the video's frame count, rate and
  size as metadata with no body; ``op=extract`` a tar of the JPEG frames of
  one range, which the proxy's bulk extraction makes into frame objects;
  ``op=segment`` one range filtered into a Motion JPEG AVI segment.
* :func:`filter_frame` (``frame_filter.py``): one frame through one of
  :data:`mlstorlets.sandbox.video.filters.FILTERS`.
* :func:`assemble` (``frames_to_video.py``, on the proxy: its inputs are
  the request's object and ``X-Storlet-Extra-Resources``): frames, or
  videos it made before, into one Motion JPEG AVI, in input order; or a
  segment of source frames filtered on the way in (``filter`` or
  ``model``), each output carried along the motion from the previous one
  (``temporal``, :mod:`mlstorlets.sandbox.video.temporal`).
"""

import io
import os
import shutil
import tempfile

import cv2
import numpy as np
from PIL import Image

from mlstorlets.sandbox.errors import ObjectError, ParameterError
from mlstorlets.sandbox.faces.image import MAX_PIXELS
from mlstorlets.sandbox.inputs import (
    MAX_VIDEO_BYTES,
    input_name,
    metadata_value,
    read_input,
    spill_input,
)
from mlstorlets.sandbox.invocation import float_param, int_param
from mlstorlets.sandbox.video import avi, filters, frames
from mlstorlets.sandbox.video.temporal import Stabilizer

__all__ = ["video_frames", "filter_frame", "assemble", "decode_frame", "MAX_VIDEO_BYTES"]

#: Largest frame object read.
MAX_FRAME_BYTES = avi.MAX_FRAME_BYTES
#: Largest video :func:`assemble` writes: the output is built in memory.
MAX_OUTPUT_BYTES = 1024 * 2**20

_JPEG = b"\xff\xd8\xff"
_PNG = b"\x89PNG\r\n\x1a\n"


def video_frames(in_files, params):
    """Probe a video or extract one range of its frames (see module doc).

    Parameters (strings): ``op`` (``probe``, ``extract`` or ``segment``),
    ``start``, ``count`` (0: to the end), ``every`` (keep one frame in N),
    ``width`` (scale to; 0 keeps the size), ``quality`` (JPEG), ``source``.
    ``op=segment`` filters the range (``filter`` and its parameters,
    ``temporal``) into a Motion JPEG AVI: a segment of the filtered video,
    with no frame object (:func:`mlstorlets.sandbox.video.frames.filter_range`);
    with ``segment`` (a member name), a tar to extract instead: each
    filtered frame as ``frames_to`` + its name, then the segment.
    """
    name = input_name(params, 0)
    op = params.get("op") or "extract"
    if op not in ("probe", "extract", "segment"):
        raise ObjectError(name, f"parameter op must be probe, extract or segment, got {op!r}")
    if op == "segment":
        # Checked before the video is read.
        style, _ = _segment_filter(in_files, dict(params, model=""), name)
        if style is None:
            raise ParameterError(name, "filter", "op=segment needs a filter")
        temporal = float_param(params, "temporal", 0.0, 0.0, 0.95, name)
    workdir = tempfile.mkdtemp(prefix="frames-")
    try:
        path = os.path.join(workdir, "video")
        if not spill_input(in_files[0], path, name, MAX_VIDEO_BYTES):
            raise ObjectError(name, "empty object, expected a video")
        if op == "probe":
            info = frames.probe(path, name)
            return {
                "Video-Frames": info["frames"],
                "Video-Fps": "%.6g" % info["fps"],
                "Video-Width": info["width"],
                "Video-Height": info["height"],
            }, b""
        cut = {
            "start": int_param(params, "start", 0, 0, 10**8, name),
            "count": int_param(params, "count", 0, 0, frames.MAX_RANGE, name),
            "every": int_param(params, "every", 1, 1, 1000, name),
            "width": int_param(params, "width", 0, 0, 8192, name),
            "quality": int_param(params, "quality", 90, 10, 100, name),
        }
        if op == "segment":
            stabilizer = Stabilizer(temporal) if temporal else None
            kept = [] if params.get("segment") else None
            body, info = frames.filter_range(
                path, name, style=style, stabilizer=stabilizer, kept=kept, **cut
            )
            metadata = {"Video-Frames": info["frames"], "Video-Fps": "%.6g" % info["fps"]}
            if kept is None:
                return metadata, body
            # The filtered frames as objects too, and the segment last.
            tar = frames.frames_tar(
                kept,
                body,
                info,
                name,
                params.get("frames_to") or "",
                params["segment"],
                {"Filter": params.get("filter") or ""},
            )
            return {"Frames": info["frames"]}, tar
        body, info = frames.extract_range(path, name, **cut)
        return {"Frames": info["frames"], "Frame-Fps": "%.6g" % info["fps"]}, body
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def decode_frame(data, name, max_pixels=MAX_PIXELS):
    """A JPEG or PNG frame as a BGR image, its size checked before decoding."""
    head = bytes(data[:8])
    if not (head.startswith(_JPEG) or head.startswith(_PNG)):
        raise ObjectError(name, "not a JPEG or PNG frame")
    try:
        width, height = Image.open(io.BytesIO(data), formats=("JPEG", "PNG")).size
    except Exception:
        raise ObjectError(name, "not a readable JPEG or PNG frame") from None
    if not 0 < width * height <= max_pixels:
        raise ObjectError(name, f"frame of {width}x{height}: not in (0, {max_pixels}] pixels")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ObjectError(name, "corrupt or truncated frame")
    return image


def _jpeg(image, quality, name):
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"cannot encode {name} as JPEG")
    return data.tobytes()


def filter_frame(in_files, params):
    """One frame through ``params['filter']``, as JPEG (``quality``).

    The other parameters are the filter's (:data:`filters.PARAMETERS`); the
    output keeps the frame's metadata (index, time, rate) and adds
    ``Filter``.
    """
    name = input_name(params, 0)
    image = decode_frame(read_input(in_files[0], name, MAX_FRAME_BYTES), name)
    chosen = params.get("filter") or ""
    out = filters.apply_filter(image, chosen, params, name)
    quality = int_param(params, "quality", 90, 10, 100, name)
    return {"Filter": chosen}, _jpeg(out, quality, name)


def _segment_filter(in_files, params, name):
    """``(filter, frame inputs)``: what a segment's frames go through (a
    function of a BGR frame and its name, or None) and which inputs are
    frames.  With ``model``, the model is the last input."""
    if params.get("model"):
        # Imported here: a worker that only joins segments never loads the
        # model runtime.
        from mlstorlets.sandbox.models.graph import MAX_MODEL_BYTES
        from mlstorlets.sandbox.models.tasks import image_model

        if len(in_files) < 2:
            raise ObjectError(name, "a segment with a model needs the model as its last input")
        model_name = params["model"]
        data = read_input(in_files[-1], model_name, MAX_MODEL_BYTES)
        return image_model(data, params, name, model_name), in_files[:-1]
    chosen = params.get("filter")
    if chosen:
        filters.apply_filter(np.zeros((8, 8, 3), np.uint8), chosen, params, name)
        return (lambda image, frame: filters.apply_filter(image, chosen, params, frame)), in_files
    return None, in_files


def assemble(in_files, params):
    """Frames and Motion JPEG AVIs into one AVI, in input order.

    A JPEG frame of the video's size is copied as it is; any other frame is
    decoded, scaled to that size and encoded (``quality``).  An AVI input
    contributes its frames, copied.  The size is the first input's; the
    rate is ``fps`` when given, else the first input's (``Frame-Fps``
    metadata of a frame, or an AVI's header).

    A segment of source frames is filtered on the way in: ``filter`` (and
    its parameters) or ``model`` (an ONNX image-to-image model, the last
    input; see :func:`mlstorlets.sandbox.models.tasks.image_model`).  With
    ``temporal`` in (0, 1), each filtered frame is blended with the
    previous output along the motion (:class:`Stabilizer`); the first
    ``context`` frames (0 or 1: the previous segment's last) only prime it
    and are not output.

    Returns metadata ``Video-Frames`` and ``Video-Fps``, and the AVI.
    """
    first = input_name(params, 0)
    quality = int_param(params, "quality", 90, 10, 100, first)
    fps = float_param(params, "fps", 0.0, 0.0, 1000.0, first)
    temporal = float_param(params, "temporal", 0.0, 0.0, 0.95, first)
    context = int_param(params, "context", 0, 0, 1, first)
    style, inputs = _segment_filter(in_files, params, first)
    if style is None and (temporal or context):
        raise ParameterError(first, "temporal", "temporal and context need a filter or a model")
    stabilizer = Stabilizer(temporal) if temporal else None
    size, out, total = None, [], 0
    for i, f in enumerate(inputs):
        name = input_name(params, i)
        data = read_input(f, name, MAX_OUTPUT_BYTES)
        if style is not None:
            if avi.is_avi(data[:12]):
                raise ObjectError(name, "a filtered segment is made of frames, not videos")
            image = decode_frame(data, name)
            styled = style(image, name)
            if stabilizer is not None:
                styled = stabilizer.step(image, styled)
            if i < context:
                continue
            if size is None:
                size = (image.shape[1], image.shape[0])
            if not fps:
                fps = float(metadata_value(f.get_metadata(), "Frame-Fps") or 0)
            if (styled.shape[1], styled.shape[0]) != size:
                styled = cv2.resize(styled, size, interpolation=cv2.INTER_AREA)
            added = [_jpeg(styled, quality, name)]
        elif avi.is_avi(data[:12]):
            info, chunks = avi.read_avi(data, name)
            size = size or (info["width"], info["height"])
            fps = fps or info["fps"]
            if (info["width"], info["height"]) != size:
                raise ObjectError(
                    name, "video of %dx%d, expected %dx%d" % (info["width"], info["height"], *size)
                )
            added = [bytes(c) for c in chunks]
        else:
            image = decode_frame(data, name)
            if size is None:
                size = (image.shape[1], image.shape[0])
            if not fps:
                fps = float(metadata_value(f.get_metadata(), "Frame-Fps") or 0)
            if (image.shape[1], image.shape[0]) == size and data.startswith(_JPEG):
                added = [data]
            else:
                added = [
                    _jpeg(cv2.resize(image, size, interpolation=cv2.INTER_AREA), quality, name)
                ]
        out.extend(added)
        total += sum(len(c) for c in added)
        if total > MAX_OUTPUT_BYTES:
            raise ObjectError(name, f"the video would exceed {MAX_OUTPUT_BYTES} bytes")
    if not 0 < fps <= 1000:
        raise ObjectError(input_name(params, 0), "no frame rate: pass fps")
    body = io.BytesIO()
    avi.write_avi(body, out, size[0], size[1], fps)
    return {"Video-Frames": len(out), "Video-Fps": "%.6g" % fps}, body.getvalue()
