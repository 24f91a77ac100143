"""Training, model files and recognition, measured on the face sample set."""

import io
import zipfile

import numpy as np
import pytest
import skops.io
from conftest import face_label
from sklearn.linear_model import LogisticRegression

from mlstorlets.sandbox import faces
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces.model import (
    dump_model,
    load_model,
    load_shard,
    pack_shard,
    train_incremental,
)


def _score(model, faces_data):
    """Test photos named correctly; a photo without a face counts as wrong."""
    right = 0
    for path in sorted((faces_data / "test").glob("*.jpeg")):
        try:
            result = faces.recognize_image(model, path.read_bytes(), path.name)
        except ObjectError:
            continue
        right += result["name"] == face_label(path)
    return right


def test_model_trained_in_memory_names_7_of_8_test_photos(faces_model, faces_data):
    assert faces_model.classes == ("bibi", "merkel", "obama", "trump")
    assert _score(faces_model, faces_data) >= 7


def _shards(X, y, size):
    # File order groups rows by person: the hardest order for SGD.
    return [
        (f"shards/{i:03d}.npz", pack_shard(X[i : i + size], y[i : i + size]))
        for i in range(0, len(y), size)
    ]


def test_incremental_training_over_shards_names_7_of_8(faces_training, faces_model, faces_data):
    X, y, spec = faces_training
    shards = _shards(X, y, 32)
    model = train_incremental(shards, sorted(set(y)), spec, epochs=20)
    assert type(model.estimator) is type(faces_model.estimator)
    assert model.classes == faces_model.classes and model.n_samples == len(y)
    assert _score(model, faces_data) >= 7


def test_incremental_training_reads_shards_from_a_callable(faces_training):
    X, y, spec = faces_training
    shards = _shards(X, y, 64)
    reads = []

    def fetch():
        reads.append(1)
        return iter(shards)

    model = train_incremental(fetch, sorted(set(y)), spec, epochs=3)
    assert len(reads) == 4  # the scaler pass and three epochs
    assert (model.estimator.predict(X) == y).mean() > 0.9


def test_incremental_training_refuses_a_one_shot_generator(faces_training):
    X, y, spec = faces_training
    with pytest.raises(TypeError, match="re-iterable"):
        train_incremental((s for s in _shards(X, y, 64)), sorted(set(y)), spec)


def test_incremental_training_names_a_shard_with_foreign_labels(faces_training):
    X, y, spec = faces_training
    shards = _shards(X, y, 64)
    # Rows come sorted by person: trump is only in the last shard.
    with pytest.raises(ObjectError, match="shards/128.npz: labels not among the classes: trump"):
        train_incremental(shards, ["bibi", "merkel", "obama"], spec, epochs=1)


def test_shard_round_trip_and_bad_shards(faces_training):
    X, y, _ = faces_training
    X2, y2 = load_shard(pack_shard(X[:5], y[:5]), "s")
    assert X2.dtype == np.float32 and np.array_equal(X2, X[:5]) and list(y2) == list(y[:5])
    buffer = io.BytesIO()
    np.savez(buffer, X=X[:5], y=np.array(list(y[:5]), dtype=object))
    for data in (b"", b"garbage", buffer.getvalue()):
        with pytest.raises(ObjectError, match="shards/bad"):
            load_shard(data, "shards/bad")


def test_shard_whose_header_overstates_its_size_is_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)}
        )
        archive.writestr("X.npy", b"\x93NUMPY\x01\x00" + header.getvalue()[8:])
        archive.writestr("y.npy", b"")
    with pytest.raises(ObjectError, match="more data than it holds"):
        load_shard(buffer.getvalue(), "shards/liar")


def test_model_file_round_trip_gives_identical_predictions(faces_model, faces_training):
    X, _, spec = faces_training
    data = dump_model(faces_model, spec, faces_model.classes, faces_model.n_samples)
    assert data[:2] == b"PK"
    loaded = load_model(data, "models/faces")
    assert loaded.spec == spec and loaded.classes == faces_model.classes
    assert loaded.n_samples == faces_model.n_samples
    assert np.array_equal(loaded.estimator.predict_proba(X), faces_model.estimator.predict_proba(X))


def test_model_metadata_is_small_and_complete(faces_model):
    meta = faces_model.metadata
    assert meta["classes"] == '["bibi","merkel","obama","trump"]'
    assert meta["samples"] == str(faces_model.n_samples)
    assert faces.validate_spec(__import__("json").loads(meta["feature-spec"])) == faces_model.spec
    assert sum(len(k) + len(v) for k, v in meta.items()) < 1024
    assert all(len(v) <= 256 for v in meta.values())


class Payload:
    """Stands for any type an attacker would like a loader to instantiate."""


@pytest.mark.parametrize(
    "data, reason",
    [
        (__import__("pickle").dumps({"estimator": None}), "pickle"),
        (np.random.default_rng(3).bytes(4096), "not a skops"),
        (b"", "empty"),
    ],
)
def test_pickles_and_garbage_are_refused(data, reason):
    with pytest.raises(ObjectError, match=reason) as caught:
        load_model(data, "models/evil")
    assert caught.value.name == "models/evil"


def test_model_file_with_untrusted_types_is_refused(faces_model, faces_training):
    X, y, spec = faces_training
    # skops itself trusts every scikit-learn estimator; the face loader
    # trusts only its own pipeline.
    other = LogisticRegression(max_iter=50).fit(X[::8], y[::8])
    for intruder in (other, Payload()):
        bundle = {
            "format": "mlstorlets.sandbox.faces.model",
            "version": 1,
            "estimator": intruder,
            "spec": spec,
            "classes": list(faces_model.classes),
            "n_samples": 1,
        }
        with pytest.raises(ObjectError, match="untrusted types") as caught:
            load_model(skops.io.dumps(bundle), "models/evil")
        assert "models/evil" in str(caught.value)


def test_model_file_inconsistent_with_its_spec_is_refused(faces_model):
    data = dump_model(faces_model, faces.default_spec(size=96), faces_model.classes, 1)
    with pytest.raises(ObjectError, match="feature count"):
        load_model(data, "models/odd")


def test_low_confidence_faces_are_unknown(faces_model, faces_data):
    data = (faces_data / "test" / "obama_test1.jpeg").read_bytes()
    result = faces.recognize_image(faces_model, data, "o.jpeg")
    assert result["name"] == "obama" and 0.5 <= result["confidence"] <= 1
    strict = faces.recognize_image(
        faces_model, data, "o.jpeg", threshold=result["confidence"] + 1e-6
    )
    assert strict["name"] == faces.UNKNOWN and strict["box"] == result["box"]
