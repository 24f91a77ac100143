"""Incremental estimators trained and applied next to the data, on the real
3-node cluster.

Each estimator of :mod:`mlstorlets.client.incremental` trains through the
``estimator.py`` storlet in the bubblewrap sandboxes of the object servers
(payload in parameters) or of the proxy (groups, or a payload as a
temporary object), and must equal local ``partial_fit`` over the same
mini-batches to 1e-12.
"""

import dataclasses
import io
import pickle
import re
import textwrap

import numpy as np
import pytest
import skops.io as sio
from estimator_data import (
    BATCH,
    N,
    csv_bytes,
    local_partial_fit,
    local_pipeline_fit,
    make_parts,
    max_difference,
)
from sklearn.preprocessing import StandardScaler
from swiftclient.client import Connection

from mlstorlets.client.errors import Refused
from mlstorlets.client.incremental import (
    MiniBatchKMeans,
    MLPClassifier,
    MultinomialNB,
    Pipeline,
    SGDClassifier,
    SGDRegressor,
    passes,
)
from mlstorlets.client.incremental.transport import STATE_PREFIX, calls_for
from mlstorlets.client.stores.registry import Stores
from mlstorlets.client.swift import Swift
from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.incremental import state


def upload(conn, container, parts, prefix="train/"):
    names = ["%spart%d.csv" % (prefix, i) for i in range(len(parts))]
    for name, (X, y) in zip(names, parts):
        conn.put_object(container, name, csv_bytes(X, y))
    return ["swift://%s/%s" % (container, n) for n in names]


ESTIMATORS = {
    "SGDClassifier": (lambda: SGDClassifier(random_state=0, average=True), True),
    "SGDRegressor": (lambda: SGDRegressor(random_state=0), False),
    "MLPClassifier": (
        lambda: MLPClassifier(hidden_layer_sizes=(8,), batch_size=8, random_state=0),
        True,
    ),
    "MiniBatchKMeans": (
        lambda: MiniBatchKMeans(n_clusters=3, batch_size=8, n_init=1, random_state=0),
        None,
    ),
    "MultinomialNB": (lambda: MultinomialNB(), True),
}
DIFFERENCES = {}


@pytest.mark.parametrize("per_call", [1, None], ids=["per-object", "grouped"])
@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_remote_partial_fit_equals_local_partial_fit(conn, container, kind, per_call):
    make, classifier = ESTIMATORS[kind]
    parts = make_parts(1, classifier=classifier is not False)
    uris = upload(conn, container, parts)
    classes = [0, 1, 2] if classifier else None
    est = make()
    est.remote_partial_fit(
        "swift://%s/train/" % container,
        classes=classes,
        connection=conn,
        objects_per_call=per_call,
        data_options={"batch_size": BATCH},
    )
    local = local_partial_fit(est, parts, classes)
    diff = max_difference(est.to_sklearn(), local)
    DIFFERENCES[(kind, per_call)] = diff
    print("%s %s: largest difference from local partial_fit %.3g" % (kind, per_call, diff))
    assert diff <= 1e-12
    X = np.vstack([p[0] for p in parts])
    np.testing.assert_array_equal(est.predict(X), local.predict(X))
    # and a second pass continues the same state
    est.remote_partial_fit(
        uris[::-1], connection=conn, objects_per_call=per_call, data_options={"batch_size": BATCH}
    )
    for X_, y_ in parts[::-1]:
        for start in range(0, N, BATCH):
            if kind == "MiniBatchKMeans":
                local.partial_fit(X_[start : start + BATCH])
            else:
                local.partial_fit(X_[start : start + BATCH], y_[start : start + BATCH])
    assert max_difference(est.to_sklearn(), local) <= 1e-12
    # no temporary payload left behind
    names = [e["name"] for e in conn.get_container(container, full_listing=True)[1]]
    assert not [n for n in names if n.startswith(STATE_PREFIX)]


