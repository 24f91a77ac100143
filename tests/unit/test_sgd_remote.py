import copy
import warnings
from urllib.parse import unquote

import numpy as np
import pytest
from sgd_fakes import FakeInput, FakeOutput
from sklearn.linear_model import SGDClassifier as SkSGDClassifier
from sklearn.linear_model import SGDRegressor as SkSGDRegressor
from swiftclient.exceptions import ClientException
from test_sgd_training import Logger, csv_bytes, load_storlet, make_batches

from mlstorlets.client.linear_model import SGDClassifier, SGDRegressor, remote
from mlstorlets.sandbox import invocation
from mlstorlets.sandbox.errors import ObjectError


class InProcessConnection:
    """Answers storlet GETs by running the storlet class on stored bytes.

    It checks the request the way the servers would (line and total header
    limits) and records what happened; it is the transport's peer, not a
    model of Swift.
    """

    def __init__(self, objects):
        self.objects = dict(objects)
        self.requests = []
        self.deleted = []
        self.storlet = load_storlet()(Logger())

    def get_capabilities(self):
        return {"swift": {"max_header_size": 8192}}

    def get_container(self, container, prefix=None, full_listing=False):
        names = sorted(
            o for (c, o) in self.objects if c == container and o.startswith(prefix or "")
        )
        return {}, [{"name": n} for n in names]

    def put_object(self, container, name, contents, content_type=None):
        self.objects[(container, name)] = bytes(contents)

    def head_object(self, container, name):
        return {"content-length": str(len(self.objects[(container, name)]))}

    def delete_object(self, container, name):
        self.deleted.append(name)
        del self.objects[(container, name)]

    def get_object(self, container, obj, headers=None):
        lines = [f"{k}: {v}\r\n" for k, v in headers.items()]
        assert all(len(line) < 8192 for line in lines)
        assert sum(map(len, lines)) < 65536 - remote.RESERVED_HEADER_BYTES
        self.requests.append(headers)
        params = {}
        for key, value in headers.items():
            if key.lower().startswith("x-storlet-parameter"):
                k, v = unquote(value).split(":", 1)
                params[k] = v
        in_files = [FakeInput(self.objects[(container, obj)])]
        for path in filter(None, headers.get("X-Storlet-Extra-Resources", "").split(",")):
            _, c, o = unquote(path).split("/", 2)
            in_files.append(FakeInput(self.objects[(c, o)]))
        out = FakeOutput()
        self.storlet(in_files, [out], params)
        assert out.closed and all(f.closed for f in in_files)
        # what mlstorlets.server.middleware.storlet_copy makes of the storlet's answer
        if invocation.ERROR_KEY in out.metadata:
            assert not out.body
            raise ClientException(
                "storlet refused",
                http_status=422,
                http_response_content=(
                    f"storlet {headers['X-Run-Storlet']} refused "
                    f"{container}/{obj}: "
                    f"{out.metadata[invocation.ERROR_KEY]}\n"
                ).encode(),
            )
        assert int(out.metadata.pop(invocation.LENGTH_KEY)) == len(out.body)
        return {f"x-object-meta-{k.lower()}": v for k, v in out.metadata.items()}, out.body


def store(batches, container="data"):
    return {(container, f"part-{i}.csv"): csv_bytes(X, y) for i, (X, y) in enumerate(batches)}


