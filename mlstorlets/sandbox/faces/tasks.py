"""What the face storlets compute, as functions of their inputs.

Each function here takes the storlet's input files and its string
parameters and returns ``(metadata, body)`` for
:func:`mlstorlets.sandbox.invocation.run`; the storlet classes in ``storlets/`` only
hand them over.  Inputs are any objects with ``read(size)`` and
``get_metadata()``, so that the tests need no engine.

The engine does not tell a storlet the names of its inputs: the client
passes the name of the object a request runs on as parameter ``source``
(the batch runner always does), and of a model as ``model``.

The engine copies the user metadata of the object a request runs on to the
output, and the metadata a storlet sets overrides it key by key (a key
cannot be removed).  The output keeps the input's content type: a client
writing an output of another type sets it on its request.
"""

import io
import json
import mmap
import os
import posixpath
import shutil
import tarfile
import tempfile

from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.errors import ObjectError, ParameterError
from mlstorlets.sandbox.faces.crops import encode_crop
from mlstorlets.sandbox.faces.embed import (
    CNN_RULES,
    EVERY_FACE,
    describe,
    face_chip,
    find_faces,
    largest_face,
)
from mlstorlets.sandbox.faces.image import MAX_PIXELS, decode_image
from mlstorlets.sandbox.faces.model import load_model
from mlstorlets.sandbox.faces.people import MIN_FACE, faces_json, most_confident, name_faces
from mlstorlets.sandbox.faces.video import MAX_FRAMES, NO_FACE, recognize_video
from mlstorlets.sandbox.inputs import (
    MAX_VIDEO_BYTES,
    input_name,
    metadata_value,
    model_input,
    read_input,
    spill_input,
)
from mlstorlets.sandbox.invocation import float_param, int_param

__all__ = [
    "photo_face",
    "extract",
    "recognize",
    "sniff",
]

#: Largest photo read into memory; a 40 megapixel JPEG is about 20 MB.
MAX_IMAGE_BYTES = 64 * 2**20
#: Largest model object; a face model is a few hundred kilobytes.
MAX_MODEL_BYTES = 64 * 2**20
#: Most crops one photo gives (``faces=all``), the largest first.
MAX_FACES = 100

# Metadata the face storlets write; stale values are dropped from an input's
# metadata before fresh ones are added.
TAG_PREFIX = "Face-"
# Swift: a metadata value is at most 256 bytes, all of them at most 4096.
MAX_META_VALUE = 256
MAX_META_TOTAL = 4096

_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")


def sniff(head):
    """``'image'``, ``'video'`` or None from the first bytes of an object.

    Only containers FFmpeg reads without following references are called
    videos: a playlist (HLS, concat) handed to FFmpeg could make it read
    other files of the sandbox into the output.
    """
    if head.startswith(_IMAGE_MAGIC):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free"):
        return "video"  # ISO base media: MP4, MOV, 3GP
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video"  # Matroska, WebM
    if head.startswith(b"\x00\x00\x01\xba") or (
        len(head) > 376 and head[0] == head[188] == head[376] == 0x47
    ):
        return "video"  # MPEG program and transport streams
    return None


def _read_head(f, size=512):
    head = b""
    while len(head) < size:
        chunk = f.read(size - len(head))
        if not chunk:
            break
        head += chunk
    return head


def _box(box):
    return ",".join(str(int(v)) for v in box)


def photo_face(data, name, max_pixels=MAX_PIXELS, cnn="auto"):
    """Decode a photo and find its largest face, with its embedding.

    Returns
    -------
    rgb : ndarray of shape (height, width, 3)
    face : mlstorlets.sandbox.faces.embed.Face or None
        None when the photo holds no face.
    embedding : ndarray of shape (128,) or None
    """
    rgb = decode_image(data, name, max_pixels=max_pixels, color=True)
    face = largest_face(rgb, cnn=cnn)
    if face is None:
        return rgb, None, None
    return rgb, face, describe(rgb, face)


