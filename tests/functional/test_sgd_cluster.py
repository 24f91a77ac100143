"""SGD estimators trained next to the data, on the real 3-node cluster.

The estimators of :mod:`mlstorlets.client.linear_model` talk to the real proxy
through python-swiftclient; the storlet ``sgd_estimator.py`` runs in the
bubblewrap sandbox of an object server (state in headers) or of the proxy
(state as a temporary object).  The connection used here records every
request and the response headers, so a test can tell where each invocation
ran and what crossed the network.
"""

import copy
import glob
import io
import os
import re
import warnings
from configparser import ConfigParser

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier as SkSGDClassifier
from sklearn.linear_model import SGDRegressor as SkSGDRegressor
from swiftclient.client import Connection
from swiftclient.exceptions import ClientException

from mlstorlets.client.linear_model import SGDClassifier, SGDRegressor, remote
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.sgd import state

ACCOUNT = 'AUTH_mlstorlets'
META = 'x-object-meta-'
CLASSES = [0, 1, 2]


class RecordingConnection(Connection):
    """A swiftclient Connection that keeps what each object request did."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gets = []      # (container, obj, request headers, response headers)
        self.puts = []      # (container, obj)
        self.deletes = []   # (container, obj)

    def get_object(self, container, obj, *args, **kwargs):
        headers, body = super().get_object(container, obj, *args, **kwargs)
        self.gets.append((container, obj, dict(kwargs.get('headers') or {}),
                          headers))
        return headers, body

    def put_object(self, container, obj, *args, **kwargs):
        self.puts.append((container, obj))
        return super().put_object(container, obj, *args, **kwargs)

    def delete_object(self, container, obj, *args, **kwargs):
        self.deletes.append((container, obj))
        return super().delete_object(container, obj, *args, **kwargs)

    def storlet_runs(self):
        """(object, node, how the state came) of every storlet GET."""
        return [(obj, resp.get(META + 'mlstorlets-node'),
                 resp.get(META + 'mlstorlets-state-via'))
                for _, obj, req, resp in self.gets if 'X-Run-Storlet' in req]


@pytest.fixture
def rconn(cluster):
    auth, user, key = cluster.credentials()
    return RecordingConnection(authurl=auth, user=user, key=key, retries=0)


# -- data ------------------------------------------------------------------

def csv_bytes(X, y):
    # repr() round-trips a float64 exactly
    rows = [','.join(repr(float(v)) for v in x) + ',' + repr(float(t))
            for x, t in zip(X, y)]
    return ('\n'.join(rows) + '\n').encode()


def npy_bytes(X, y):
    buf = io.BytesIO()
    np.save(buf, np.column_stack([X, y]).astype(np.float64))
    return buf.getvalue()


def make_parts(seed, n_parts=3, n=60, d=5, classifier=True, noise=0.1):
    """Parts of one data set with a known linear model."""
    rng = np.random.RandomState(seed)
    w = rng.normal(size=d)
    parts = []
    for _ in range(n_parts):
        X = rng.normal(size=(n, d))
        score = X @ w + noise * rng.normal(size=n)
        if classifier:
            # three classes cut along the known direction
            y = np.digitize(score, [-0.5, 0.5]).astype(np.float64)
        else:
            y = score + 0.5
        parts.append((X, y))
    return parts


def upload(conn, container, parts, names, fmt='csv'):
    encode = csv_bytes if fmt == 'csv' else npy_bytes
    for name, (X, y) in zip(names, parts):
        conn.put_object(container, name, encode(X, y))
    return ['swift://%s/%s' % (container, n) for n in names]


def download(conn, container, names):
    """The rows of the objects, parsed locally (what a user would do)."""
    Xs, ys = [], []
    for name in names:
        body = conn.get_object(container, name)[1]
        if name.endswith('.npy'):
            arr = np.load(io.BytesIO(body), allow_pickle=False)
        else:
            arr = np.loadtxt(io.BytesIO(body), delimiter=',', ndmin=2)
        Xs.append(arr[:, :-1])
        ys.append(arr[:, -1])
    return np.vstack(Xs), np.concatenate(ys)


def local_batches(X, y, batch_size):
    for start in range(0, len(y), batch_size):
        yield X[start:start + batch_size], y[start:start + batch_size]


# -- comparing estimators deeply ---------------------------------------------

def snapshot(est):
    return copy.deepcopy({k: v for k, v in vars(est).items()
                          if k != 'connection'})


def assert_same(before, after, path='estimator'):
    if isinstance(before, dict):
        assert isinstance(after, dict) and before.keys() == after.keys(), path
        for key in before:
            assert_same(before[key], after[key], '%s.%s' % (path, key))
    elif isinstance(before, np.ndarray):
        assert isinstance(after, np.ndarray), path
        assert before.dtype == after.dtype and before.shape == after.shape, path
        np.testing.assert_array_equal(after, before, err_msg=path)
    elif isinstance(before, (list, tuple)):
        assert type(before) is type(after) and len(before) == len(after), path
        for i, (a, b) in enumerate(zip(before, after)):
            assert_same(a, b, '%s[%d]' % (path, i))
    elif hasattr(before, '__dict__') and not isinstance(before, type):
        assert type(before) is type(after), path
        assert_same(vars(before), vars(after), path)
    else:
        assert before == after, path


# -- exactness ---------------------------------------------------------------

@pytest.mark.parametrize('kind', ['classifier', 'regressor'])
def test_partial_fit_with_state_in_headers_equals_local(
        rconn, container, kind):
    classifier = kind == 'classifier'
    parts = make_parts(10, n=70, classifier=classifier)
    uris = upload(rconn, container, parts, ['A.csv', 'B.csv', 'C.csv'])
    cls, sk = ((SGDClassifier, SkSGDClassifier) if classifier
               else (SGDRegressor, SkSGDRegressor))
    params = dict(random_state=3, shuffle=False, alpha=0.001)
    est = cls(connection=rconn, objects_per_call=1, **params)
    local = sk(**params)
    extra = dict(classes=CLASSES) if classifier else {}
    batch = 32   # several partial_fit calls per object, as locally
    # first call from scratch in the order B, A, C; second one continues
    # from the fitted state in the order C, A
    for order in ([1, 0, 2], [2, 0]):
        est.remote_partial_fit([uris[i] for i in order],
                               data_options={'batch_size': batch}, **extra)
        for i in order:
            for Xb, yb in local_batches(*parts[i], batch):
                local.partial_fit(Xb, yb, **extra)
        np.testing.assert_allclose(est.coef_, local.coef_, rtol=0, atol=1e-12)
        np.testing.assert_allclose(est.intercept_, local.intercept_,
                                   rtol=0, atol=1e-12)
    assert est.t_ == local.t_
    runs = rconn.storlet_runs()
    assert [obj for obj, _, _ in runs] == ['B.csv', 'A.csv', 'C.csv',
                                           'C.csv', 'A.csv']
    for obj, node, via in runs:
        assert re.fullmatch(r'object-server-\d', node), (obj, node)
        assert via == 'parameters'
    assert not rconn.puts[3:]  # only the three uploads: no state object


@pytest.mark.parametrize('kind', ['classifier', 'regressor'])
def test_partial_fit_with_a_big_state_runs_on_the_proxy_and_cleans_up(
        rconn, container, kind):
    classifier = kind == 'classifier'
    # 3 classes x 2000 features, or 6000 features: a fitted state of 48 KB,
    # more than the ~36 KB the request headers can carry
    d = 2000 if classifier else 6000
    parts = make_parts(11, n=25, d=d, classifier=classifier)
    names = ['A.npy', 'B.npy', 'C.npy']
    uris = upload(rconn, container, parts, names, fmt='npy')
    cls, sk = ((SGDClassifier, SkSGDClassifier) if classifier
               else (SGDRegressor, SkSGDRegressor))
    est = cls(connection=rconn, random_state=5, shuffle=False, objects_per_call=1)
    local = sk(random_state=5, shuffle=False)
    extra = dict(classes=CLASSES) if classifier else {}
    uploads = len(rconn.puts)
    est.remote_partial_fit([uris[2], uris[0], uris[1]], **extra)
    for i in (2, 0, 1):
        local.partial_fit(*parts[i], **extra)
    np.testing.assert_allclose(est.coef_, local.coef_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(est.intercept_, local.intercept_,
                               rtol=0, atol=1e-12)
    assert len(state.dumps(est)) > remote.HeaderBudget().max_state_bytes

    runs = rconn.storlet_runs()
    assert [obj for obj, _, _ in runs] == ['C.npy', 'A.npy', 'B.npy']
    # The unfitted state of the first object is small and rides in headers;
    # the fitted ones go through a temporary object, so the proxy runs them.
    assert runs[0][1].startswith('object-server-')
    assert runs[0][2] == 'parameters'
    assert [(node, via) for _, node, via in runs[1:]] == [
        ('proxy', 'extra-resource')] * 2
    temps = rconn.puts[uploads:]
    assert len(temps) == 2
    assert all(c == container and o.startswith(remote.STATE_PREFIX)
               for c, o in temps)
    assert rconn.deletes == temps
    for c, o in temps:
        with pytest.raises(ClientException) as err:
            rconn.head_object(c, o)
        assert err.value.http_status == 404
    listing = rconn.get_container(container, full_listing=True)[1]
    assert sorted(e['name'] for e in listing) == names


@pytest.mark.parametrize('kind', ['classifier', 'regressor'])
def test_a_pass_in_groups_equals_local_and_fits_the_engine_limits(
        rconn, container, kind):
    # Twelve objects, each with 300 bytes of user metadata that the engine
    # puts in the invocation's 4 KB SBus datagram: the plan must split them
    # into several calls, every call must go through, and the result must
    # be the same as local partial_fit over the objects in the same order.
    classifier = kind == 'classifier'
    parts = make_parts(21, n_parts=12, n=40, classifier=classifier)
    names = ['g%02d.csv' % i for i in range(12)]
    uris = upload(rconn, container, parts, names)
    for name in names:
        rconn.post_object(container, name, headers={META + 'note-a': 'n' * 150,
                                                    META + 'note-b': 'n' * 150})
    cls, sk = ((SGDClassifier, SkSGDClassifier) if classifier
               else (SGDRegressor, SkSGDRegressor))
    params = dict(random_state=4, shuffle=False, alpha=0.001)
    est = cls(connection=rconn, **params)
    local = sk(**params)
    extra = dict(classes=CLASSES) if classifier else {}
    order = [5, 0, 11, 3, 7, 1, 2, 4, 6, 8, 9, 10]
    est.remote_partial_fit([uris[i] for i in order],
                           data_options={'batch_size': 16}, **extra)
    for i in order:
        for Xb, yb in local_batches(*parts[i], 16):
            local.partial_fit(Xb, yb, **extra)
    np.testing.assert_allclose(est.coef_, local.coef_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(est.intercept_, local.intercept_, rtol=0, atol=1e-12)
    assert est.t_ == local.t_
    calls = [(obj, resp) for _, obj, req, resp in rconn.gets if 'X-Run-Storlet' in req]
    assert 1 < len(calls) < 12
    counts = [int(resp[META + 'mlstorlets-objects']) for _, resp in calls]
    assert sum(counts) == 12
    # each call starts where the previous one stopped
    starts = np.cumsum([0] + counts[:-1])
    assert [obj for obj, _ in calls] == [names[order[i]] for i in starts]
    for (_, resp), n in zip(calls, counts):
        assert resp[META + 'mlstorlets-node'] == (
            'proxy' if n > 1 else resp[META + 'mlstorlets-node'])
    # the job (names, weights, sizes) and the state ride in the parameters
    # when the datagram has room left, else in a temporary object
    temps = rconn.puts[12:]
    vias = [resp[META + 'mlstorlets-state-via'] for _, resp in calls]
    assert len(temps) == vias.count('extra-resource')
    assert rconn.deletes == temps
    listing = rconn.get_container(container, full_listing=True)[1]
    assert sorted(e['name'] for e in listing) == names


def test_a_group_with_a_big_state_sends_it_as_one_temporary_object(rconn, container):
    # 3 classes x 2000 features: 48 KB of state, far over the datagram
    parts = make_parts(22, n_parts=4, n=25, d=2000)
    names = ['b%d.npy' % i for i in range(4)]
    uris = upload(rconn, container, parts, names, fmt='npy')
    est = SGDClassifier(connection=rconn, random_state=5, shuffle=False)
    local = SkSGDClassifier(random_state=5, shuffle=False)
    est.remote_partial_fit(uris[:1], classes=CLASSES)
    local.partial_fit(*parts[0], classes=CLASSES)
    uploads = len(rconn.puts)
    est.remote_partial_fit([uris[3], uris[1], uris[2]])
    for i in (3, 1, 2):
        local.partial_fit(*parts[i])
    np.testing.assert_allclose(est.coef_, local.coef_, rtol=0, atol=1e-12)
    runs = rconn.storlet_runs()[1:]
    assert runs == [('b3.npy', 'proxy', 'extra-resource')]
    temps = rconn.puts[uploads:]
    assert len(temps) == 1 and temps[0][1].startswith(remote.STATE_PREFIX)
    assert rconn.deletes == temps
    listing = rconn.get_container(container, full_listing=True)[1]
    assert sorted(e['name'] for e in listing) == names


# -- where it runs -----------------------------------------------------------

@pytest.fixture
def object_ring(cluster, monkeypatch):
    """The cluster's object ring, with the cluster's hash path secrets."""
    from swift.common import utils
    from swift.common.ring import Ring

    conf = ConfigParser()
    conf.read(os.path.join(cluster.layout.swift_dir, 'swift.conf'))
    monkeypatch.setattr(utils, 'SWIFT_CONF_FILE',
                        os.path.join(cluster.layout.swift_dir, 'swift.conf'))
    monkeypatch.setattr(utils, 'HASH_PATH_PREFIX', conf.get(
        'swift-hash', 'swift_hash_path_prefix').encode('latin1'))
    monkeypatch.setattr(utils, 'HASH_PATH_SUFFIX', conf.get(
        'swift-hash', 'swift_hash_path_suffix').encode('latin1'))
    return Ring(cluster.layout.swift_dir, ring_name='object')


def object_dir(cluster, node, account, container, obj):
    """Where object server ``node`` keeps the object (whether or not it does)."""
    from swift.common.ring import Ring
    from swift.common.utils import hash_path

    ring = Ring(cluster.layout.swift_dir, ring_name='object')
    part = ring.get_part(account, container, obj)
    name_hash = hash_path(account, container, obj)
    return os.path.join(cluster.layout.devices(node),
                        cluster.layout.device(node), 'objects', str(part),
                        name_hash[-3:], name_hash)


def node_of(cluster, node_name):
    n = int(re.fullmatch(r'object-server-(\d+)', node_name).group(1))
    assert 0 <= n < cluster.layout.nodes
    return n


def test_a_get_runs_on_an_object_server_holding_the_object(
        cluster, rconn, container, object_ring):
    assert rconn.get_auth()[0].rstrip('/').endswith('/' + ACCOUNT)
    names = ['part-%d.csv' % i for i in range(6)]
    uris = upload(rconn, container, make_parts(12, n_parts=6, n=20), names)
    est = SGDClassifier(connection=rconn, random_state=0, shuffle=False,
                        objects_per_call=1)
    est.remote_partial_fit(uris, classes=CLASSES)
    runs = rconn.storlet_runs()
    assert [obj for obj, _, _ in runs] == names
    for obj, node_name, via in runs:
        assert via == 'parameters'
        n = node_of(cluster, node_name)
        _, nodes = object_ring.get_nodes(ACCOUNT, container, obj)
        assert cluster.layout.object_port(n) in [d['port'] for d in nodes]
        # ... and the object is really on that node's disk
        assert glob.glob(os.path.join(
            object_dir(cluster, n, ACCOUNT, container, obj), '*.data'))


def test_the_storlet_runs_where_the_only_copy_is(
        cluster, rconn, container, object_ring):
    # The embedded cluster keeps a replica on every node, so the ring alone
    # cannot tell a node holding the object from one that does not.  Remove
    # the replicas from all nodes but one: the proxy must then find the only
    # copy, and the storlet must run there.
    (X, y), = make_parts(13, n_parts=1, n=30)
    uri, = upload(rconn, container, [(X, y)], ['only.csv'])
    _, nodes = object_ring.get_nodes(ACCOUNT, container, 'only.csv')
    ports = [d['port'] for d in nodes]
    keep = [n for n in range(cluster.layout.nodes)
            if cluster.layout.object_port(n) in ports][-1]
    try:
        for n in range(cluster.layout.nodes):
            if n != keep:
                path = object_dir(cluster, n, ACCOUNT, container, 'only.csv')
                for f in glob.glob(os.path.join(path, '*.data')):
                    os.unlink(f)
        for _ in range(3):   # whatever order the proxy tries the nodes in
            est = SGDClassifier(connection=rconn, random_state=0)
            est.remote_partial_fit(uri, classes=CLASSES)
        nodes_seen = {node for _, node, _ in rconn.storlet_runs()}
        assert nodes_seen == {'object-server-%d' % keep}
    finally:
        # restore every replica so that the container can be emptied
        rconn.put_object(container, 'only.csv', csv_bytes(X, y))


# -- remote_fit and remote_score ---------------------------------------------

@pytest.mark.parametrize('kind', ['classifier', 'regressor'])
def test_remote_fit_converges_and_scores_agree(rconn, container, kind):
    classifier = kind == 'classifier'
    names = ['p%d.csv' % i for i in range(4)]
    uris = upload(rconn, container,
                  make_parts(14, n_parts=4, n=150, classifier=classifier),
                  names)
    if classifier:
        est = SGDClassifier(connection=rconn, random_state=0, max_iter=100,
                            alpha=1e-3)
    else:
        est = SGDRegressor(connection=rconn, random_state=0, max_iter=100)
    with warnings.catch_warnings():
        warnings.simplefilter('error', ConvergenceWarning)
        est.remote_fit('swift://%s/' % container)
    assert 1 <= est.n_iter_ < 100
    assert est.t_ == 1 + est.n_iter_ * 600
    if classifier:
        # the classes were found in the objects, as ints
        np.testing.assert_array_equal(est.classes_, CLASSES)
        assert est.classes_.dtype.kind == 'i'
    X, y = download(rconn, container, names)
    local = est.score(X, y)
    assert local > (0.85 if classifier else 0.98)
    assert est.remote_score('swift://%s/' % container) == pytest.approx(
        local, abs=1e-9)
    # object weights too: the sums combine exactly as the weighted score
    weights = {uris[0]: 3.0, uris[2]: 0.5}
    w = np.repeat([3.0, 1.0, 0.5, 1.0], 150)
    assert est.remote_score(uris, sample_weight=weights) == pytest.approx(
        est.score(X, y, sample_weight=w), abs=1e-9)


# -- bad input -----------------------------------------------------------------

GOOD = csv_bytes(*make_parts(15, n_parts=1, n=40)[0])

BAD_OBJECTS = [
    # (id, payload, object name, pattern the message must hold)
    ('wrong-column-count', b'1,2,3,4,5,0\n1,2,3,4,5,1\n1,2,3,4,0\n',
     'bad.csv', r'line 3: 5 columns, expected 6'),
    ('fewer-features-than-the-model', b'1,2,3,4,0\n1,2,3,4,1\n',
     'bad.csv', r'line 1: 4 features, the model has 5'),
    ('non-numeric', b'1,2,3,4,5,0\n1,2,abc,4,5,1\n',
     'bad.csv', r"line 2: non-numeric value 'abc'"),
    ('nan', b'1,2,3,4,5,0\n1,2,3,4,5,1\n1,nan,3,4,5,1\n',
     'bad.csv', r'line 3: feature is NaN or infinite'),
    ('inf', b'# a comment\n1,2,3,4,5,0\n1,2,3,inf,5,1\n',
     'bad.csv', r'line 3: feature is NaN or infinite'),
    ('label-outside-classes', b'1,2,3,4,5,0\n1,2,3,4,5,7\n',
     'bad.csv', r'line 2: label 7.0 is not one of the classes \[0, 1, 2\]'),
    ('not-utf8', b'1,2,3,4,5,0\n\xff\xfe\x00garbage\n',
     'bad.csv', r'not UTF-8 text'),
    ('npy-nan', npy_bytes(np.r_[np.ones((4, 5)), [[1, 2, np.nan, 4, 5]]],
                          np.zeros(5)),
     'bad.npy', r'row 4: feature is NaN or infinite'),
    ('empty', b'', 'bad.csv', r'empty object: no data rows'),
    ('missing', None, 'missing.csv', r'source object not found'),
]


@pytest.mark.parametrize('payload,obj,pattern',
                         [case[1:] for case in BAD_OBJECTS],
                         ids=[case[0] for case in BAD_OBJECTS])
@pytest.mark.parametrize('per_call', [1, None], ids=['per-object', 'grouped'])
def test_bad_objects_are_refused_and_the_estimator_is_untouched(
        rconn, container, payload, obj, pattern, per_call):
    rconn.put_object(container, 'good.csv', GOOD)
    if payload is not None:
        rconn.put_object(container, obj, payload)
    good, bad = ('swift://%s/%s' % (container, o) for o in ('good.csv', obj))
    est = SGDClassifier(connection=rconn, random_state=0, objects_per_call=per_call)

    # unfitted: nothing is set
    before = snapshot(est)
    with pytest.raises(ObjectError) as err:
        est.remote_partial_fit([good, bad], classes=CLASSES)
    assert_same(before, snapshot(est))
    assert not hasattr(est, 'coef_')

    # fitted: after the good object has trained in the cluster, the bad one
    # fails the pass and the estimator stays exactly as it was
    est.remote_partial_fit(good, classes=CLASSES)
    before = snapshot(est)
    calls = [lambda: est.remote_partial_fit([good, bad])]
    if 'label' not in pattern:
        # scoring counts a label outside the classes as a mistake, as
        # scikit-learn's score does
        calls.append(lambda: est.remote_score([good, bad]))
    for call in calls:
        with pytest.raises(ObjectError) as err:
            call()
        assert_same(before, snapshot(est))
        message = str(err.value)
        assert err.value.name == bad
        assert re.search(pattern, message), message
        status = err.value.__cause__.http_status
        if payload is None:
            assert status == 404
            assert ('failed over %s/%s' % (container, obj) if per_call
                    else 'source object not found (404') in message
        elif per_call:
            # the middleware's answer to the storlet's refusal
            assert status == 422
            assert 'storlet %s refused %s/%s: ' % (
                remote.STORLET_NAME, container, obj) in message
        else:
            # the proxy names the group's first object (either, as shuffled),
            # the client the one the storlet refused
            assert status == 422
            assert 'storlet %s refused it, in a call over 2 objects from swift://%s/' % (
                remote.STORLET_NAME, container) in message


def test_remote_fit_failure_leaves_a_fitted_estimator_untouched(
        rconn, container):
    uris = upload(rconn, container, make_parts(16, n_parts=2, n=40,
                                               classifier=False),
                  ['a.csv', 'b.csv'])
    rconn.put_object(container, 'c.csv', b'1,2,3,4,5,6\n1,2,3,4,5,inf\n')
    est = SGDRegressor(connection=rconn, random_state=0, max_iter=5, tol=None,
                       warm_start=True)
    est.remote_fit(uris)
    before = snapshot(est)
    with pytest.raises(ObjectError, match=r'c\.csv: .*line 2: label is NaN '
                                          r'or infinite'):
        est.remote_fit('swift://%s/' % container)
    assert_same(before, snapshot(est))


# -- the state --------------------------------------------------------------

def _fitted_state(rconn, container):
    uri, = upload(rconn, container, make_parts(17, n_parts=1, n=30), ['a.csv'])
    est = SGDClassifier(connection=rconn, random_state=0)
    est.remote_partial_fit(uri, classes=CLASSES)
    return uri, state.dumps(est)


def _with_header(blob, edit):
    import json
    import struct
    n = struct.unpack_from('<I', blob, len(state.MAGIC))[0]
    start = len(state.MAGIC) + 4
    header = json.loads(blob[start:start + n])
    edit(header)
    text = json.dumps(header).encode()
    return state.MAGIC + struct.pack('<I', len(text)) + text + blob[start + n:]


def _nan_coefficient(blob):
    return blob[:-8] + np.array([np.nan]).tobytes()


BAD_STATES = [
    ('garbage', lambda blob: b'not a model state', r'bad magic'),
    ('truncated', lambda blob: blob[:-3], r'truncated data|trailing bytes'),
    ('nan-coefficient', _nan_coefficient, r'NaN or infinite'),
    ('bad-hyper-parameter',
     lambda blob: _with_header(blob, lambda h: h['params'].update(alpha=-1.0)),
     r'invalid hyper-parameters'),
    ('unknown-version',
     lambda blob: _with_header(blob, lambda h: h.update(version=99)),
     r'unsupported version 99'),
    ('wrong-shape',
     lambda blob: _with_header(
         blob, lambda h: h.update(n_features_in_=h['n_features_in_'] + 1)),
     r'shape'),
    # too big for headers: goes through a temporary object to the proxy
    ('big-garbage', lambda blob: b'\x00' * 100000, r'bad magic'),
]


@pytest.mark.parametrize('tamper,pattern', [c[1:] for c in BAD_STATES],
                         ids=[c[0] for c in BAD_STATES])
def test_the_storlet_refuses_an_invalid_state(rconn, container, tamper,
                                              pattern):
    uri, blob = _fitted_state(rconn, container)
    transport = remote.StorletTransport(rconn)
    bad = tamper(blob)
    for op in ('partial_fit', 'score'):
        with pytest.raises(ObjectError) as err:
            transport.run(uri, {'op': op}, bad)
        message = str(err.value)
        assert err.value.__cause__.http_status == 422
        assert 'refused %s/a.csv' % container in message
        assert 'invalid model state' in message
        assert re.search(pattern, message), message
    listing = rconn.get_container(container, full_listing=True)[1]
    assert [e['name'] for e in listing] == ['a.csv']


def test_the_storlet_refuses_broken_state_parameters(rconn, container):
    uri, blob = _fitted_state(rconn, container)
    transport = remote.StorletTransport(rconn)
    for params, pattern in (
            ({'state_parts': '2', 'state_0': 'AAAA'}, r'bad state parameters'),
            ({'state_parts': 'x'}, r'bad state parameters'),
            # base64 that decodes to nothing: no state at all
            ({'state_parts': '1', 'state_0': '!!!'}, r'invalid model state'),
            ({}, r'no model state')):
        with pytest.raises(ObjectError) as err:
            transport.run(uri, dict(params, op='partial_fit'))
        assert err.value.__cause__.http_status == 422
        assert re.search(pattern, str(err.value)), str(err.value)
    # and the good state still works through the same transport
    assert state.loads(transport.run(uri, {'op': 'partial_fit'}, blob)).fitted
