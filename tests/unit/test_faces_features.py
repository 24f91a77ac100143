"""Feature spec and HOG vectors."""

import json

import numpy as np
import pytest

from mlstorlets.sandbox.faces.features import (
    default_spec,
    feature_length,
    features,
    spec_json,
    training_features,
    validate_spec,
)


def test_hog_vector_has_the_spec_length_and_is_deterministic():
    spec = default_spec(size=64)
    crop = np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)
    vector = features(crop, spec)
    assert vector.dtype == np.float32 and vector.shape == (feature_length(spec),)
    # 7x7 blocks of 2x2 cells of 9 bins.
    assert feature_length(spec) == 7 * 7 * 4 * 9
    assert np.array_equal(vector, features(crop.copy(), dict(spec)))


def test_mirrored_training_row_is_the_mirrored_face():
    spec = default_spec()
    crop = np.random.default_rng(2).integers(0, 256, (64, 64), dtype=np.uint8)
    rows = training_features(crop, spec)
    assert rows.shape == (2, feature_length(spec))
    assert np.array_equal(rows[0], features(crop, spec))
    assert np.array_equal(rows[1], features(np.ascontiguousarray(crop[:, ::-1]), spec))
    assert training_features(crop, spec, mirror=False).shape == (1, feature_length(spec))


def test_spec_round_trips_through_compact_json():
    spec = default_spec(size=96)
    text = spec_json(spec)
    assert " " not in text and len(text) < 200
    assert validate_spec(json.loads(text)) == spec


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "lbp"},
        {"size": 10000},
        {"size": "64"},
        {"equalize": 1},
        {"margin": 3.0},
        {"block": 20},  # not a multiple of the cell
        {"extra": 1},
    ],
)
def test_invalid_specs_are_refused(change):
    with pytest.raises(ValueError):
        validate_spec({**default_spec(), **change})


def test_crop_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="64x64"):
        features(np.zeros((32, 32), np.uint8), default_spec(size=64))
