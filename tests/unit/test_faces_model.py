"""The recognizer over embeddings: accuracy, open set, safe model files."""

import io
import json
import pickle
import zipfile

import numpy as np
import pytest
from conftest import face_label

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces.model import (
    UNKNOWN,
    calibrate,
    dump_model,
    load_model,
    load_shard,
    pack_shard,
    recognize,
    train,
)
from mlstorlets.sandbox.faces.tasks import photo_face


def _test_faces(faces_data):
    found = []
    for path in sorted((faces_data / "test").glob("*.jpeg")):
        _, face, embedding = photo_face(path.read_bytes(), path.name)
        found.append((face_label(path), embedding))
    return found


def test_the_model_names_the_8_test_photos(faces_model, faces_data):
    assert faces_model.classes == ("bibi", "merkel", "obama", "trump")
    named = [(label, recognize(faces_model, e)[0]) for label, e in _test_faces(faces_data)]
    assert all(label == name for label, name in named), named


def test_a_person_left_out_of_training_comes_back_unknown(faces_training, faces_data):
    X, y = faces_training
    model = train(X[y != "obama"], y[y != "obama"])
    for label, embedding in _test_faces(faces_data):
        name, confidence, distance = recognize(model, embedding)
        if label == "obama":
            assert name == UNKNOWN and distance > model.threshold and confidence < 0.5
        else:
            assert name == label and confidence >= 0.5


def test_the_threshold_is_calibrated_between_within_and_between_distances():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (5, 128))
    centres *= 0.45 / np.linalg.norm(centres, axis=1, keepdims=True)  # 0.6 apart or so
    X = np.concatenate([c + rng.normal(0, 0.15 / np.sqrt(128), (20, 128)) for c in centres])
    labels = np.repeat(np.arange(5), 20)
    threshold, calibration = calibrate(X, labels)
    assert calibration["within"][2] < threshold < calibration["between"][0]
    assert calibration["rejected"] == 0 and calibration["accepted"] == 0
    # People closer together pull the threshold down with them.
    lower, _ = calibrate(X * 0.8, labels)
    assert lower < threshold


def test_copies_of_a_photo_do_not_shrink_the_threshold(faces_training):
    X, y = faces_training
    once = train(X, y)
    thrice = train(np.concatenate([X, X, X]), np.concatenate([y, y, y]))
    assert thrice.threshold == once.threshold


def test_one_face_a_person_falls_back_to_the_customary_threshold():
    X = np.eye(128, dtype=np.float32)[:3]
    model = train(X, ["a", "b", "c"])
    assert model.threshold == 0.6 and model.calibration["rule"].startswith("default")


@pytest.mark.parametrize("labels, found", [(["obama"] * 3, "only 'obama'"), ([], "none")])
def test_training_needs_two_people(labels, found):
    X = np.ones((len(labels), 128), np.float32)
    with pytest.raises(ObjectError, match="at least two people, found " + found):
        train(X, np.array(labels, dtype=str))


def test_training_a_thousand_faces_takes_the_linear_svm_no_time(faces_training):
    X, y = faces_training
    rng = np.random.default_rng(0)
    big = np.repeat(X, 11, axis=0) + rng.normal(0, 0.01, (11 * len(X), 128)).astype(np.float32)
    model = train(big, np.repeat(y, 11))
    assert model.n_samples == 11 * len(X)
    assert (model.predict_index(X.astype(np.float64)) == np.searchsorted(model.classes, y)).all()


def test_model_file_round_trip(faces_model, faces_training):
    X, _ = faces_training
    data = dump_model(faces_model)
    assert data[:2] == b"PK"
    loaded = load_model(data, "models/faces.npz")
    assert loaded.classes == faces_model.classes and loaded.threshold == faces_model.threshold
    assert loaded.calibration == faces_model.calibration
    assert [recognize(loaded, x) for x in X[:10]] == [recognize(faces_model, x) for x in X[:10]]


def test_model_metadata_is_small_and_complete(faces_model):
    meta = faces_model.metadata
    assert meta["classes"] == '["bibi","merkel","obama","trump"]'
    assert meta["samples"] == str(faces_model.n_samples)
    assert float(meta["threshold"]) == pytest.approx(faces_model.threshold, abs=1e-4)
    assert sum(len(k) + len(v) for k, v in meta.items()) < 1024


def _rewrite(data, **changes):
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["meta"].tobytes())
    for key, value in changes.items():
        if key in arrays and key != "meta":
            arrays[key] = value
        else:
            meta[key] = value
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"version": 1}, "unsupported face model version"),
        ({"threshold": -1}, "threshold"),
        ({"classes": ["b", "a", "c", "d"]}, "sorted list"),
        ({"descriptor": "other"}, "model of embeddings"),
        ({"coef": np.ones((3, 128))}, "inconsistent shapes"),
        ({"labels": np.full(96, 7, np.int32)}, "invalid training faces"),
    ],
)
def test_inconsistent_models_are_refused(faces_model, changes, match):
    with pytest.raises(ObjectError, match=match) as caught:
        load_model(_rewrite(dump_model(faces_model), **changes), "models/odd")
    assert caught.value.name == "models/odd"


def test_a_model_holding_objects_is_refused(faces_model):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        with zipfile.ZipFile(io.BytesIO(dump_model(faces_model))) as good:
            for member in good.infolist():
                archive.writestr(member, good.read(member))
        archive.writestr("payload.pkl", pickle.dumps(object()))
    with pytest.raises(ObjectError, match="not a face model of this version"):
        load_model(buffer.getvalue(), "models/evil")
    object_array = _rewrite(dump_model(faces_model))
    with np.load(io.BytesIO(object_array)) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["coef"] = np.array([object()] * 128, dtype=object)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with pytest.raises(ObjectError, match="object arrays are refused"):
        load_model(buffer.getvalue(), "models/evil")


@pytest.mark.parametrize(
    "data, reason",
    [
        (pickle.dumps({"estimator": None}), "pickle"),
        (np.random.default_rng(3).bytes(4096), "not a zip"),
        (b"", "empty"),
    ],
)
def test_pickles_and_garbage_are_refused(data, reason):
    with pytest.raises(ObjectError, match=reason) as caught:
        load_model(data, "models/evil")
    assert caught.value.name == "models/evil"


def test_shard_round_trip_and_bad_shards(faces_training):
    X, y = faces_training
    X2, y2 = load_shard(pack_shard(X[:5], y[:5]), "s")
    assert X2.dtype == np.float32 and np.array_equal(X2, X[:5]) and list(y2) == list(y[:5])
    buffer = io.BytesIO()
    np.savez(buffer, X=X[:5], y=np.array(list(y[:5]), dtype=object))
    for data in (b"", b"garbage", buffer.getvalue()):
        with pytest.raises(ObjectError, match="shards/bad"):
            load_shard(data, "shards/bad")
    with pytest.raises(ObjectError, match="expected embeddings of shape"):
        load_shard(_pack_any(np.ones((2, 64), np.float32), y[:2]), "shards/bad")


def _pack_any(X, y):
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=np.asarray(y, dtype=str))
    return buffer.getvalue()


def test_shard_whose_header_overstates_its_size_is_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)}
        )
        archive.writestr("X.npy", b"\x93NUMPY\x01\x00" + header.getvalue()[8:])
        archive.writestr("y.npy", b"")
    with pytest.raises(ObjectError, match="header declares 4000000000000 bytes of data"):
        load_shard(buffer.getvalue(), "shards/liar")
