"""Decoding untrusted image bytes."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces.image import decode_image


@pytest.fixture(scope="module")
def photo(faces_data):
    path = faces_data / "test" / "obama_test1.jpeg"
    return path.read_bytes()


def _reencode(jpeg, fmt):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(buffer, fmt)
    return buffer.getvalue()


def _png_header(width, height):
    """A tiny, valid-looking PNG that claims ``width`` x ``height`` pixels."""

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_jpeg_png_and_gif_decode_to_the_same_grayscale_picture(photo):
    size = Image.open(io.BytesIO(photo)).size
    jpeg = decode_image(photo, "a.jpeg")
    png = decode_image(_reencode(photo, "PNG"), "a.png")
    gif = decode_image(_reencode(photo, "GIF"), "a.gif")
    for gray in (jpeg, png, gif):
        assert gray.dtype == np.uint8
        assert gray.shape == (size[1], size[0])
    # PNG is lossless; GIF's 256-colour palette costs some precision.
    assert np.abs(png.astype(int) - jpeg.astype(int)).mean() < 2
    assert np.abs(gif.astype(int) - jpeg.astype(int)).mean() < 12


def test_animated_gif_gives_the_first_frame():
    frames = [Image.new("L", (40, 30), value) for value in (10, 200)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    gray = decode_image(buffer.getvalue(), "anim.gif")
    assert gray.shape == (30, 40)
    assert abs(int(gray.mean()) - 10) <= 2


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"hello, this is plain text and no image at all", "not a readable image"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 10, "not a readable image"),
    ],
)
def test_empty_and_non_images_are_refused(data, reason):
    with pytest.raises(ObjectError, match=reason) as caught:
        decode_image(data, "photos/x.jpg")
    assert caught.value.name == "photos/x.jpg"
    assert "photos/x.jpg" in str(caught.value)


def test_truncated_jpeg_is_refused(photo):
    with pytest.raises(ObjectError, match="truncated") as caught:
        decode_image(photo[: len(photo) // 2], "photos/half.jpeg")
    assert "photos/half.jpeg" in str(caught.value)


def test_jpeg_missing_only_its_end_marker_is_refused(photo):
    # libjpeg in OpenCV decodes this with a mere warning; it must not pass.
    assert photo.endswith(b"\xff\xd9")
    with pytest.raises(ObjectError, match="truncated"):
        decode_image(photo[:-40], "photos/cut.jpeg")


def test_jpeg_with_padding_after_its_end_marker_decodes(photo):
    assert (
        decode_image(photo + b"\0\0\n", "padded.jpeg").shape == decode_image(photo, "p.jpeg").shape
    )


def test_truncated_png_is_refused(photo):
    png = _reencode(photo, "PNG")
    with pytest.raises(ObjectError, match="photos/half.png"):
        decode_image(png[: len(png) // 2], "photos/half.png")


@pytest.mark.parametrize("side", [30000, 7000])
def test_huge_header_is_refused_before_decoding(side):
    # 30000x30000 trips Pillow's own bomb guard, 7000x7000 only ours; the
    # file is a few dozen bytes either way and nothing big is allocated.
    data = _png_header(side, side)
    assert len(data) < 200
    with pytest.raises(ObjectError, match="too large") as caught:
        decode_image(data, "photos/bomb.png")
    assert "photos/bomb.png" in str(caught.value)


def test_max_pixels_is_honoured(photo):
    with pytest.raises(ObjectError, match="too large"):
        decode_image(photo, "p.jpeg", max_pixels=1000)


def test_formats_outside_the_list_are_refused(photo):
    with pytest.raises(ObjectError, match="p.bmp"):
        decode_image(_reencode(photo, "BMP"), "p.bmp")
