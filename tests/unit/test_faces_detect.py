"""Face detection and cropping."""

import cv2
import numpy as np
import pytest

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces.detect import crop_face, encode_png, extract_face, largest_face
from mlstorlets.sandbox.faces.image import decode_image


@pytest.mark.parametrize("size", [64, 96])
def test_every_test_photo_yields_one_face_crop(faces_data, size):
    for path in sorted((faces_data / "test").glob("*.jpeg")):
        data = path.read_bytes()
        height, width = decode_image(data, path.name).shape
        crop, (x, y, w, h) = extract_face(data, path.name, size=size)
        assert crop.shape == (size, size) and crop.dtype == np.uint8
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
        # A portrait's face is a sizeable part of the picture, not a speck.
        assert w * h > 0.03 * width * height, path.name


def test_image_without_a_face_is_refused():
    gray = np.full((240, 320), 128, np.uint8)
    with pytest.raises(ObjectError, match="no face found") as caught:
        extract_face(encode_png(gray), "photos/wall.png")
    assert caught.value.name == "photos/wall.png"


def test_largest_of_several_faces_is_chosen(faces_data):
    face = decode_image((faces_data / "test" / "merkel_test2.jpeg").read_bytes(), "m")
    small = cv2.resize(face, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    canvas = np.full((face.shape[0], face.shape[1] + small.shape[1] + 20), 255, np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = small
    canvas[:, small.shape[1] + 20 :] = face
    x, y, w, h = largest_face(canvas)
    assert x >= small.shape[1] + 20


def test_crop_adds_the_forehead_and_clamps_to_the_image():
    gray = np.tile(np.arange(100, dtype=np.uint8)[:, None], (1, 100))  # row index as value
    # Box 40 high at y=50: margin 0.25 reaches 10 rows higher.
    crop = crop_face(gray, (20, 50, 40, 40), size=50, margin=0.25, equalize=False)
    assert crop[0].mean() == pytest.approx(40, abs=1)
    # Near the top the margin stops at row 0 instead of wrapping around.
    crop = crop_face(gray, (20, 5, 40, 40), size=45, margin=0.5, equalize=False)
    assert crop[0].mean() == pytest.approx(0, abs=1)


def test_equalisation_normalises_exposure(faces_data):
    data = (faces_data / "test" / "trump_test1.jpeg").read_bytes()
    gray = decode_image(data, "t")
    box = largest_face(gray)
    dark = (gray // 3).astype(np.uint8)
    bright_crop = crop_face(gray, box)
    dark_crop = crop_face(dark, box)
    assert np.abs(bright_crop.astype(int) - dark_crop.astype(int)).mean() < 8


def test_png_encoding_round_trips():
    crop = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    assert np.array_equal(decode_image(encode_png(crop), "c.png"), crop)


def test_detection_from_eight_threads_matches_one(faces_data):
    """OpenCV's cascade is not thread-safe: one classifier shared by
    threads segfaults.  Run in a child so that a crash fails this test
    instead of the suite."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent("""
        import pathlib, sys
        from concurrent.futures import ThreadPoolExecutor
        from mlstorlets.sandbox.faces.detect import detect_faces
        from mlstorlets.sandbox.faces.image import decode_image
        photos = sorted(pathlib.Path(sys.argv[1]).glob('*/*.jpeg'))
        grays = [decode_image(p.read_bytes(), p.name) for p in photos]
        alone = [sorted(detect_faces(g).tolist()) for g in grays]
        for _ in range(2):
            with ThreadPoolExecutor(8) as pool:
                together = list(pool.map(lambda g: sorted(detect_faces(g).tolist()),
                                         grays * 2))
            assert together == alone * 2, 'threads found other faces'
        print(len(grays))
    """)
    done = subprocess.run([sys.executable, '-c', code, str(faces_data)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert int(done.stdout) > 50
