"""dlib's detectors, 5-point alignment and embeddings on the sample set."""

import cv2
import numpy as np
import pytest

from mlstorlets.sandbox.faces import embed
from mlstorlets.sandbox.faces.image import decode_image


def _rgb(faces_data, split, name):
    return decode_image((faces_data / split / name).read_bytes(), name, color=True)


def test_every_test_photo_yields_one_face_with_a_unit_scale_embedding(faces_data):
    for path in sorted((faces_data / "test").glob("*.jpeg")):
        rgb = decode_image(path.read_bytes(), path.name, color=True)
        faces = embed.find_faces(rgb)
        assert len(faces) == 1, path.name
        x, y, w, h = faces[0].box
        height, width = rgb.shape[:2]
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
        assert w * h > 0.03 * width * height, path.name
        assert faces[0].shape.num_parts == 5
        vector = embed.describe(rgb, faces[0])
        assert vector.shape == (128,) and vector.dtype == np.float32
        assert 0.5 < np.linalg.norm(vector) < 1.5


def test_same_person_is_nearer_than_another(faces_data):
    def vector(split, name):
        rgb = _rgb(faces_data, split, name)
        return embed.describe(rgb, embed.largest_face(rgb))

    obama = vector("test", "obama_test2.jpeg")
    assert np.linalg.norm(obama - vector("train", "obama3.jpeg")) < 0.6
    assert np.linalg.norm(obama - vector("train", "trump3.jpeg")) > 0.6


def test_a_blank_image_has_no_face():
    assert embed.find_faces(np.full((240, 320, 3), 128, np.uint8)) == []


def test_the_largest_of_several_faces_is_chosen(faces_data):
    face = _rgb(faces_data, "test", "merkel_test2.jpeg")
    small = cv2.resize(face, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    canvas = np.full((face.shape[0], face.shape[1] + small.shape[1] + 20, 3), 255, np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = small
    canvas[:, small.shape[1] + 20 :] = face
    assert len(embed.find_faces(canvas)) == 2
    assert embed.largest_face(canvas).box[0] >= small.shape[1] + 20


def test_the_fallback_detectors_find_a_face(faces_data):
    rgb = _rgb(faces_data, "test", "trump_test1.jpeg")
    for detector in ("hog-upsampled", "cnn"):
        faces = embed.find_faces(rgb, detectors=(detector,))
        assert len(faces) == 1 and faces[0].detector == detector


class _FakeHog:
    """HOG passes that find nothing, with one near miss scoring ``near``."""

    def __init__(self, near):
        self.near = near

    def __call__(self, image, upsample):
        return []

    def run(self, image, upsample, adjust):
        import dlib

        if self.near is None or self.near < adjust:
            return [], [], []
        return [dlib.rectangle(1, 1, 40, 40)], [self.near], [0]


@pytest.mark.parametrize(
    "rule, near, cnn_runs",
    [
        ("auto", None, False),  # nothing face-like: the CNN is not worth it
        ("auto", -embed.NEAR_MISS - 0.1, False),
        ("auto", -embed.NEAR_MISS / 2, True),  # a near miss: the CNN looks
        ("always", None, True),
        ("never", -0.01, False),
    ],
)
def test_the_cnn_runs_by_its_rule(monkeypatch, rule, near, cnn_runs):
    ran = []

    def cnn(image, upsample):
        ran.append(True)
        return []

    def model(kind):
        return {"hog": _FakeHog(near), "cnn": cnn, "landmarks": None}[kind]

    monkeypatch.setattr(embed, "_model", model)
    assert embed.find_faces(np.full((240, 320, 3), 128, np.uint8), cnn=rule) == []
    assert bool(ran) == cnn_runs


def test_an_unknown_cnn_rule_is_refused():
    with pytest.raises(ValueError, match="cnn must be one of"):
        embed.find_faces(np.full((24, 32, 3), 128, np.uint8), cnn="sometimes")


def test_the_chip_is_aligned_and_sized(faces_data):
    rgb = _rgb(faces_data, "train", "bibi3.jpeg")
    face = embed.largest_face(rgb)
    chip = embed.face_chip(rgb, face, size=120)
    assert chip.shape == (120, 120, 3) and chip.dtype == np.uint8
    # Aligned: the face found again in the chip sits in the middle.
    x, y, w, h = embed.largest_face(chip).box
    assert abs((x + w / 2) - 60) < 15


def test_the_weights_come_from_the_installed_package():
    for kind in ("descriptor", "landmarks", "cnn"):
        assert "face_recognition_models" in embed.model_path(kind)
    with pytest.raises(KeyError):
        embed.model_path("shape_predictor_68")


def test_no_weights_travel_in_the_storlet_dependency():
    import io
    import zipfile

    from mlstorlets.client.deploy import library_zip

    data = library_zip()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "mlstorlets/sandbox/faces/embed.py" in names
    assert not [n for n in names if n.endswith(".dat")] and len(data) < 1_000_000