def extract(in_files, params):
    """The ``extract_face`` storlet: the largest face of a photo, aligned.

    Parameters (all optional): ``size`` (crop side, default 150, what the
    embedding network sees), ``margin`` (room around the face, as a
    fraction of its size, default 0.25), ``label_key`` (metadata key of the
    person's name, default ``Name``), ``source`` (the object's name, for
    messages and the output's ``Source``), ``cnn`` (when the CNN detector
    runs: ``auto``, ``always``, ``never``; see
    :mod:`mlstorlets.sandbox.faces.embed`).

    ``faces=all`` crops every face at least ``min_face`` pixels wide
    instead: the body is then a tar of PNG crops (:func:`crop_names` of
    ``stem``, default the source's name without extension), for the
    proxy's bulk extraction, each crop with ``Face-Index`` (0 the
    largest), ``Face-Count``, ``Face-Box``, ``Face-Detector``, ``Source``
    and ``Source-Etag`` (parameter ``source_etag``: what a rerun compares)
    and, on the largest face's only, the photo's label.

    Returns
    -------
    metadata : dict
        The label under ``label_key`` when the photo has one, ``Source`` when
        given, ``Face-Box`` (``x,y,w,h`` in the photo), ``Face-Detector``.
    body : bytes
        The face aligned by its landmarks, RGB PNG, with its 128-d
        embedding inside (:mod:`mlstorlets.sandbox.faces.crops`).
    """
    name = input_name(params, 0)
    size = int_param(params, "size", 150, 32, 512, name)
    margin = float_param(params, "margin", 0.25, 0.0, 1.0, name)
    label_key = params.get("label_key") or "Name"
    cnn = _cnn_rule(params, name)
    data = read_input(in_files[0], name, MAX_IMAGE_BYTES)
    label = metadata_value(in_files[0].get_metadata(), label_key)
    faces = params.get("faces") or "largest"
    if faces not in ("largest", "all"):
        raise ParameterError(
            name, "faces", f"parameter faces must be largest or all, got {faces!r}"
        )
    if faces == "all":
        return _extract_all(data, params, name, size, margin, label_key, label, cnn)
    rgb, face, embedding = photo_face(data, name, cnn=cnn)
    if face is None:
        raise ObjectError(name, "no face found")
    metadata = {"Face-Box": _box(face.box), "Face-Detector": face.detector}
    if label:
        metadata[label_key] = label
    if params.get("source"):
        metadata["Source"] = params["source"][:MAX_META_VALUE]
    chip = face_chip(rgb, face, size=size, padding=margin)
    return metadata, encode_crop(chip, embedding, name)


def crop_names(stem, count):
    """The names of a photo's ``count`` crops: ``<stem>.png`` for the
    largest face, ``<stem>-face<i>.png`` for the others, by size."""
    return [f"{stem}.png" if i == 0 else f"{stem}-face{i}.png" for i in range(count)]


def _extract_all(data, params, name, size, margin, label_key, label, cnn):
    """Every face of at least ``min_face`` pixels, as a tar of crops that
    the proxy's bulk extraction makes into objects (see :func:`extract`).

    The largest face's crop is the tar's last member: once it exists, the
    photo's every crop does.  The label goes to it alone: a photo labelled
    with a name names its subject, not the people around."""
    stem = params.get("stem") or posixpath.splitext(posixpath.basename(name))[0]
    if not stem or "/" in stem or stem in (".", "..") or not stem.isprintable():
        raise ParameterError(name, "stem", f"parameter stem must be a plain name, got {stem!r}")
    min_face = int_param(params, "min_face", MIN_FACE, 1, 4096, name)
    rgb = decode_image(data, name, max_pixels=MAX_PIXELS, color=True)
    found = sorted(
        (f for f in find_faces(rgb, EVERY_FACE, cnn=cnn) if f.box[2] >= min_face),
        key=lambda f: (-f.area, f.box),
    )[:MAX_FACES]
    if not found:
        raise ObjectError(name, "no face found")
    names = crop_names(stem, len(found))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for index in reversed(range(len(found))):
            face = found[index]
            crop = encode_crop(
                face_chip(rgb, face, size=size, padding=margin), describe(rgb, face), name
            )
            meta = {
                "Face-Box": _box(face.box),
                "Face-Detector": face.detector,
                "Face-Index": str(index),
                "Face-Count": str(len(found)),
            }
            if index == 0 and label:
                meta[label_key] = label
            for key in ("source", "source_etag"):
                if params.get(key):
                    meta[key.replace("_", "-").title()] = params[key][:MAX_META_VALUE]
            member = tarfile.TarInfo(names[index])
            member.size = len(crop)
            member.pax_headers = dict(
                {protocol.PAX_META + k: str(v) for k, v in meta.items()},
                **{protocol.PAX_TYPE: "image/png"},
            )
            tar.addfile(member, io.BytesIO(crop))
    return {"Faces": str(len(found))}, buffer.getvalue()


