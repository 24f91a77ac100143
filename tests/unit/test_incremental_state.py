"""The state codec of the estimator storlet: skops, validated, never pickle."""

import io
import pickle
import zipfile

import numpy as np
import pytest
import skops.io as sio
from sgd_fakes import FakeInput
from sklearn.base import is_classifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils._test_common.instance_generator import _get_expected_failed_checks
from sklearn.utils.estimator_checks import estimator_checks_generator
from sklearn.utils.validation import check_is_fitted
from support import engine_parameter

from mlstorlets.client import incremental
from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.incremental import state, training
from mlstorlets.sandbox.incremental.training import run

ESTIMATORS = [
    incremental.SGDClassifier(),
    incremental.SGDRegressor(),
    incremental.MLPClassifier(),
    incremental.MLPRegressor(),
    incremental.MiniBatchKMeans(n_clusters=2, n_init=1),
    incremental.MultinomialNB(),
]


def expected_failures(estimator):
    """The checks scikit-learn's own estimator is known to fail (its own list)."""
    return _get_expected_failed_checks(estimator.to_sklearn())


# Checks that cannot apply, which scikit-learn would skip: array-API input
# needs an array library besides numpy (none is a dependency), and the
# multilabel decision_function check needs a decision_function
# (MLPClassifier has none).
NOT_APPLICABLE = {
    "check_array_api_input",
    "check_classifiers_multilabel_output_format_decision_function",
}


def _check_name(check):
    return getattr(check, "func", check).__name__


def scikit_learn_checks():
    for estimator in ESTIMATORS:
        for item in estimator_checks_generator(
            estimator, expected_failed_checks=expected_failures(estimator), mark="xfail"
        ):
            # An expected failure comes as a pytest.param marked xfail.
            (est, check), marks = getattr(item, "values", item), getattr(item, "marks", ())
            name = _check_name(check)
            if name in NOT_APPLICABLE and not (
                name.endswith("decision_function") and hasattr(est, "decision_function")
            ):
                continue
            yield pytest.param(
                est, check, marks=marks, id="%s-%s" % (type(estimator).__name__, name)
            )


@pytest.mark.parametrize("estimator, check", scikit_learn_checks())
def test_scikit_learn_checks(estimator, check):
    """Each estimator of the suite is a scikit-learn estimator as its base is."""
    check(estimator)


def fitted(est, seed=0):
    rng = np.random.RandomState(seed)
    X, y = rng.rand(30, 4), rng.randint(0, 3, 30)
    kwargs = {"classes": [0, 1, 2]} if is_classifier(est) else {}
    if type(est).__name__ == "MiniBatchKMeans":
        return est.partial_fit(X)
    return est.partial_fit(X, y, **kwargs)


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_a_state_round_trips_exactly_and_the_same_state_is_the_same_bytes(est):
    est = fitted(est.to_sklearn())
    blob = state.dumps(est)
    assert blob == state.dumps(est)
    back = state.loads(blob, kind=state.kind_of(est))
    assert type(back) is type(est)
    check_is_fitted(back)
    X = np.random.RandomState(1).rand(5, 4)
    np.testing.assert_array_equal(back.predict(X), est.predict(X))


def test_a_state_of_a_subclass_is_scikit_learns_own_class():
    est = fitted(incremental.SGDClassifier(random_state=0))
    back = state.loads(state.dumps(est))
    assert type(back).__module__.startswith("sklearn.")
    plain = est.to_sklearn()
    assert type(plain) is type(back) and not hasattr(plain, "remote_fit")


def test_an_untrusted_type_is_refused_and_never_run():
    evil = FunctionTransformer(func=print)
    with pytest.raises(ObjectError, match="untrusted types"):
        state.loads(sio.dumps(evil))
    with pytest.raises(ObjectError, match="not a readable state"):
        state.loads(pickle.dumps(LogisticRegression()))
    with pytest.raises(ObjectError, match="not an incremental estimator"):
        state.loads(sio.dumps(LogisticRegression()))
    with pytest.raises(ObjectError, match="where a SGDRegressor was expected"):
        state.loads(
            state.dumps(incremental.SGDClassifier()), kind=state.kind_of(incremental.SGDRegressor())
        )


