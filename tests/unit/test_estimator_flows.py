"""The remote estimators' flows (weights, epochs, early stopping, history,
seeded order) over file:// objects, run by the client runner: the same
code as in the cluster, whose own tests
(tests/functional/test_estimators_cluster.py) keep what needs the cluster."""

import numpy as np
import pytest
from estimator_data import BATCH, N, csv_bytes, local_partial_fit, make_parts, max_difference

from mlstorlets.client.incremental import MultinomialNB, SGDClassifier, SGDRegressor
from mlstorlets.client.stores import Stores
from mlstorlets.sandbox.errors import ObjectError


@pytest.fixture
def stores():
    # Nothing configured: every URI is reached here.
    return Stores(environ={})


def write(folder, parts, prefix="train/"):
    """The parts as CSV files under ``folder/prefix``; their URIs."""
    (folder / prefix).mkdir(parents=True, exist_ok=True)
    uris = []
    for i, (X, y) in enumerate(parts):
        path = folder / prefix / ("part%d.csv" % i)
        path.write_bytes(csv_bytes(X, y))
        uris.append("file://%s" % path)
    return uris


def test_sample_weight_as_an_array_and_per_object(tmp_path, stores):
    parts = make_parts(3, n_parts=2, classifier=False)
    uris = write(tmp_path, parts)
    w0 = np.random.RandomState(0).rand(N)
    est = SGDRegressor(random_state=0)
    est.remote_partial_fit(
        uris[0], sample_weight=w0, stores=stores, data_options={"batch_size": BATCH}
    )
    assert (
        max_difference(est.to_sklearn(), local_partial_fit(est, parts[:1], weights=[w0])) <= 1e-12
    )
    est2 = SGDRegressor(random_state=0)
    est2.remote_partial_fit(
        uris,
        sample_weight={uris[0]: w0, uris[1]: 3.0},
        stores=stores,
        data_options={"batch_size": BATCH},
    )
    local2 = local_partial_fit(est2, parts, weights=[w0, np.full(N, 3.0)])
    assert max_difference(est2.to_sklearn(), local2) <= 1e-12
    with pytest.raises(ObjectError, match="40 rows for 41 sample weights"):
        SGDRegressor().remote_partial_fit(uris[0], sample_weight=np.ones(N + 1), stores=stores)
    with pytest.raises(ValueError, match="one object"):
        SGDRegressor().remote_partial_fit(uris, sample_weight=np.ones(N), stores=stores)


def test_remote_fit_early_stopping_verbose_history_and_seeded_order(tmp_path, stores, capsys):
    write(tmp_path, make_parts(4, n_parts=5))
    src = "file://%s/train/" % tmp_path

    def fit():
        est = SGDClassifier(
            random_state=3,
            early_stopping=True,
            validation_fraction=0.2,
            n_iter_no_change=2,
            tol=10.0,
            max_iter=20,
            verbose=1,
        )
        return est.remote_fit(src, stores=stores, progress=True)

    est = fit()
    out = capsys.readouterr()
    # tol=10 on an accuracy never improves enough: stops after 1 + 2 epochs
    assert [r["epoch"] for r in est.remote_history_] == [1, 2, 3]
    assert all(0 <= r["validation_score"] <= 1 for r in est.remote_history_)
    assert len(est.remote_validation_objects_) == 1
    assert est.remote_history_[0]["n_samples"] == 4 * N
    assert out.out.count("-- Epoch") == 3 and "validation score" in out.out
    assert "epoch 1" in out.err  # the progress bars
    assert list(est.classes_) == [0, 1, 2]
    again = fit()
    # seeded: same held-out object, same order, same model
    assert again.remote_validation_objects_ == est.remote_validation_objects_
    assert max_difference(again.to_sklearn(), est.to_sklearn()) == 0.0


def test_remote_fit_progressive_score_and_epochs(tmp_path, stores):
    write(tmp_path, make_parts(5, n_parts=2, classifier=False))
    est = SGDRegressor(random_state=0, max_iter=4, tol=None)
    est.remote_fit("file://%s/train/" % tmp_path, stores=stores)
    assert len(est.remote_history_) == 4
    nb = MultinomialNB()
    write(tmp_path, make_parts(6, n_parts=2), prefix="cls/")
    nb.remote_fit("file://%s/cls/" % tmp_path, stores=stores)
    # one epoch: counts are not doubled
    assert nb.class_count_.sum() == 2 * N
    sgd = SGDRegressor(random_state=0, max_iter=30, tol=0.05, n_iter_no_change=2)
    sgd.remote_fit("file://%s/train/" % tmp_path, stores=stores)
    assert all(r["train_score"] is not None for r in sgd.remote_history_[1:])
    assert len(sgd.remote_history_) < 30


def test_a_pass_runs_one_call_per_object_on_the_client(tmp_path, stores):
    uris = write(tmp_path, make_parts(7))
    est = SGDClassifier(random_state=0)
    est.remote_partial_fit(
        uris, classes=[0, 1, 2], stores=stores, data_options={"batch_size": BATCH}
    )
    assert (
        max_difference(est.to_sklearn(), local_partial_fit(est, make_parts(7), classes=[0, 1, 2]))
        <= 1e-12
    )


def test_remote_predict_writes_npy_objects_named_so(tmp_path, stores):
    parts = make_parts(6, n_parts=2)
    uris = write(tmp_path, parts)
    est = SGDClassifier(random_state=0).remote_partial_fit(uris, classes=[0, 1, 2], stores=stores)
    summary = est.remote_predict(
        "file://%s/train/" % tmp_path,
        "file://%s/pred/" % tmp_path,
        stores=stores,
        data_options={"label_column": -1},
    )
    assert summary.ok and sorted(summary.outputs.values()) == [
        "file://%s/pred/part%d.npy" % (tmp_path, i) for i in range(2)
    ]
    got = np.load(tmp_path / "pred" / "part1.npy", allow_pickle=False)
    np.testing.assert_array_equal(got, est.predict(parts[1][0]))
    store, uri = stores.open("file://%s/pred/part1.npy" % tmp_path)
    assert store.head(uri.key).headers.get("Content-Type") == "application/octet-stream"


def test_remote_predict_resumes_and_fails_a_bad_object_alone(tmp_path, stores):
    parts = make_parts(7, n_parts=2)
    uris = write(tmp_path, parts)
    (tmp_path / "new").mkdir()
    for i, (X, _) in enumerate(parts):
        (tmp_path / "new" / ("part%d.csv" % i)).write_bytes(csv_bytes(X))
    (tmp_path / "new" / "bad.csv").write_bytes(b"1,2,x\n")
    est = SGDClassifier(random_state=0).remote_partial_fit(uris, classes=[0, 1, 2], stores=stores)
    src, dest = "file://%s/new/" % tmp_path, "file://%s/pred/" % tmp_path
    first = est.remote_predict(src, dest, stores=stores)
    assert sorted(first.done) == ["file://%s/new/part%d.csv" % (tmp_path, i) for i in range(2)]
    ((name, reason),) = first.failed
    assert name == "file://%s/new/bad.csv" % tmp_path and "non-numeric" in reason
    assert not (tmp_path / "pred" / "bad.npy").exists()
    again = est.remote_predict(src, dest, stores=stores)
    assert len(again.skipped) == 2 and not again.done and len(again.failed) == 1
    # Another model is another run: every output is made again.
    other = SGDClassifier(random_state=1).remote_partial_fit(uris, classes=[0, 1, 2], stores=stores)
    assert len(other.remote_predict(src, dest, stores=stores).done) == 2
