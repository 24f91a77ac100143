import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from mlstorlets.client.linear_model import SGDClassifier, SGDRegressor
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.sgd import state


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n_classes=st.integers(2, 4),
    d=st.integers(1, 6),
    average=st.sampled_from([False, True, 5]),
    loss=st.sampled_from(["hinge", "log_loss", "perceptron", "squared_hinge"]),
)
def test_classifier_round_trip_changes_no_prediction(seed, n_classes, d, average, loss):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(30, d))
    y = rng.randint(n_classes, size=30)
    est = SGDClassifier(loss=loss, average=average, random_state=seed)
    est.partial_fit(X, y, classes=np.arange(n_classes))
    back = state.loads(state.dumps(est)).build()
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    np.testing.assert_array_equal(back.decision_function(X), est.decision_function(X))
    est.partial_fit(X, y)
    back.partial_fit(X, y)
    np.testing.assert_array_equal(back.coef_, est.coef_)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), d=st.integers(1, 6), average=st.booleans())
def test_regressor_round_trip_changes_no_prediction(seed, d, average):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(20, d))
    y = rng.normal(size=20)
    est = SGDRegressor(average=average, random_state=seed).partial_fit(X, y)
    back = SGDRegressor()
    state.loads(state.dumps(est)).apply(back)
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    assert back.get_params()["average"] == average


def test_get_set_params_clone_keep_remote_parameters():
    conn = object()
    est = SGDClassifier(alpha=0.5, connection=conn, storlet="x.py")
    params = est.get_params()
    assert params["connection"] is conn and params["storlet"] == "x.py"
    assert set(params) - {"connection", "storlet", "objects_per_call"} == set(
        state.sklearn_param_names("SGDClassifier")
    )
    assert clone(est).get_params()["alpha"] == 0.5
    est.set_params(storlet="y.py")
    assert est.storlet == "y.py"


def _rewrite_header(blob, change):
    (hlen,) = struct.unpack_from("<I", blob, 6)
    header = json.loads(blob[10 : 10 + hlen])
    change(header)
    text = json.dumps(header).encode()
    return blob[:6] + struct.pack("<I", len(text)) + text + blob[10 + hlen :]


def _fitted_blob():
    return state.dumps(
        SGDClassifier(random_state=0).partial_fit([[0.0, 1.0], [1.0, 0.0]], [0, 1], classes=[0, 1])
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda h: h.update(version=2), "version"),
        (lambda h: h["params"].update(bogus=1), "unknown"),
        (lambda h: h["params"].update(loss="nope"), "hyper-parameters"),
        (lambda h: h["arrays"][0].update(shape=[3, 2]), "truncated|trailing|shape"),
        (lambda h: h.update(n_features_in_=3), "shape"),
        (lambda h: h.update(classes={"dtype": "int64", "values": [1, 0]}), "sorted"),
        (lambda h: h.update(t_=0), "t_"),
    ],
)
def test_invalid_states_are_refused(change, message):
    with pytest.raises(ObjectError, match=message):
        state.loads(_rewrite_header(_fitted_blob(), change), name="s")


def test_non_finite_and_truncated_and_pickle_are_refused():
    blob = _fitted_blob()
    with pytest.raises(ObjectError, match="NaN"):
        state.loads(blob[:-8] + np.array([np.inf]).tobytes())
    with pytest.raises(ObjectError, match="truncated"):
        state.loads(blob[:-4])
    with pytest.raises(ObjectError, match="magic"):
        state.loads(b"\x80\x04" + blob)


def test_size_formula_matches_actual_size():
    for d in (1, 100, 1000):
        est = SGDRegressor().partial_fit(np.ones((2, d)), [0.0, 1.0])
        actual = len(state.dumps(est))
        assert abs(actual - state.size(d)) < 1200
