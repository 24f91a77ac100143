"""Shared fixtures for the unit tests."""

import os
import pathlib
import re

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_FACES = REPO.parent / "shared" / "data" / "faces"


@pytest.fixture(scope="session")
def faces_data():
    """The face sample set: ``$DATA``, else ``<repo>/../shared/data/faces``.

    A missing data set is an error, not a skip: a suite that silently skips
    its accuracy tests proves nothing.
    """
    root = pathlib.Path(os.environ.get("DATA") or DEFAULT_FACES)
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise FileNotFoundError(
            f"face sample set not found at {root}: set DATA to the directory "
            "holding train/, test/ and video/ (see shared/data/faces/README.md)"
        )
    return root


def face_label(path):
    """Person in a sample photo: ``obama14.jpeg`` and ``obama_test1.jpeg`` -> ``obama``."""
    return re.sub(r"\d", "", path.stem.split("_")[0])


@pytest.fixture(scope="session")
def faces_training(faces_data):
    """The embedding of every training photo's face, and its person."""
    from mlstorlets.sandbox.faces.tasks import photo_face

    rows, labels = [], []
    for path in sorted((faces_data / "train").glob("*.jpeg")):
        _, face, embedding = photo_face(path.read_bytes(), path.name)
        assert face is not None, path.name
        rows.append(embedding)
        labels.append(face_label(path))
    return np.stack(rows), np.array(labels)


@pytest.fixture(scope="session")
def faces_model(faces_training):
    """A recognizer trained in memory on the whole training set."""
    from mlstorlets.sandbox.faces.model import train

    X, y = faces_training
    return train(X, y)
