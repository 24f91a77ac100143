"""Face crops that carry their embedding: a PNG with one private chunk.

A crop is what a person looks at (the aligned face, RGB PNG) and what
training reads (its 128-d embedding). Both live in the one object, so that
they cannot drift apart and no metadata (bounded to a few KB by ext4's
extended attributes and Swift) is needed: the embedding is a private,
ancillary PNG chunk (type ``mlEm``: viewers skip it, the PNG stays valid),
placed right after the header so that training reads it without decoding a
pixel.

Chunk data: the descriptor's name (ASCII), a NUL, then the embedding as
little-endian float32.
"""

import struct
import zlib

import cv2
import numpy as np

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces.embed import DESCRIPTOR, EMBEDDING_SIZE

__all__ = ["CHUNK_TYPE", "encode_crop", "read_embedding"]

CHUNK_TYPE = b"mlEm"

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The chunk follows IHDR, whose data is 13 bytes: 8 + (4 + 4 + 13 + 4).
_IHDR_END = 33


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_crop(chip, embedding, name=""):
    """Encode an RGB face chip as PNG with its embedding inside.

    Parameters
    ----------
    chip : ndarray of shape (size, size, 3), dtype uint8
        The aligned face, RGB.
    embedding : ndarray of shape (EMBEDDING_SIZE,)
    name : str
        The source object's name, for messages.

    Returns
    -------
    png : bytes
    """
    embedding = np.asarray(embedding, dtype="<f4")
    if embedding.shape != (EMBEDDING_SIZE,):
        raise ValueError(f"an embedding has {EMBEDDING_SIZE} values, got shape {embedding.shape}")
    bgr = cv2.cvtColor(np.ascontiguousarray(chip, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", bgr)
    if not ok:
        raise ObjectError(name, "cannot encode the face crop as PNG")
    png = buffer.tobytes()
    payload = DESCRIPTOR.encode("ascii") + b"\0" + embedding.tobytes()
    return png[:_IHDR_END] + _chunk(CHUNK_TYPE, payload) + png[_IHDR_END:]


def read_embedding(data, name):
    """The embedding stored in a crop by :func:`encode_crop`.

    Only the PNG's chunk headers up to the embedding are read; the image
    itself is not decoded.

    Parameters
    ----------
    data : bytes-like
        The crop object.
    name : str
        Its name, for messages.

    Returns
    -------
    embedding : ndarray of shape (EMBEDDING_SIZE,), dtype float32

    Raises
    ------
    ObjectError
        If the object is not a PNG, holds no embedding, an embedding of
        another network, or a corrupt one.
    """
    data = memoryview(data)
    if bytes(data[:8]) != _SIGNATURE:
        raise ObjectError(name, "not a PNG face crop (extract the faces with extract_face)")
    offset = 8
    # A crop has IHDR then the embedding; a few chunks of slack for PNGs
    # that an editor rewrote.
    for _ in range(16):
        if offset + 8 > len(data):
            break
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        end = offset + 12 + length
        if end > len(data):
            break
        if kind == CHUNK_TYPE:
            payload = bytes(data[offset + 8 : offset + 8 + length])
            crc = struct.unpack(">I", data[end - 4 : end])[0]
            if zlib.crc32(kind + payload) != crc:
                raise ObjectError(name, "corrupt embedding in the face crop (CRC mismatch)")
            descriptor, _, vector = payload.partition(b"\0")
            if descriptor != DESCRIPTOR.encode("ascii"):
                raise ObjectError(
                    name,
                    f"embedding of {descriptor[:64].decode('ascii', 'replace')!r}, "
                    f"expected {DESCRIPTOR}",
                )
            if len(vector) != 4 * EMBEDDING_SIZE:
                raise ObjectError(name, f"embedding of {len(vector)} bytes, expected 512")
            embedding = np.frombuffer(vector, dtype="<f4").astype(np.float32)
            if not np.isfinite(embedding).all():
                raise ObjectError(name, "embedding holds non-finite values")
            return embedding
        if kind in (b"IDAT", b"IEND"):
            break
        offset = end
    raise ObjectError(name, "a PNG without a face embedding (extract the faces with extract_face)")