def recognize(in_files, params):
    """The ``recognize_face`` storlet: tag a photo, or annotate a video.

    Inputs: ``in_files[0]`` the photo or video (the request's object),
    ``in_files[1]`` the model (the single extra resource).

    Parameters (all optional): ``threshold`` (a face farther than this from
    every training face is ``unknown``; default the model's calibrated
    threshold), ``kind`` (``image``, ``video`` or ``auto``, the default,
    which reads the object's first bytes), ``max_frames`` (video, default
    :data:`~mlstorlets.sandbox.faces.video.MAX_FRAMES`), ``output``
    (``copy``, the default: the photo, or the annotated video; ``tags``:
    no body, only the tags, for a client that reads them without writing
    an output), ``min_face`` (narrowest face named, in pixels, default
    :data:`~mlstorlets.sandbox.faces.people.MIN_FACE`), ``cnn`` (when the
    CNN detector runs: ``auto``, ``always``, ``never``; see
    :mod:`mlstorlets.sandbox.faces.embed`), ``source`` and ``model``
    (names of the two objects, for messages).

    Every face is named.  Returns
    -------
    metadata : dict
        The input's own metadata (earlier ``Face-*`` tags blanked) plus, for
        a photo, ``Face-Count`` (faces found), ``Face-Faces`` (JSON list of
        ``[name, confidence, "x,y,w,h"]``, most confident first, within
        Swift's 256 bytes a value) and, for the most confident face,
        ``Face-Name`` (``none`` when no face is found), ``Face-Confidence``
        and ``Face-Box``; for a video ``Face-Name`` (the name of the most
        faces), ``Face-Frames`` (JSON counts of faces per name, ``none``
        counting frames without a face) and, when the video ends before
        its container says it should, ``Face-Damaged``.
    body : bytes-like
        The photo unchanged, or the annotated video (Motion JPEG AVI);
        empty with ``output=tags``.
    """
    name, model_name = model_input(in_files, params, "recognition")
    threshold = None
    if params.get("threshold") not in (None, ""):
        threshold = float_param(params, "threshold", 0.6, 0.01, 2.0, name)
    kind = params.get("kind") or "auto"
    if kind not in ("auto", "image", "video"):
        raise ObjectError(name, f"parameter kind must be image, video or auto, got {kind!r}")
    output = params.get("output") or "copy"
    if output not in ("copy", "tags"):
        raise ObjectError(name, f"parameter output must be copy or tags, got {output!r}")
    min_face = int_param(params, "min_face", MIN_FACE, 1, 4096, name)
    cnn = _cnn_rule(params, name)
    # The model first: a bad model is refused before any work on the data.
    model = load_model(read_input(in_files[1], model_name, MAX_MODEL_BYTES), model_name)
    # Tags of an earlier recognition would survive on the output (the engine
    # keeps the input's metadata), so they are blanked, then set afresh.
    inherited = {
        k: ("" if k.startswith(TAG_PREFIX) else v) for k, v in in_files[0].get_metadata().items()
    }
    head = _read_head(in_files[0])
    sniffed = sniff(head)
    if kind == "auto":
        kind = "video" if sniffed == "video" else "image"
    if kind == "video":
        if sniffed != "video":
            raise ObjectError(
                name, "not a video in a known container (AVI, MP4/MOV, Matroska, MPEG)"
            )
        max_frames = int_param(params, "max_frames", MAX_FRAMES, 1, 10**6, name)
        tags, body = _recognize_video(
            model, in_files[0], head, name, threshold, max_frames, output == "copy", min_face, cnn
        )
    else:
        data = head + read_input(in_files[0], name, MAX_IMAGE_BYTES - len(head))
        tags = _recognize_photo(model, data, name, threshold, min_face, cnn)
        body = data
    if params.get("model"):
        tags["Face-Model"] = params["model"][:MAX_META_VALUE]
    return _merge_metadata(inherited, tags, name), body if output == "copy" else b""


