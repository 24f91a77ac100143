"""A remote Pipeline of incremental steps over file:// objects, run by the
client runner (the same storlet code as in the cluster, whose test is in
tests/functional/test_estimators_cluster.py): exact against the same steps
trained locally with partial_fit, and refused where a storlet could not
rebuild it."""

import io

import numpy as np
import pytest
import skops.io as sio
from estimator_data import BATCH, csv_bytes, local_pipeline_fit, make_parts, max_difference
from sklearn.decomposition import PCA
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import Pipeline as SkPipeline
from sklearn.preprocessing import MaxAbsScaler, StandardScaler

from mlstorlets.client.errors import UsageError
from mlstorlets.client.incremental import MiniBatchKMeans, Pipeline, SGDRegressor
from mlstorlets.client.stores import Stores
from mlstorlets.sandbox.errors import ObjectError, ParameterError
from mlstorlets.sandbox.incremental import state, training

CLASSES = np.array([0, 1, 2])  # as remote_fit finds them in text objects


@pytest.fixture
def stores():
    return Stores(environ={})


@pytest.fixture
def parts():
    # Features far from centred and of unequal scales: the scaler matters.
    return [(X * [1, 10, 100, 1000, 5] + 50, y) for X, y in make_parts(7, n_parts=3)]


def write(folder, parts):
    (folder / "train").mkdir()
    for i, (X, y) in enumerate(parts):
        (folder / "train" / ("part%d.csv" % i)).write_bytes(csv_bytes(X, y))
    return "file://%s/train/" % folder


def batches(parts):
    for X, y in parts:
        for start in range(0, len(y), BATCH):
            yield X[start : start + BATCH], y[start : start + BATCH]


def classifier_pipeline():
    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("bound", MaxAbsScaler()),
            ("sgd", SGDClassifier(random_state=0, max_iter=3, tol=None, shuffle=False)),
        ]
    )


def test_remote_fit_equals_the_steps_trained_in_turn_locally(tmp_path, stores, parts):
    src = write(tmp_path, parts)
    remote = classifier_pipeline()
    remote.remote_fit(src, stores=stores, data_options={"batch_size": BATCH})

    local = local_pipeline_fit(
        [StandardScaler(), MaxAbsScaler()],
        SGDClassifier(random_state=0, max_iter=3, tol=None, shuffle=False),
        parts,
        epochs=3,
        classes=CLASSES,
    )

    fitted = remote.to_sklearn()
    assert type(fitted) is SkPipeline
    for mine, theirs in zip([s for _, s in fitted.steps], local):
        assert type(mine) is type(theirs)
        assert max_difference(mine, theirs) == 0.0
    # the estimator's own steps hold the state: plain scikit-learn applies it
    X = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    np.testing.assert_array_equal(remote.predict(X), SkPipeline(list(zip("abc", local))).predict(X))
    assert remote.steps[0][1].n_samples_seen_ == len(y)
    assert remote.remote_score(src, stores=stores) == pytest.approx(remote.score(X, y), abs=1e-12)
    summary = remote.remote_predict(
        src, "file://%s/pred/" % tmp_path, stores=stores, data_options={"label_column": "-1"}
    )
    assert not summary.failed and len(summary.done) == 3
    got = np.load(tmp_path / "pred" / "part1.npy", allow_pickle=False)
    np.testing.assert_array_equal(got, remote.predict(parts[1][0]))


def test_remote_partial_fit_trains_every_step_on_each_batch(tmp_path, stores, parts):
    src = write(tmp_path, [(X, y + 0.5) for X, y in parts])
    remote = Pipeline([("scale", StandardScaler()), ("sgd", SGDRegressor(random_state=0))])
    remote.remote_partial_fit(src, stores=stores, data_options={"batch_size": BATCH})
    remote.remote_partial_fit(src, stores=stores, data_options={"batch_size": BATCH})

    scale, sgd = StandardScaler(), SGDRegressor(random_state=0).to_sklearn()
    for _ in range(2):
        for X, y in batches([(X, y + 0.5) for X, y in parts]):
            scale.partial_fit(X)
            sgd.partial_fit(scale.transform(X), y)
    assert max_difference(remote.steps[0][1], scale) == 0.0
    assert max_difference(remote.steps[1][1].to_sklearn(), sgd) == 0.0