def test_a_state_with_nan_or_bad_parameters_or_over_its_bound_is_refused():
    est = fitted(incremental.SGDRegressor().to_sklearn())
    est.coef_[0] = np.nan
    with pytest.raises(ObjectError, match="coef_ holds NaN"):
        state.loads(state.dumps(est))
    est = incremental.SGDRegressor().to_sklearn()
    est.alpha = -1.0
    with pytest.raises(ObjectError, match="invalid hyper-parameters"):
        state.loads(state.dumps(est))
    with pytest.raises(ObjectError, match="over max_state_bytes=100"):
        state.loads(state.dumps(incremental.SGDRegressor()), limit=100)


def test_a_payload_carries_classes_weights_and_a_job_and_is_bounded():
    blob = state.pack(
        b"abc",
        classes=np.array(["a", "b"]),
        sample_weight=[1.0, 2.0],
        job=[["swift://c/o", 1.0, 5]],
    )
    payload = state.unpack(blob)
    assert payload.state == b"abc" and list(payload.classes) == ["a", "b"]
    assert list(payload.sample_weight) == [1.0, 2.0] and payload.job == [("swift://c/o", 1.0, 5)]
    with pytest.raises(ObjectError, match="over max_array_bytes"):
        state.unpack(state.pack(bytes(1000)), limit=500)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("other.npy", b"")
    with pytest.raises(ObjectError, match="unexpected payload member 'other.npy'"):
        state.unpack(out.getvalue())
    with pytest.raises(ObjectError, match="sample_weight must be"):
        state.unpack(state.pack(b"", sample_weight=[-1.0]))


def test_the_protocol_state_codec_is_exact_chunked_and_budgeted():
    blob = bytes(range(256)) * 40
    params = protocol.state_parameters(blob)
    assert int(params["state_parts"]) == 4  # 13656 characters
    assert all(len(v) <= protocol.STATE_CHUNK for k, v in params.items() if k != "state_parts")
    assert protocol.read_state_parameters(params, 1 << 20) == blob
    assert protocol.state_parameters(blob, budget=1000) is None
    assert protocol.read_state_parameters({}, 10) is None
    with pytest.raises(ValueError, match="over 100"):
        protocol.read_state_parameters(params, 100)
    with pytest.raises(ValueError, match="bad state parameters"):
        protocol.read_state_parameters({"state_parts": "2", "state_0": "AAAA"}, 1 << 20)
    # through the real parameter headers: quoted and unquoted as the engine does
    headers = protocol.parameter_headers(params)
    back = dict(engine_parameter(v) for v in headers.values())
    assert protocol.read_state_parameters(back, 1 << 20) == blob


def test_the_storlet_function_predicts_and_refuses_without_a_state():
    est = fitted(incremental.SGDClassifier(random_state=0).to_sklearn())
    X = np.random.RandomState(2).rand(7, 4)
    data = "".join(",".join(repr(float(v)) for v in row) + "\n" for row in X).encode()
    params = dict(
        protocol.state_parameters(state.pack(state.dumps(est))),
        op="predict",
        label_column="none",
        source="c/new.csv",
    )
    metadata, body = run([FakeInput(data)], params)
    np.testing.assert_array_equal(np.load(io.BytesIO(body), allow_pickle=False), est.predict(X))
    with pytest.raises(ObjectError, match="c/new.csv: no model state"):
        run([FakeInput(data)], {"op": "predict", "source": "c/new.csv"})
    with pytest.raises(ObjectError, match="unknown op 'fit'"):
        run([FakeInput(data)], {"op": "fit"})
    assert training.final_score(training.new_sums(est) | {"weight_sum": 2.0, "correct": 1.0}) == 0.5