def _cnn_rule(params, name):
    cnn = params.get("cnn") or "auto"
    if cnn not in CNN_RULES:
        raise ParameterError(name, "cnn", f"parameter cnn must be one of {CNN_RULES}, got {cnn!r}")
    return cnn


def _recognize_photo(model, data, name, threshold, min_face, cnn):
    rgb = decode_image(data, name, max_pixels=MAX_PIXELS, color=True)
    named = name_faces(model, rgb, threshold, min_face, cnn)
    best = most_confident(named)
    if best is None:
        # A photo without a face is an answer, not an error: it keeps its
        # place in a tagged collection.
        return {"Face-Name": NO_FACE, "Face-Count": "0"}
    return {
        "Face-Name": best.name,
        "Face-Confidence": f"{best.confidence:.3f}",
        "Face-Box": _box(best.box),
        "Face-Count": str(len(named)),
        "Face-Faces": faces_json(named, MAX_META_VALUE),
    }


def _recognize_video(model, f, head, name, threshold, max_frames, annotate, min_face, cnn):
    # FFmpeg needs a seekable file; the sandbox's /tmp is private to this
    # storlet and both files are removed before returning.
    workdir = tempfile.mkdtemp(prefix="mlstorlets-video-")
    try:
        src = os.path.join(workdir, "input")
        dst = os.path.join(workdir, "annotated.avi") if annotate else None
        spill_input(f, src, name, MAX_VIDEO_BYTES, head=head)
        summary = recognize_video(
            model,
            src,
            dst,
            name,
            threshold=threshold,
            max_frames=max_frames,
            min_face=min_face,
            cnn=cnn,
        )
        body = b""
        if annotate:
            with open(dst, "rb") as out:
                # Mapped rather than read: the annotated video can be large,
                # and the pages stay valid after the file is unlinked.
                body = mmap.mmap(out.fileno(), 0, access=mmap.ACCESS_READ)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    tags = {"Face-Name": summary["name"], "Face-Frames": _frames_json(summary["frames"])}
    if summary["truncated"]:
        tags["Face-Truncated"] = str(max_frames)
    if summary["damaged"]:
        tags["Face-Damaged"] = summary["damaged"]
    return tags, body


def _frames_json(frames):
    """Frame counts as compact JSON within a metadata value's 256 bytes.

    The rarest names are left out first when there are too many to fit;
    ``none`` always stays.
    """
    ranked = sorted(frames.items(), key=lambda kv: (kv[0] != NO_FACE, -kv[1], kv[0]))
    while True:
        text = json.dumps(dict(sorted(ranked)), separators=(",", ":"))
        if len(text.encode()) <= MAX_META_VALUE or len(ranked) <= 1:
            return text
        ranked.pop()


def _merge_metadata(inherited, tags, name):
    merged = dict(inherited)
    merged.update(tags)
    total = sum(len(k.encode()) + len(str(v).encode()) for k, v in merged.items())
    if total > MAX_META_TOTAL - 256:
        raise ObjectError(
            name,
            f"its metadata ({total} bytes) leaves no room for the face tags "
            f"under Swift's {MAX_META_TOTAL}-byte limit",
        )
    return merged