def test_a_small_state_runs_on_the_object_server_a_big_one_on_the_proxy(conn, container):
    upload(conn, container, make_parts(2, classifier=False), prefix="reg/")
    upload(conn, container, make_parts(2), prefix="cls/")
    small = calls_for("swift://%s/reg/" % container, conn, objects_per_call=1)
    passes.train_pass(
        state.kind_of(SGDRegressor()),
        small,
        small.list_objects("swift://%s/reg/" % container),
        state.dumps(SGDRegressor()),
        {"op": "partial_fit"},
        {},
    )
    assert small.placements == ["object-server"] * 3
    big = calls_for("swift://%s/cls/" % container, conn, objects_per_call=1)
    mlp = MLPClassifier(hidden_layer_sizes=(64, 64), random_state=0)
    passes.train_pass(
        state.kind_of(mlp),
        big,
        big.list_objects("swift://%s/cls/" % container),
        state.dumps(mlp),
        {"op": "partial_fit"},
        {},
        classes=np.array([0, 1, 2]),
    )
    # the first state, unfitted, is small
    assert big.placements[1:] == ["proxy"] * 2


class Recorded:
    """Swift's calls through a runner's gateway, by method name (a GET
    with a body as ``get_with_body``)."""

    def __init__(self, swift):
        self.methods = []
        call, request = swift.call, swift._request

        def recorded_call(name, method, *args, **kwargs):
            self.methods.append(method)
            return call(name, method, *args, **kwargs)

        def recorded_request(label, method, names, body, *args, **kwargs):
            self.methods.append("%s_with_body" % method.lower() if body else method.lower())
            return request(label, method, names, body, *args, **kwargs)

        swift.call, swift._request = recorded_call, recorded_request


def test_a_state_over_the_parameters_rides_in_the_body_with_no_object(conn, container):
    uris = upload(conn, container, make_parts(3), prefix="cls/")

    def fit(body_input):
        mlp = MLPClassifier(hidden_layer_sizes=(64, 64), batch_size=8, random_state=0)
        swift = Swift(conn)
        swift._limits = dataclasses.replace(swift.limits(), body_input=body_input)
        recorded = Recorded(swift)
        for classes in ([0, 1, 2], None):
            mlp.remote_partial_fit(uris, classes=classes, connection=swift, objects_per_call=1)
        return mlp, recorded.methods

    in_body, methods = fit(protocol.DEFAULT_MAX_BODY_INPUT)
    assert len(state.dumps(in_body)) > Swift(conn).limits().datagram
    # The first call's state, unfitted, is in the parameters; every later
    # one is over them, and is sent in the request, never stored.
    assert methods.count("get_object") == 1 and methods.count("get_with_body") == 5
    assert "put_object" not in methods and "delete_object" not in methods
    # A cluster that takes no body gets a temporary object per call: the
    # same model.
    in_objects, methods = fit(0)
    assert methods.count("put_object") == methods.count("delete_object") == 5
    assert "get_with_body" not in methods
    assert max_difference(in_body.to_sklearn(), in_objects.to_sklearn()) == 0
    names = [e["name"] for e in conn.get_container(container, full_listing=True)[1]]
    assert not [n for n in names if n.startswith(STATE_PREFIX)]


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_remote_predict_writes_one_object_per_input_and_resumes(conn, container, kind):
    make, classifier = ESTIMATORS[kind]
    parts = make_parts(7, classifier=classifier is not False)
    upload(conn, container, parts)
    for i, (X, _) in enumerate(parts):
        conn.put_object(container, "new/part%d.csv" % i, csv_bytes(X))
    est = make()
    est.remote_partial_fit(
        "swift://%s/train/" % container, connection=conn, classes=[0, 1, 2] if classifier else None
    )
    summary = est.remote_predict(
        "swift://%s/new/" % container, "swift://%s/pred/" % container, connection=conn
    )
    assert summary.placement == "cluster" and len(summary.done) == 3, summary.format()
    assert summary.client_bytes == 0
    for i, (X, _) in enumerate(parts):
        headers, body = conn.get_object(container, "pred/part%d.npy" % i)
        assert headers["content-type"] == "application/octet-stream"
        got = np.load(io.BytesIO(body), allow_pickle=False)
        np.testing.assert_array_equal(got, est.predict(X))
    again = est.remote_predict(
        "swift://%s/new/" % container, "swift://%s/pred/" % container, connection=conn
    )
    assert len(again.skipped) == 3 and not again.done, again.format()
    if hasattr(est, "predict_proba"):
        est.remote_predict_proba(
            "swift://%s/new/" % container, "swift://%s/proba/" % container, connection=conn
        )
        body = conn.get_object(container, "proba/part0.npy")[1]
        np.testing.assert_allclose(
            np.load(io.BytesIO(body)), est.predict_proba(parts[0][0]), rtol=0, atol=1e-12
        )
    names = [e["name"] for e in conn.get_container(container, full_listing=True)[1]]
    assert not [n for n in names if n.startswith(STATE_PREFIX)]


