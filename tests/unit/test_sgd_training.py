import importlib.util
import os

import numpy as np
import pytest
from sgd_fakes import FakeInput, FakeOutput
from sklearn.linear_model import SGDClassifier as SkSGDClassifier
from sklearn.linear_model import SGDRegressor as SkSGDRegressor

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.sgd import state, training

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_storlet():
    spec = importlib.util.spec_from_file_location(
        "sgd_estimator", os.path.join(ROOT, "storlets", "sgd_estimator.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SGDEstimatorStorlet


class Logger:
    def __init__(self):
        self.messages = []

    def info(self, msg):
        self.messages.append(msg)


def csv_bytes(X, y):
    rows = [",".join(repr(float(v)) for v in x) + "," + repr(float(t)) for x, t in zip(X, y)]
    return ("\n".join(rows) + "\n").encode()


def make_batches(seed, n_batches=3, n=40, d=5, classes=(0, 1, 2), regression=False):
    rng = np.random.RandomState(seed)
    coef = rng.normal(size=d)
    out = []
    for _ in range(n_batches):
        X = rng.normal(size=(n, d))
        if regression:
            y = X @ coef + 0.1 * rng.normal(size=n)
        else:
            y = np.asarray(classes)[rng.randint(len(classes), size=n)]
        out.append((X, y))
    return out


def storlet_pass(blob, payloads, extra_params=None, via_resource=False):
    storlet = load_storlet()(Logger())
    for payload in payloads:
        params = {"op": "partial_fit", "name": "c/o"}
        params.update(extra_params or {})
        in_files = [FakeInput(payload)]
        if via_resource:
            in_files.append(FakeInput(blob))
        else:
            params.update(training.encode_state_params(blob, 8000))
        out = FakeOutput()
        storlet(in_files, [out], params)
        assert out.closed and all(f.closed for f in in_files)
        blob = out.body
    return blob


@pytest.mark.parametrize("loss", ["hinge", "log_loss", "modified_huber"])
@pytest.mark.parametrize("classes", [(0, 1), (0, 1, 2)])
@pytest.mark.parametrize("average", [False, True, 30])
def test_classifier_storlet_matches_local_partial_fit(loss, classes, average):
    batches = make_batches(0, classes=classes)
    params = dict(loss=loss, average=average, random_state=7, alpha=0.01)
    local = SkSGDClassifier(**params)
    for X, y in batches:
        local.partial_fit(X, y, classes=np.array(classes))
    blob = state.dumps(SkSGDClassifier(**params), pending_classes=np.array(classes))
    blob = storlet_pass(blob, [csv_bytes(X, y) for X, y in batches])
    remote = state.loads(blob).build()
    np.testing.assert_allclose(remote.coef_, local.coef_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(remote.intercept_, local.intercept_, rtol=0, atol=1e-12)
    assert remote.t_ == local.t_
    # continuing both with the same batches must stay identical (aliases kept)
    for X, y in batches:
        local.partial_fit(X, y)
        remote.partial_fit(X, y)
    np.testing.assert_allclose(remote.coef_, local.coef_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(remote.intercept_, local.intercept_, rtol=0, atol=1e-12)


@pytest.mark.parametrize("average", [False, True])
@pytest.mark.parametrize("via_resource", [False, True])
def test_regressor_storlet_matches_local_partial_fit(average, via_resource):
    batches = make_batches(1, regression=True)
    params = dict(average=average, random_state=3, penalty="elasticnet")
    local = SkSGDRegressor(**params)
    for X, y in batches:
        local.partial_fit(X, y)
    blob = storlet_pass(
        state.dumps(SkSGDRegressor(**params)),
        [csv_bytes(X, y) for X, y in batches],
        via_resource=via_resource,
    )
    remote = state.loads(blob).build()
    np.testing.assert_allclose(remote.coef_, local.coef_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(remote.intercept_, local.intercept_, rtol=0, atol=1e-12)


def test_mini_batches_equal_local_partial_fit_on_the_same_chunks():
    ((X, y),) = make_batches(2, n_batches=1, n=50, regression=True)
    local = SkSGDRegressor(random_state=0)
    for start in range(0, 50, 16):
        local.partial_fit(X[start : start + 16], y[start : start + 16])
    blob = storlet_pass(
        state.dumps(SkSGDRegressor(random_state=0)),
        [csv_bytes(X, y)],
        extra_params={"batch_size": "16"},
    )
    remote = state.loads(blob)
    np.testing.assert_allclose(remote.attrs["coef_"], local.coef_, rtol=0, atol=1e-12)
    assert remote.report["n_batches"] == 4 and remote.report["n_samples"] == 50


def test_objective_report_matches_scikit_learn_terms():
    ((X, y),) = make_batches(4, n_batches=1, n=30, regression=True)
    est = SkSGDRegressor(random_state=0, alpha=0.1).partial_fit(X, y)
    blob = storlet_pass(state.dumps(est), [csv_bytes(X, y)])
    expected = (
        0.5 * np.sum((X @ est.coef_ + est.intercept_ - y) ** 2)
        + 30 * 0.1 * 0.5 * est.coef_ @ est.coef_
    )
    assert state.loads(blob).report["objective"] == pytest.approx([expected], rel=1e-12)


def test_storlet_writes_nothing_on_bad_input():
    storlet = load_storlet()(Logger())
    blob = state.dumps(SkSGDClassifier(), pending_classes=np.array([0, 1]))
    params = dict(training.encode_state_params(blob, 8000), name="c/bad.csv")
    out = FakeOutput()
    storlet([FakeInput(b"1,2,0\n1,2,5\n")], [out], params)
    # The refusal travels as metadata only; the proxy turns it into a 422.
    reason = out.metadata["Storlet-Error"]
    assert "c/bad.csv" in reason and "line 2" in reason
    assert list(out.metadata) == ["Storlet-Error"] and out.chunks == []


def test_storlet_refuses_invalid_state():
    storlet = load_storlet()(Logger())
    blob = bytearray(state.dumps(SkSGDRegressor().partial_fit([[1.0, 2.0]], [1.0])))
    blob[-8:] = np.array([np.nan]).tobytes()
    out = FakeOutput()
    storlet(
        [FakeInput(b"1,2,3\n")],
        [out],
        dict(training.encode_state_params(bytes(blob), 8000), name="c/o"),
    )
    assert "NaN" in out.metadata["Storlet-Error"] and out.chunks == []


def test_storlet_without_state_fails():
    with pytest.raises(ObjectError, match="no model state"):
        training.run([FakeInput(b"1,2\n")], {"op": "partial_fit"})


def test_score_and_labels_ops():
    ((X, y),) = make_batches(5, n_batches=1, n=60, classes=(0, 1))
    est = SkSGDClassifier(random_state=0).fit(X, y)
    params = dict(training.encode_state_params(state.dumps(est), 8000), op="score")
    _, body = training.run([FakeInput(csv_bytes(X, y))], params)
    import json

    sums = json.loads(body)
    assert sums["correct"] / sums["weight_sum"] == pytest.approx(est.score(X, y))
    _, body = training.run([FakeInput(csv_bytes(X, y))], {"op": "labels"})
    labels = json.loads(body)
    assert labels["labels"] == [0.0, 1.0] and sum(labels["counts"]) == 60


def _scalar_losses(estimator, target, raw):
    """Reference pointwise losses: scikit-learn's own scalar code, or formulas."""
    loss = estimator._get_loss_function(estimator.loss)
    if hasattr(loss, "py_loss"):
        return np.array([loss.py_loss(p, t) for p, t in zip(raw, target)])
    r = raw - target
    if estimator.loss == "log_loss":
        return np.log1p(np.exp(raw)) - target * raw
    if estimator.loss == "squared_error":
        return 0.5 * r**2
    assert estimator.loss == "huber"
    eps = estimator.epsilon
    return np.where(np.abs(r) <= eps, 0.5 * r**2, eps * (np.abs(r) - 0.5 * eps))


@pytest.mark.parametrize("loss", sorted(SkSGDClassifier.loss_functions))
def test_pointwise_loss_of_every_classifier_loss(loss):
    rng = np.random.RandomState(0)
    est = SkSGDClassifier(loss=loss, epsilon=0.3)
    raw = 3 * rng.normal(size=200)
    labels = rng.randint(2, size=200)
    target = labels.astype(float) if loss == "log_loss" else 2.0 * labels - 1
    got = training.pointwise_loss(est, est._get_loss_function(loss), target, raw)
    np.testing.assert_allclose(got, _scalar_losses(est, target, raw), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss", sorted(SkSGDRegressor.loss_functions))
def test_pointwise_loss_of_every_regressor_loss(loss):
    rng = np.random.RandomState(1)
    est = SkSGDRegressor(loss=loss, epsilon=0.3)
    raw, target = 3 * rng.normal(size=200), rng.normal(size=200)
    got = training.pointwise_loss(est, est._get_loss_function(loss), target, raw)
    np.testing.assert_allclose(got, _scalar_losses(est, target, raw), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss", ["hinge", "modified_huber", "perceptron"])
def test_objective_of_sgd_only_losses_is_the_sum_of_their_losses(loss):
    # These losses' vectorized ``loss`` method writes nothing: an objective
    # read from it was uninitialized memory, sometimes NaN ("diverged").
    ((X, y),) = make_batches(6, n_batches=1, n=80, classes=(0, 1))
    est = SkSGDClassifier(loss=loss, random_state=0, alpha=0.01).partial_fit(X, y, classes=[0, 1])
    raw = X @ est.coef_[0] + est.intercept_[0]
    target = np.where(y == 1, 1.0, -1.0)
    expected = (
        _scalar_losses(est, target, raw).sum() + 80 * 0.01 * 0.5 * est.coef_[0] @ est.coef_[0]
    )
    for _ in range(20):
        assert training.objective_sums(est, X, y, np.array([0, 1])) == pytest.approx(
            [expected], rel=1e-12
        )


# -- groups: several objects in one call ----------------------------------------


def _group_call(
    blob, payloads, names, weights=None, via_resource=False, sizes=None, extra_params=None
):
    weights = weights or [1.0] * len(payloads)
    sizes = sizes or [len(p) for p in payloads]
    job = training.encode_job(list(zip(names, weights, sizes)))
    files = [FakeInput(p) for p in payloads]
    params = {"op": "partial_fit", **(extra_params or {})}
    if via_resource:
        files.insert(1, FakeInput(job.encode() + b"\n" + blob))
        params["job"] = training.RESOURCE
    else:
        params.update(training.encode_state_params(blob, 8000), job=job)
    return training.run(files, params)


@pytest.mark.parametrize("via_resource", [False, True])
def test_a_group_equals_one_call_per_object_and_local_partial_fit(via_resource):
    batches = make_batches(7, n_batches=4)
    payloads = [csv_bytes(X, y) for X, y in batches]
    blob = state.dumps(SkSGDClassifier(random_state=2), pending_classes=np.array([0, 1, 2]))
    weights = [1.0, 0.5, 2.0, 1.0]
    metadata, grouped = _group_call(
        blob,
        payloads,
        [f"c/{i}" for i in range(4)],
        weights,
        via_resource,
        extra_params={"batch_size": "16"},
    )
    assert metadata["Mlstorlets-Objects"] == "4"
    assert metadata["Mlstorlets-State-Via"] == ("extra-resource" if via_resource else "parameters")
    local = SkSGDClassifier(random_state=2)
    for (X, y), w in zip(batches, weights):
        for s in range(0, len(y), 16):
            local.partial_fit(
                X[s : s + 16],
                y[s : s + 16],
                classes=[0, 1, 2],
                sample_weight=np.full(len(y[s : s + 16]), w),
            )
    fitted = state.loads(grouped)
    np.testing.assert_allclose(fitted.attrs["coef_"], local.coef_, rtol=0, atol=1e-12)
    assert fitted.report["n_objects"] == 4 and fitted.report["n_samples"] == 160
    one_by_one = blob
    for payload, w in zip(payloads, weights):
        one_by_one = storlet_pass(
            one_by_one, [payload], {"batch_size": "16", "object_weight": repr(w)}
        )
    assert state.loads(one_by_one).attrs["coef_"].tobytes() == fitted.attrs["coef_"].tobytes()


def test_a_group_names_the_object_it_refuses():
    batches = make_batches(8, n_batches=2)
    payloads = [csv_bytes(*batches[0]), b"1,2,3,4,5,x\n", csv_bytes(*batches[1])]
    blob = state.dumps(SkSGDClassifier(), pending_classes=np.array([0, 1, 2]))
    with pytest.raises(ObjectError) as err:
        _group_call(blob, payloads, ["c/a", "c/b", "c/c"])
    assert err.value.name == "c/b" and "line 1: non-numeric value 'x'" in err.value.reason


def test_a_group_refuses_an_object_of_another_size_than_listed():
    # what the proxy passes for an extra resource that vanished: an error page
    ((X, y),) = make_batches(9, n_batches=1)
    blob = state.dumps(SkSGDClassifier(), pending_classes=np.array([0, 1, 2]))
    payload = csv_bytes(X, y)
    with pytest.raises(ObjectError) as err:
        _group_call(
            blob, [payload, payload], ["c/a", "c/b"], sizes=[len(payload), len(payload) + 7]
        )
    assert err.value.name == "c/b"
    assert f"read {len(payload)} bytes where the listing said {len(payload) + 7}" in str(err.value)


@pytest.mark.parametrize(
    "job",
    [
        "[",
        '[["c/a", -1, null]]',
        '[["c/a", 1, null], ["c/b", 1, 3]]',
        '{"a": 1}',
        '[["c/a", 1, -3]]',
    ],
)
def test_a_bad_job_is_refused(job):
    blob = state.dumps(SkSGDClassifier(), pending_classes=np.array([0, 1]))
    params = dict(training.encode_state_params(blob, 8000), op="partial_fit", job=job)
    with pytest.raises(ObjectError, match="bad job parameter"):
        training.run([FakeInput(b"1,2,0\n")], params)


def test_the_state_read_is_bounded():
    blob = state.dumps(SkSGDRegressor().partial_fit([[1.0, 2.0]], [1.0]))
    params = {"op": "partial_fit", "name": "c/o", "max_state_bytes": "100"}
    with pytest.raises(ObjectError, match="the state is over max_state_bytes=100 bytes"):
        training.run([FakeInput(b"1,2,3\n"), FakeInput(blob)], params)
    with pytest.raises(ObjectError, match=r"max_state_bytes must be in \[1, 1073741824\]"):
        training.run(
            [FakeInput(b"1,2,3\n"), FakeInput(blob)], dict(params, max_state_bytes=str(1 << 31))
        )
    with pytest.raises(ObjectError, match="over max_state_bytes=100 bytes"):
        _group_call(
            blob,
            [b"1,2,3\n", b"1,2,3\n"],
            ["c/a", "c/b"],
            via_resource=True,
            extra_params={"max_state_bytes": "100"},
        )


def test_an_input_pipe_is_widened_and_other_inputs_are_left_alone(tmp_path):
    import fcntl
    import os

    read_fd, write_fd = os.pipe()
    try:
        with open(read_fd, "rb", closefd=False) as pipe:
            training._widen_pipe(pipe)
            assert fcntl.fcntl(read_fd, 1032) == training.PIPE_SIZE  # F_GETPIPE_SZ
    finally:
        os.close(read_fd)
        os.close(write_fd)
    path = tmp_path / "o"
    path.write_bytes(b"1,2\n")
    with open(path, "rb") as f:
        training._widen_pipe(f)  # a regular file: nothing to do, no error
    training._widen_pipe(FakeInput(b""))  # no fileno: nothing to do
