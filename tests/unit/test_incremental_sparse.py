"""Sparse objects (``scipy.sparse.save_npz``) read as the estimators'
mini-batches, bounded and checked, and trained on as locally."""

import io
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp
from estimator_data import BATCH, max_difference

from mlstorlets.client.incremental import MultinomialNB, SGDClassifier
from mlstorlets.client.stores import Stores
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.incremental.data import DataOptions, iter_batches


def _npz(matrix, **extra):
    buffer = io.BytesIO()
    sp.save_npz(buffer, matrix)
    if extra:
        with zipfile.ZipFile(buffer, "a") as archive:
            for key, array in extra.items():
                member = io.BytesIO()
                np.save(member, array)
                archive.writestr(key + ".npy", member.getvalue())
    return buffer.getvalue()


def _counts(seed, rows=60, columns=30):
    rng = np.random.RandomState(seed)
    X = sp.random(rows, columns, density=0.1, format="csr", random_state=rng) * 10
    X.data = np.round(X.data)
    y = (np.asarray(X.sum(axis=1)).ravel() > 10).astype(np.float64)
    return X, y


def _read(data, **options):
    return list(iter_batches(io.BytesIO(data), DataOptions(**options), "c/sparse.npz"))


def test_labels_in_the_last_column_or_beside_the_matrix():
    X, y = _counts(0)
    with_label = sp.hstack([X, sp.csr_matrix(y[:, None])], format="csc")
    for data in (_npz(with_label), _npz(X, y=y)):
        batches = _read(data, batch_size=25)
        assert [b.X.shape for b in batches] == [(25, 30), (25, 30), (10, 30)]
        assert all(sp.issparse(b.X) for b in batches)
        assert (sp.vstack([b.X for b in batches]) != X).nnz == 0
        np.testing.assert_array_equal(np.concatenate([b.y for b in batches]), y)
    unlabelled = _read(_npz(X), label_column=None)
    assert unlabelled[0].y is None and unlabelled[0].X.shape == (60, 30)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda m: m.tocoo(), "a CSR or CSC matrix"),
        (lambda m: _bad_indices(m), "malformed sparse matrix"),
        (lambda m: _with_nan(m), "feature is NaN or infinite"),
    ],
)
def test_a_bad_sparse_object_is_refused_by_name(damage, message):
    X, _ = _counts(1)
    with pytest.raises(ObjectError, match="c/sparse.npz: .*" + message):
        _read(_npz(damage(X)), label_column=None)


def _bad_indices(m):
    m = m.copy()
    m.indices[0] = 10**6
    return m


def _with_nan(m):
    m = m.copy()
    m.data[3] = np.nan
    return m


def test_a_sparse_matrix_over_the_feature_limit_is_refused():
    X, _ = _counts(2)
    with pytest.raises(ObjectError, match="over max_features=10"):
        _read(_npz(X), label_column=None, max_features=10)


@pytest.mark.parametrize("cls", [SGDClassifier, MultinomialNB])
def test_trained_on_sparse_objects_as_locally(tmp_path, cls):
    parts = [_counts(seed) for seed in (3, 4)]
    uris = []
    for i, (X, y) in enumerate(parts):
        path = tmp_path / ("part%d.npz" % i)
        path.write_bytes(_npz(X, y=y))
        uris.append("file://%s" % path)
    kwargs = {"random_state": 0} if cls is SGDClassifier else {}
    est = cls(**kwargs).remote_partial_fit(
        uris,
        classes=[0.0, 1.0],
        stores=Stores(environ={}),
        data_options={"batch_size": BATCH},
    )
    local = cls(**kwargs).to_sklearn()
    for X, y in parts:
        for start in range(0, X.shape[0], BATCH):
            local.partial_fit(
                X[start : start + BATCH], y[start : start + BATCH], classes=[0.0, 1.0]
            )
    assert max_difference(est.to_sklearn(), local) <= 1e-12