def test_a_pipeline_trains_next_to_the_data_as_its_steps_locally(conn, container):
    parts = [(X * [1, 10, 100, 1000, 5] + 50, y) for X, y in make_parts(12)]
    upload(conn, container, parts, prefix="pipe/")

    def sgd():
        return SGDClassifier(random_state=0, max_iter=2, tol=None, shuffle=False)

    remote = Pipeline([("scale", StandardScaler()), ("sgd", sgd())])
    remote.remote_fit(
        "swift://%s/pipe/" % container, connection=conn, data_options={"batch_size": BATCH}
    )
    local = local_pipeline_fit([StandardScaler()], sgd(), parts, 2, np.array([0, 1, 2]))
    for (_, mine), theirs in zip(remote.to_sklearn().steps, local):
        assert max_difference(mine, theirs) == 0.0
    summary = remote.remote_predict(
        "swift://%s/pipe/" % container,
        "swift://%s/pipe-pred/" % container,
        connection=conn,
        data_options={"label_column": -1},
    )
    assert summary.placement == "cluster" and len(summary.done) == 3, summary.format()
    body = conn.get_object(container, "pipe-pred/part2.npy")[1]
    np.testing.assert_array_equal(np.load(io.BytesIO(body)), remote.predict(parts[2][0]))


def test_remote_predict_of_a_bad_object_fails_it_alone(conn, container):
    parts = make_parts(8)
    upload(conn, container, parts)
    conn.put_object(container, "new/good.csv", csv_bytes(parts[0][0]))
    conn.put_object(container, "new/bad.csv", b"1,2,x\n")
    est = SGDClassifier(random_state=0)
    est.remote_partial_fit("swift://%s/train/" % container, classes=[0, 1, 2], connection=conn)
    summary = est.remote_predict(
        "swift://%s/new/" % container, "swift://%s/pred/" % container, connection=conn
    )
    assert summary.done == ["swift://%s/new/good.csv" % container]
    ((name, reason),) = summary.failed
    assert name == "swift://%s/new/bad.csv" % container and "non-numeric" in reason
    names = [e["name"] for e in conn.get_container(container, full_listing=True)[1]]
    assert "pred/bad.npy" not in names


