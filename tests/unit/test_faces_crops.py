"""Face crops: a PNG a person can look at, carrying its embedding."""

import struct

import cv2
import numpy as np
import pytest

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces.crops import CHUNK_TYPE, encode_crop, read_embedding


def _crop():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (150, 150, 3), dtype=np.uint8), rng.normal(0, 0.1, 128)


def test_round_trip_and_the_png_stays_an_image():
    chip, vector = _crop()
    png = encode_crop(chip, vector)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and CHUNK_TYPE in png[:100]
    assert np.array_equal(read_embedding(png, "c"), vector.astype(np.float32))
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), chip)


@pytest.mark.parametrize(
    "mangle, match",
    [
        (lambda png: b"GIF89a" + png[6:], "not a PNG"),
        (lambda png: png.replace(CHUNK_TYPE, b"teXt"), "without a face embedding"),
        (lambda png: png[:60] + bytes([png[60] ^ 1]) + png[61:], "CRC"),
    ],
)
def test_bad_crops_are_refused_by_name(mangle, match):
    chip, vector = _crop()
    with pytest.raises(ObjectError, match=match) as err:
        read_embedding(mangle(encode_crop(chip, vector)), "crops/a.png")
    assert err.value.name == "crops/a.png"


def test_an_embedding_of_another_network_is_refused():
    chip, vector = _crop()
    png = encode_crop(chip, vector)
    length = struct.unpack(">I", png[33:37])[0]
    start = 41
    payload = png[start : start + length].replace(b"dlib_face", b"other_net")
    import zlib

    forged = png[:start] + payload + struct.pack(">I", zlib.crc32(CHUNK_TYPE + payload))
    forged += png[start + length + 4 :]
    with pytest.raises(ObjectError, match="expected dlib_face_recognition_resnet_model_v1"):
        read_embedding(forged, "c")
