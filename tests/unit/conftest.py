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
    """Feature rows of every training photo (mirrored too) and the spec."""
    from mlstorlets.sandbox import faces

    spec = faces.default_spec()
    rows, labels = [], []
    for path in sorted((faces_data / "train").glob("*.jpeg")):
        crop, _ = faces.extract_face(
            path.read_bytes(), path.name, size=spec["size"], margin=spec["margin"]
        )
        block = faces.training_features(crop, spec)
        rows.append(block)
        labels += [face_label(path)] * len(block)
    return np.concatenate(rows), np.array(labels), spec


@pytest.fixture(scope="session")
def faces_model(faces_training):
    """A recognizer trained in memory on the whole training set."""
    from mlstorlets.sandbox import faces

    X, y, spec = faces_training
    return faces.train(X, y, spec)