def test_an_unsupervised_pipeline(tmp_path, stores, parts):
    src = write(tmp_path, parts)
    remote = Pipeline(
        [
            ("scale", StandardScaler()),
            ("km", MiniBatchKMeans(n_clusters=3, n_init=1, random_state=0)),
        ]
    )
    remote.remote_fit(
        src, stores=stores, epochs=2, data_options={"batch_size": BATCH, "label_column": "none"}
    )
    assert remote.steps[1][1].cluster_centers_.shape == (3, parts[0][0].shape[1] + 1)
    X = np.vstack([np.column_stack(p) for p in parts])
    assert remote.remote_score(src, stores=stores, data_options={"label_column": "none"}) == (
        pytest.approx(remote.score(X), rel=1e-9)
    )


@pytest.mark.parametrize(
    "pipeline, problem",
    [
        (
            Pipeline([("pca", PCA(2)), ("sgd", SGDClassifier())]),
            "PCA is not an incremental transformer",
        ),
        (
            Pipeline([("scale", StandardScaler()), ("pca", PCA(2))]),
            "PCA is not an incremental estimator",
        ),
        (
            Pipeline([("scale", StandardScaler()), ("sgd", SGDClassifier())], memory="/tmp/cache"),
            "memory",
        ),
    ],
)
def test_a_pipeline_a_storlet_cannot_rebuild_is_refused_before_any_call(
    tmp_path, stores, parts, pipeline, problem
):
    src = write(tmp_path, parts)
    with pytest.raises(UsageError, match=problem):
        pipeline.remote_fit(src, stores=stores)
    assert not hasattr(pipeline.steps[0][1], "n_features_in_")


def _hostile(pipeline):
    """A state a client or storlet could send: skops' bytes of ``pipeline``."""
    return sio.dumps(pipeline)


@pytest.mark.parametrize(
    "pipeline, reason",
    [
        (SkPipeline([("pca", PCA(2)), ("sgd", SGDClassifier())]), "not an incremental transformer"),
        (SkPipeline([("s", StandardScaler()), ("sgd", SGDClassifier())], memory="/srv"), "memory"),
        (
            SkPipeline([("s", StandardScaler()), ("p", SkPipeline([("sgd", SGDClassifier())]))]),
            "Pipeline",
        ),
    ],
)
def test_a_state_of_another_pipeline_is_refused(pipeline, reason):
    with pytest.raises(ObjectError, match=reason):
        state.loads(_hostile(pipeline))


def _call(blob, text, **params):
    class File(io.BytesIO):
        def get_metadata(self):
            return {}

    return training.run(
        [File(text), File(state.pack(blob))],
        dict({"name": "t.csv", "payload": "resource", "op": "partial_fit"}, **params),
    )


def test_a_step_out_of_order_or_range_is_refused(parts):
    X, y = parts[0]
    blob = state.dumps(classifier_pipeline())
    with pytest.raises(ObjectError, match="step 0 of the pipeline is not fitted"):
        _call(blob, csv_bytes(X, y), step="1")
    with pytest.raises(ParameterError, match=r"step must be in \[0, 2\]"):
        _call(blob, csv_bytes(X, y), step="3")
    _, body = _call(blob, csv_bytes(X, y), step="0")
    fitted = state.loads(body)
    assert fitted.steps[0][1].n_samples_seen_ == len(y)
    assert not hasattr(fitted.steps[1][1], "n_samples_seen_")


class Recorder:
    """A callback of scikit-learn's protocol that records its hooks and asks
    to stop after ``stop_after`` epochs."""

    def __init__(self, stop_after=None):
        self.stop_after = stop_after
        self.calls = []

    def setup(self, estimator, context):
        self.calls.append(("setup", context.task_name))

    def teardown(self, estimator, context):
        self.calls.append(("teardown", context.task_name))

    def on_fit_task_begin(self, estimator, context):
        self.calls.append(("begin", context.task_name))

    def on_fit_task_end(self, estimator, context, *, X=None, metadata=None, fitted_estimator=None):
        self.calls.append(("end", context.task_name, X, metadata, fitted_estimator))
        epochs = sum(c[:2] == ("end", "epoch") for c in self.calls)
        return context.task_name == "epoch" and epochs == self.stop_after