def test_remote_partial_fit_equals_local_partial_fit_in_order():
    batches = make_batches(0, classes=(0, 1, 2))
    conn = InProcessConnection(store(batches))
    est = SGDClassifier(random_state=1, shuffle=False, connection=conn)
    est.remote_partial_fit("swift://data/", classes=[0, 1, 2])
    local = SkSGDClassifier(random_state=1, shuffle=False)
    for X, y in batches:
        local.partial_fit(X, y, classes=[0, 1, 2])
    np.testing.assert_allclose(est.coef_, local.coef_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(est.intercept_, local.intercept_, rtol=0, atol=1e-12)
    assert all(r["X-Run-Storlet"] == remote.STORLET_NAME for r in conn.requests)


def test_failure_leaves_estimator_exactly_as_before():
    batches = make_batches(1, regression=True)
    objects = store(batches)
    objects[("data", "part-9.csv")] = b"1,2,3,4,5,6\n1,2,x,4,5,6\n"
    conn = InProcessConnection(objects)
    est = SGDRegressor(random_state=0, connection=conn)
    est.remote_partial_fit(["swift://data/part-0.csv"])
    before = copy.deepcopy(est.__dict__)
    with pytest.raises(ObjectError, match="part-9.csv") as err:
        est.remote_partial_fit("swift://data/")
    # one call over the four objects (shuffled): the proxy names the first, the
    # client the one the storlet refused
    assert len(conn.requests) == 2
    assert "refused it, in a call over 4 objects from swift://data/part-" in str(err.value)
    assert "line 2: non-numeric value 'x'" in str(err.value)
    assert err.value.name == "swift://data/part-9.csv"
    assert est.__dict__.keys() == before.keys()
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(est.__dict__[key], value)
        elif key != "connection":
            assert est.__dict__[key] == value


def test_tampered_answer_is_refused_before_assignment():
    batches = make_batches(2, regression=True)
    conn = InProcessConnection(store(batches))
    get = conn.get_object
    conn.get_object = lambda *a, **k: (lambda h, b: (h, b[:-8] + np.array([np.nan]).tobytes()))(
        *get(*a, **k)
    )
    est = SGDRegressor(random_state=0, connection=conn)
    with pytest.raises(ObjectError):
        est.remote_partial_fit("swift://data/")
    assert not hasattr(est, "coef_")


def test_big_state_goes_through_a_temporary_object():
    rng = np.random.RandomState(0)
    X, y = rng.normal(size=(20, 6000)), rng.normal(size=20)
    conn = InProcessConnection({("data", "big.csv"): csv_bytes(X, y)})
    est = SGDRegressor(random_state=0, connection=conn)
    est.remote_partial_fit("swift://data/big.csv")  # first call: tiny unfitted state
    est.remote_partial_fit("swift://data/big.csv")
    assert "X-Storlet-Extra-Resources" in conn.requests[-1]
    assert conn.deleted and conn.deleted[0].startswith(remote.STATE_PREFIX)
    assert not [o for (_, o) in conn.objects if o.startswith(remote.STATE_PREFIX)]
    local = SkSGDRegressor(random_state=0).partial_fit(X, y).partial_fit(X, y)
    np.testing.assert_allclose(est.coef_, local.coef_, rtol=0, atol=1e-12)


def test_remote_fit_and_score():
    batches = make_batches(3, n_batches=4, n=60, classes=(0, 1))
    conn = InProcessConnection(store(batches))
    est = SGDClassifier(random_state=0, max_iter=50, connection=conn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.remote_fit("swift://data/")
    assert 1 <= est.n_iter_ < 50
    assert est.t_ == 1 + est.n_iter_ * 240
    np.testing.assert_array_equal(est.classes_, [0, 1])
    X = np.vstack([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert est.remote_score("swift://data/") == pytest.approx(est.score(X, y), abs=1e-12)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_remote_fit_regressor_weights_and_r2(early_stopping):
    batches = make_batches(4, n_batches=3, n=80, regression=True)
    conn = InProcessConnection(store(batches))
    est = SGDRegressor(random_state=0, max_iter=30, early_stopping=early_stopping, connection=conn)
    weights = {"swift://data/part-0.csv": 2.0}
    est.remote_fit(
        "swift://data/", sample_weight=weights, coef_init=np.zeros(5), intercept_init=[0.5]
    )
    X = np.vstack([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    w = np.r_[np.full(80, 2.0), np.ones(160)]
    assert est.remote_score("swift://data/", sample_weight=weights) == pytest.approx(
        est.score(X, y, sample_weight=w), abs=1e-9
    )
    assert est.score(X, y) > 0.9


def test_connection_from_environment_needs_credentials():
    with pytest.raises(ValueError, match="credentials"):
        remote.connection_from_environment({})
    conn = remote.connection_from_environment(
        {"ST_AUTH": "http://127.0.0.1:8080/auth/v1.0", "ST_USER": "t:u", "ST_KEY": "k"}
    )
    assert conn.authurl == "http://127.0.0.1:8080/auth/v1.0" and conn.user == "t:u"


def test_header_budget():
    budget = remote.HeaderBudget()
    assert budget.chunk_size % 4 == 0
    line = f"X-Storlet-Parameter-999: state_999:{'A' * budget.chunk_size}\r\n"
    assert len(line) < 8192
    assert 30000 < budget.max_state_bytes < 49152


def test_divergence_is_reported_not_serialized():
    rng = np.random.RandomState(0)
    X, y = 1e150 * rng.normal(size=(10, 2)), rng.normal(size=10)
    conn = InProcessConnection({("data", "huge.csv"): csv_bytes(X, y)})
    est = SGDRegressor(random_state=0, eta0=10.0, connection=conn)
    with pytest.raises(ObjectError, match="huge.csv"):
        est.remote_fit("swift://data/huge.csv")
    assert not hasattr(est, "coef_")


class HeadOnly:
    """What plan() asks of a connection: sizes and metadata."""

    def __init__(self, heads):
        self.heads = heads

    def get_capabilities(self):
        return {"swift": {"max_header_size": 8192}}

    def head_object(self, container, obj):
        size, meta = self.heads[obj]
        return {"content-length": str(size), **{f"x-object-meta-{k}": v for k, v in meta.items()}}


def test_plan_keeps_each_call_within_the_datagram_bytes_and_objects_limits():
    from mlstorlets.client.faces import plan as sbus_plan

    heads = {f"o{i}": (1000 + i, {"note": "n" * (20 * i)}) for i in range(40)}
    uris = [f"swift://c/o{i}" for i in range(40)]
    params = {"op": "partial_fit"}
    transport = remote.StorletTransport(HeadOnly(heads))
    groups = transport.plan(uris, params)
    assert [u for g in groups for u in g] == uris and len(groups) > 1
    for group in groups:
        used = (
            remote.SBUS_ENGINE_RESERVE
            + sbus_plan.input_cost({})
            + remote.datagram_cost(dict(params, job="resource"))
            + sum(sbus_plan.input_cost(heads[u.split("/")[-1]][1]) for u in group)
        )
        assert used <= sbus_plan.SBUS_LIMIT
    small = remote.StorletTransport(HeadOnly(heads), max_group_bytes=3100)
    assert all(len(g) <= 3 for g in small.plan(uris, params))
    three = remote.StorletTransport(HeadOnly(heads), objects_per_call=3)
    assert [len(g) for g in three.plan(uris[:8], params)] == [3, 3, 2]
    one = remote.StorletTransport(HeadOnly(heads), objects_per_call=1)
    assert one.plan(uris[:3], params) == [[u] for u in uris[:3]]
