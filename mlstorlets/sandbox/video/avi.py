"""Motion JPEG in AVI, written and read without decoding a frame.

A frame of Motion JPEG is a whole JPEG file, so frames that already are
JPEG (the frame objects) become a video by copying their bytes into
``00dc`` chunks, and several such videos become one by copying their
chunks: assembling a long video costs I/O, not codec time.  OpenCV, FFmpeg
and every player read the result.

Only the classic RIFF layout is written: one ``RIFF AVI`` list, 32-bit
sizes, so a file stays under :data:`MAX_AVI_BYTES`.
"""

import fractions
import struct

from mlstorlets.sandbox.errors import ObjectError

__all__ = ["MAX_AVI_BYTES", "MAX_FRAME_BYTES", "is_avi", "write_avi", "read_avi"]

#: Largest AVI written or read: RIFF sizes are 32-bit, and the sandbox caps
#: a file at 2 GiB.
MAX_AVI_BYTES = 2**31 - 2**20
#: Largest frame chunk accepted when reading.
MAX_FRAME_BYTES = 32 * 2**20

_AVIF_HASINDEX = 0x10
_AVIIF_KEYFRAME = 0x10


def is_avi(head):
    """True when ``head`` (the first 12 bytes or more) starts an AVI."""
    return head[:4] == b"RIFF" and head[8:12] == b"AVI "


def _chunk(fourcc, data):
    pad = b"\0" if len(data) % 2 else b""
    return fourcc + struct.pack("<I", len(data)) + data + pad


def _list(kind, body):
    return b"LIST" + struct.pack("<I", len(body) + 4) + kind + body


def _rate(fps):
    """(scale, rate) with rate / scale == fps, e.g. (1001, 30000)."""
    ratio = fractions.Fraction(fps).limit_denominator(1001)
    return ratio.denominator, ratio.numerator


def write_avi(out, frames, width, height, fps):
    """Write the JPEG ``frames`` as a Motion JPEG AVI to ``out``.

    Parameters
    ----------
    out : writable binary file
    frames : list of bytes
        JPEG files, all ``width`` x ``height``, in display order.
    width, height : int
    fps : float

    Returns
    -------
    int
        Bytes written.
    """
    if not frames:
        raise ValueError("an AVI needs at least one frame")
    scale, rate = _rate(fps)
    largest = max(len(f) for f in frames)
    avih = struct.pack(
        "<10I16x",
        round(1e6 * scale / rate),
        0,
        0,
        _AVIF_HASINDEX,
        len(frames),
        0,
        1,
        largest,
        width,
        height,
    )
    strh = b"vidsMJPG" + struct.pack(
        "<IHHIIIIIIiI4h",
        0,
        0,
        0,
        0,
        scale,
        rate,
        0,
        len(frames),
        largest,
        -1,
        0,
        0,
        0,
        width,
        height,
    )
    strf = struct.pack(
        "<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG", width * height * 3, 0, 0, 0, 0
    )
    hdrl = _list(
        b"hdrl",
        _chunk(b"avih", avih) + _list(b"strl", _chunk(b"strh", strh) + _chunk(b"strf", strf)),
    )
    index, offset = [], 4  # offsets count from the 'movi' fourcc
    movi_size = 4
    for frame in frames:
        index.append(struct.pack("<4sIII", b"00dc", _AVIIF_KEYFRAME, offset, len(frame)))
        step = 8 + len(frame) + len(frame) % 2
        offset += step
        movi_size += step
    idx1 = b"".join(index)
    riff_size = 4 + len(hdrl) + 8 + movi_size + 8 + len(idx1)
    if riff_size + 8 > MAX_AVI_BYTES:
        raise ValueError(f"{riff_size + 8} bytes of AVI exceed {MAX_AVI_BYTES}")
    out.write(b"RIFF" + struct.pack("<I", riff_size) + b"AVI " + hdrl)
    out.write(b"LIST" + struct.pack("<I", movi_size) + b"movi")
    for frame in frames:
        out.write(_chunk(b"00dc", frame))
    out.write(_chunk(b"idx1", idx1))
    return riff_size + 8


def _chunks(data, start, end, name):
    """(fourcc, offset of data, size) of the chunks in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        fourcc = bytes(data[pos : pos + 4])
        (size,) = struct.unpack_from("<I", data, pos + 4)
        if pos + 8 + size > end:
            raise ObjectError(name, f"AVI chunk {fourcc!r} at {pos} runs past its list")
        yield fourcc, pos + 8, size
        pos += 8 + size + size % 2


def read_avi(data, name):
    """The frames and format of a Motion JPEG AVI.

    Parameters
    ----------
    data : bytes-like
        The whole file (at most :data:`MAX_AVI_BYTES`).
    name : str
        For error messages.

    Returns
    -------
    info : dict
        ``width``, ``height``, ``fps``.
    frames : list of memoryview
        The JPEG frames, in order.

    Raises
    ------
    ObjectError
        Not an AVI, not Motion JPEG, or malformed.
    """
    data = memoryview(data)
    if len(data) < 12 or not is_avi(bytes(data[:12])) or len(data) > MAX_AVI_BYTES:
        raise ObjectError(name, "not an AVI file (or larger than %d bytes)" % MAX_AVI_BYTES)
    end = min(len(data), 8 + struct.unpack_from("<I", data, 4)[0])
    info, frames = None, []
    for fourcc, pos, size in _chunks(data, 12, end, name):
        if fourcc != b"LIST":
            continue
        kind = bytes(data[pos : pos + 4])
        if kind == b"hdrl":
            info = _header(data, pos + 4, pos + size, name)
        elif kind == b"movi":
            for sub, at, length in _chunks(data, pos + 4, pos + size, name):
                if sub[2:] in (b"dc", b"db"):
                    if length > MAX_FRAME_BYTES or bytes(data[at : at + 2]) != b"\xff\xd8":
                        raise ObjectError(name, f"frame {len(frames)} is not a JPEG image")
                    frames.append(data[at : at + length])
    if info is None or not frames:
        raise ObjectError(name, "AVI without a header or without frames")
    return info, frames


def _header(data, start, end, name):
    info = {}
    for fourcc, pos, size in _chunks(data, start, end, name):
        if fourcc == b"LIST" and bytes(data[pos : pos + 4]) == b"strl":
            for sub, at, length in _chunks(data, pos + 4, pos + size, name):
                if sub == b"strh" and length >= 48:
                    kind, handler = bytes(data[at : at + 4]), bytes(data[at + 4 : at + 8])
                    scale, rate = struct.unpack_from("<II", data, at + 20)
                    if kind != b"vids" or handler.upper() != b"MJPG" or not scale or not rate:
                        raise ObjectError(name, "AVI stream is not Motion JPEG video")
                    info["fps"] = rate / scale
                elif sub == b"strf" and length >= 40:
                    info["width"], info["height"] = struct.unpack_from("<ii", data, at + 4)
            if "fps" in info and "width" in info:
                info["height"] = abs(info["height"])
                return info
    raise ObjectError(name, "AVI without a Motion JPEG video stream")