def test_sources_of_other_schemes_run_on_the_client_with_the_same_code(conn, container, tmp_path):
    parts = make_parts(9)
    for i, (X, y) in enumerate(parts):
        (tmp_path / ("part%d.csv" % i)).write_bytes(csv_bytes(X, y))
    upload(conn, container, parts)
    stores = Stores(environ={})
    here = SGDClassifier(random_state=0)
    here.remote_partial_fit(
        "file://%s/" % tmp_path,
        classes=[0, 1, 2],
        stores=stores,
        data_options={"batch_size": BATCH},
    )
    there = SGDClassifier(random_state=0)
    there.remote_partial_fit(
        "swift://%s/train/" % container,
        classes=[0, 1, 2],
        connection=conn,
        data_options={"batch_size": BATCH},
    )
    assert max_difference(here.to_sklearn(), there.to_sklearn()) == 0.0
    out = tmp_path / "out"
    summary = here.remote_predict(
        "file://%s/" % tmp_path,
        "file://%s/" % out,
        stores=stores,
        data_options={"label_column": -1},
    )
    assert summary.placement == "client" and len(summary.done) == 3


def test_a_missing_container_is_a_clear_error(conn):
    with pytest.raises(ObjectError) as err:
        SGDRegressor().remote_partial_fit("swift://no-such-container/", connection=conn)
    assert "no such container" in str(err.value) and "<" not in str(err.value)


def test_a_refusal_names_the_object_and_leaves_the_estimator(conn, container):
    parts = make_parts(10, classifier=False)
    uris = upload(conn, container, parts)
    conn.put_object(container, "train/zbad.csv", b"1,2,3,4,5,nan\n")
    est = SGDRegressor(random_state=0).remote_partial_fit(uris, connection=conn)
    before = est.coef_.copy()
    with pytest.raises(Refused) as err:
        est.remote_partial_fit("swift://%s/train/" % container, connection=conn)
    assert err.value.name == "swift://%s/train/zbad.csv" % container
    assert err.value.status == 422 and "NaN" in err.value.reason
    np.testing.assert_array_equal(est.coef_, before)


def test_no_credentials_in_a_fitted_estimator(cluster, container):
    auth, user, key = cluster.credentials()
    conn = Connection(authurl=auth, user=user, key=key, retries=0)
    parts = make_parts(11)
    upload(conn, container, parts)
    est = SGDClassifier(random_state=0)
    est.remote_fit("swift://%s/train/" % container, connection=conn, epochs=2)
    token = conn.token
    assert token and key
    assert "connection" not in est.get_params()
    for blob in (pickle.dumps(est), sio.dumps(est), sio.dumps(est.to_sklearn())):
        assert key.encode() not in blob and token.encode() not in blob
        assert not re.search(rb"swiftclient|AUTH_", blob)
    plain = est.to_sklearn()
    assert type(plain).__module__.startswith("sklearn.")
    X = parts[0][0]
    np.testing.assert_array_equal(plain.predict(X), est.predict(X))


def test_the_readme_example_runs(cluster, monkeypatch, capsys):
    """The README's remote_fit / remote_predict example, as written."""
    import os

    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    section = readme.split("## Estimators next to the data")[1]
    code, pipeline_code = [
        textwrap.dedent(block.split("```")[0]) for block in section.split("```python\n")[1:3]
    ]
    auth, user, key = cluster.credentials()
    for name in [n for n in os.environ if n.startswith(("ST_", "OS_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ST_AUTH", auth)
    monkeypatch.setenv("ST_USER", user)
    monkeypatch.setenv("ST_KEY", key)
    conn = Connection(authurl=auth, user=user, key=key)
    try:
        namespace = {}
        exec(compile(code, "README.md", "exec"), namespace)
        out = capsys.readouterr().out
        assert "-- Epoch 1" in out and out.count("estimator.py: 4 done, 0 skipped, 0 failed") == 1
        exec(compile(pipeline_code, "README.md", "exec"), namespace)
        assert namespace["pipe"].steps[0][1].n_samples_seen_ == 200
        names = [e["name"] for e in conn.get_container("iris", full_listing=True)[1]]
        assert ["pred/part%d.npy" % i for i in range(4)] == [
            n for n in names if n.startswith("pred/")
        ]
    finally:
        for entry in conn.get_container("iris", full_listing=True)[1]:
            conn.delete_object("iris", entry["name"])
        conn.delete_container("iris")