def test_scikit_learn_callbacks_see_each_epoch_and_may_stop_it(tmp_path, stores, parts):
    src = write(tmp_path, parts)
    recorder = Recorder(stop_after=2)
    est = SGDRegressor(random_state=0, max_iter=5, tol=None).set_callbacks(recorder)
    est.remote_fit(src, stores=stores, data_options={"batch_size": BATCH})
    assert len(est.remote_history_) == 2
    assert [c[:2] for c in recorder.calls] == [
        ("setup", "remote_fit"),
        ("begin", "remote_fit"),
        ("begin", "epoch"),
        ("end", "epoch"),
        ("begin", "epoch"),
        ("end", "epoch"),
        ("end", "remote_fit"),
        ("teardown", "remote_fit"),
    ]
    first, second, last = [c for c in recorder.calls if c[0] == "end"]
    assert first[2] is None and first[3]["epoch"] == 1 and first[3]["n_samples"] == 120
    # each task's end sees the model as that task left it, apart from est
    assert first[4] is not est and first[4].t_ < second[4].t_ == est.t_
    np.testing.assert_array_equal(last[4].coef_, est.coef_)
    # the callbacks stay set, and never travel with the state
    assert est._skl_callbacks == [recorder]
    assert not hasattr(est, "_callback_fit_ctx")
    assert b"Recorder" not in state.dumps(est)


def test_callbacks_around_remote_partial_fit_and_a_pipeline(tmp_path, stores, parts):
    src = write(tmp_path, parts)
    recorder = Recorder()
    pipe = classifier_pipeline().set_callbacks(recorder)
    pipe.remote_partial_fit(src, classes=CLASSES, stores=stores, data_options={"batch_size": BATCH})
    (end,) = [c for c in recorder.calls if c[0] == "end"]
    assert end[1] == "remote_partial_fit"
    fitted = end[4]
    assert fitted is not pipe and fitted.steps[0][1].n_samples_seen_ == 120
    np.testing.assert_array_equal(fitted.predict(parts[0][0]), pipe.predict(parts[0][0]))


def test_a_state_holding_what_is_not_state_or_a_step_twice_is_refused():
    scaler = StandardScaler().fit(np.ones((3, 2)))
    scaler._skl_callbacks = [SGDClassifier()]
    with pytest.raises(ObjectError, match=r"StandardScaler holds \['_skl_callbacks'\]"):
        state.loads(_hostile(SkPipeline([("s", scaler), ("c", SGDClassifier())])))
    shared = StandardScaler()
    twice = SkPipeline([("a", shared), ("b", shared), ("c", SGDClassifier())])
    with pytest.raises(ObjectError, match="distinct"):
        state.loads(sio.dumps(twice))
    with pytest.raises(UsageError, match="unique"):
        Pipeline([("a", StandardScaler()), ("a", SGDClassifier())]).remote_fit("file:///nowhere/")


def test_weights_go_to_the_steps_that_take_them(tmp_path, stores, parts):
    src = write(tmp_path, [(X, y + 0.5) for X, y in parts])
    weights = {"%strain/part%d.csv" % (src[: -len("train/")], i): float(i + 1) for i in range(3)}
    remote = Pipeline([("bound", MaxAbsScaler()), ("sgd", SGDRegressor(random_state=0))])
    remote.remote_partial_fit(
        src, sample_weight=weights, stores=stores, data_options={"batch_size": BATCH}
    )
    bound, sgd = MaxAbsScaler(), SGDRegressor(random_state=0).to_sklearn()
    for i, (X, y) in enumerate(parts):
        for start in range(0, len(y), BATCH):
            Xb, yb = X[start : start + BATCH], y[start : start + BATCH] + 0.5
            bound.partial_fit(Xb)
            sgd.partial_fit(bound.transform(Xb), yb, sample_weight=np.full(len(yb), i + 1.0))
    assert max_difference(remote.steps[1][1].to_sklearn(), sgd) == 0.0
    # and a later remote_partial_fit leaves no record of an earlier remote_fit
    remote.remote_fit(src, stores=stores, epochs=1)
    assert remote.remote_history_
    remote.remote_partial_fit(src, stores=stores)
    assert not hasattr(remote, "remote_history_")
