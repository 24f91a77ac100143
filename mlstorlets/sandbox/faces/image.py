"""Decoding untrusted image bytes into grayscale or RGB arrays.

Objects reach the face pipeline straight from a Swift PUT, so every check
here assumes hostile input: the size is read from the header before any
pixel is allocated, the format is one of a short list, and a truncated file
is refused instead of being analysed half-grey.
"""

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mlstorlets.sandbox.errors import ObjectError

__all__ = ["MAX_PIXELS", "FORMATS", "decode_image"]

#: Default ceiling on width x height; 40 megapixels is above any phone camera
#: and keeps a decoded grayscale image (one byte a pixel) under 40 MB.
MAX_PIXELS = 40_000_000

#: Pillow format names accepted by :func:`decode_image`.
FORMATS = ("JPEG", "PNG", "GIF")

_JPEG_EOI = b"\xff\xd9"


def _header(data, name):
    """Open ``data`` lazily with Pillow: format and size, no pixels yet."""
    try:
        with warnings.catch_warnings():
            # Our own limit applies below; Pillow's warning would be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Only the plugins we accept get to parse untrusted bytes.
            return Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ObjectError(name, f"image too large ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ObjectError(
            name, f"not a readable image (expected one of {', '.join(FORMATS)})"
        ) from None


def _ends_with_eoi(data):
    # Some encoders pad the file after the End Of Image marker with NULs or a
    # newline; a file cut short ends inside the entropy-coded scan instead.
    return bytes(data[-64:]).rstrip(b"\0\r\n ").endswith(_JPEG_EOI)


def _pillow_decode(image, name, color):
    """Fully decode a Pillow image, refusing truncated data."""
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return np.asarray(image.convert("RGB" if color else "L"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ObjectError(name, f"corrupt or truncated {image.format} image ({exc})") from None


def decode_image(data, name, max_pixels=MAX_PIXELS, color=False):
    """Decode JPEG, PNG or GIF bytes into a grayscale (or RGB) image.

    Parameters
    ----------
    data : bytes-like
        The object's content.
    name : str
        The object's name, used in error messages.
    max_pixels : int, default=MAX_PIXELS
        Largest accepted ``width * height``, checked against the header before
        any pixel is decoded, so that a small file claiming huge dimensions
        costs nothing.
    color : bool, default=False
        Return RGB (what dlib's face networks take) instead of grayscale.

    Returns
    -------
    image : ndarray of shape (height, width) or (height, width, 3), dtype uint8
        The image (first frame for an animated GIF), EXIF orientation applied.

    Raises
    ------
    ObjectError
        If ``data`` is empty, not a JPEG, PNG or GIF, larger than
        ``max_pixels``, truncated or otherwise corrupt.
    """
    if not data:
        raise ObjectError(name, "empty object, expected an image")
    image = _header(data, name)
    if image.format not in FORMATS:
        raise ObjectError(
            name, f"unsupported image format {image.format}, expected one of {', '.join(FORMATS)}"
        )
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ObjectError(name, f"invalid image dimensions {width}x{height}")
    if width * height > max_pixels:
        raise ObjectError(name, f"image too large: {width}x{height} exceeds {max_pixels} pixels")

    # OpenCV 4 dropped GIF in most builds; and a JPEG without its End Of Image
    # marker needs Pillow's strict decoder, since libjpeg in OpenCV may return
    # a partially grey image with only a log warning.
    if image.format == "GIF" or (image.format == "JPEG" and not _ends_with_eoi(data)):
        return _pillow_decode(image, name, color)

    flags = cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if decoded is None:
        raise ObjectError(name, f"corrupt or truncated {image.format} image")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB) if color else decoded
