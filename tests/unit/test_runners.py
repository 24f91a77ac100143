"""Where a command runs is decided once (runner_for), and the client runner
answers the same calls as the cluster's, over file:// objects."""

import os

import pytest
from swiftclient.client import Connection

from mlstorlets.client.errors import StorletFailed, UsageError
from mlstorlets.client.runners import ClientRunner, ClusterRunner, runner_for
from mlstorlets.client.stores import Stores
from mlstorlets.client.stores.local import FileStore
from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.errors import ObjectError

HERE = os.path.dirname(os.path.abspath(__file__))
TEST_STORLETS = os.path.join(os.path.dirname(HERE), "storlets")


@pytest.fixture
def cluster_stores():
    # A configured connection (never used: choosing makes no request).
    return Stores(
        environ={}, swift=Connection(preauthurl="http://127.0.0.1:9/v1/AUTH_x", preauthtoken="t")
    )


@pytest.fixture
def files(tmp_path):
    store = FileStore(str(tmp_path))
    for i in range(3):
        store.put("in/p%d" % i, b"x" * (i + 1), {"label": "l%d" % i})
    store.put("in/" + protocol.INTERNAL_PREFIX + "-state/s", b"state")
    return tmp_path


def test_in_the_cluster_when_every_uri_is(cluster_stores):
    runner = runner_for("swift://c/a/", "swift://c/b/", stores=cluster_stores)
    assert isinstance(runner, ClusterRunner) and runner.placement == "cluster"
    assert runner.source_name("swift://c/a/o") == "c/a/o"


def test_on_the_client_when_one_uri_is_not(cluster_stores, tmp_path):
    for uris in (
        ["swift://c/a/", "file://%s/" % tmp_path],
        [["swift://c/a", "file://%s/x" % tmp_path]],
    ):
        runner = runner_for(*uris, stores=cluster_stores)
        assert isinstance(runner, ClientRunner)
        assert runner.placement == "client"


def test_without_a_cluster_everything_runs_on_the_client():
    runner = runner_for("swift://c/a/", stores=Stores(environ={}))
    assert runner.placement == "client"


def test_a_missing_uri_does_not_decide(cluster_stores):
    assert runner_for("swift://c/a/", None, stores=cluster_stores).placement == "cluster"


def test_the_client_runner_lists_without_internal_names(files):
    runner = ClientRunner(Stores(environ={}), TEST_STORLETS)
    uris = runner.list_objects("file://%s/in/" % files)
    assert uris == ["file://%s/in/p%d" % (files, i) for i in range(3)]
    with pytest.raises(ObjectError, match="no such object"):
        runner.list_objects("file://%s/in/nothing" % files)
    (files / "empty").mkdir()
    with pytest.raises(ObjectError, match="no objects under this prefix"):
        runner.list_objects("file://%s/empty/" % files)


def test_the_client_runner_invokes_one_object_with_its_extras(files):
    runner = ClientRunner(Stores(environ={}), TEST_STORLETS)
    uri = "file://%s/in/p2" % files
    metadata, body = runner.invoke(
        "probe.py", [uri], {"k": "v"}, extras=["file://%s/in/p0" % files]
    )
    # The probe writes its inputs one after the other: the object, then
    # the extra.
    assert body == b"xxx" + b"x"
    # Keys lower case, as the cluster runner gives them.
    assert metadata["probe-params"] == "k=v"
    assert metadata["probe-inputs"] == "2" and metadata["label"] == "l2"
    assert runner.placements == ["client"] and runner.client_bytes == 3
    assert runner.plan([uri, uri], {}) == [[uri], [uri]]


def test_the_client_runner_stages_the_payload_in_the_parameters():
    runner = ClientRunner(Stores(environ={}))
    with runner.staged(b"\0" * 10000, {"op": "predict"}, []) as (params, extra):
        assert extra is None and params["op"] == "predict"
        assert protocol.read_state_parameters(params, 1 << 20) == b"\0" * 10000


def swift_publishing(monkeypatch, info):
    """A gateway to a cluster whose /info answers ``info`` (and which is
    asked nothing else)."""
    from mlstorlets.client.swift import Swift

    monkeypatch.setattr(Connection, "get_capabilities", lambda self, url=None: info)
    swift = Swift(Connection(preauthurl="http://127.0.0.1:9/v1/AUTH_x", preauthtoken="t"))
    swift.limits()  # read now, kept
    return swift


def test_the_cluster_runner_plans_by_the_limits_the_cluster_publishes(monkeypatch):
    from mlstorlets.client.swift import Limits

    published = {
        "swift": {"max_header_size": 16384},
        protocol.INFO_KEY: {"sbus_datagram_limit": 2048, "max_extract_members": 500},
    }
    assert swift_publishing(monkeypatch, published).limits() == Limits(16384, 2048, 500)
    # Nothing published: Swift's and the engine's defaults.
    assert swift_publishing(monkeypatch, {}).limits() == Limits()
    uris = ["swift://c/o%03d" % i for i in range(200)]
    groups = {}
    for datagram in (4096, 2048):
        info = {protocol.INFO_KEY: {"sbus_datagram_limit": datagram}}
        runner = ClusterRunner(Stores(environ={}), swift_publishing(monkeypatch, info))
        runner.describe = lambda found: {u: (10, {"label": "x" * 40}) for u in found}
        groups[datagram] = runner.plan(uris, {"op": "partial_fit"})
    # A smaller datagram, more calls of fewer objects.
    assert len(groups[2048]) > len(groups[4096])
    assert sum(map(len, groups[2048])) == 200


def test_the_client_runner_produces_one_output_over_many_inputs(files):
    runner = ClientRunner(Stores(environ={}), TEST_STORLETS)
    uris = runner.list_objects("file://%s/in/" % files)
    described = runner.describe(uris, concurrency=2)
    assert [described[u] for u in uris] == [(i + 1, {"label": "l%d" % i}) for i in range(3)]
    out = "file://%s/out/all" % files
    runner.produce("probe.py", uris, out, {}, {"Made-By": "test"}, "text/plain")
    store = FileStore(str(files))
    body, metadata = store.get("out/all")
    assert body == b"x" + b"xx" + b"xxx"
    assert metadata["Probe-Inputs"] == "3" and metadata["Made-By"] == "test"
    assert store.head("out/all").headers["Content-Type"] == "text/plain"
    assert runner.client_bytes == 6 and runner.placements == ["client"]


def test_a_failed_produce_writes_nothing(files):
    runner = ClientRunner(Stores(environ={}), TEST_STORLETS)
    out = "file://%s/out/none" % files
    with pytest.raises(StorletFailed, match="storlet probe.py failed: RuntimeError"):
        runner.produce("probe.py", ["file://%s/in/p0" % files], out, {"action": "fail-late"})
    assert not (files / "out" / "none").exists()


def test_removing_internal_objects_leaves_no_internal_folder(files):
    runner = ClientRunner(Stores(environ={}), TEST_STORLETS)
    shards = [
        "file://%s/m/%s/shards/run/s%d" % (files, protocol.INTERNAL_PREFIX, i) for i in range(3)
    ]
    for uri in shards:
        runner.put(uri, b"shard", "application/octet-stream")
    runner.put("file://%s/m/model" % files, b"model", "application/octet-stream")
    runner.delete(shards, concurrency=3)
    runner.delete(shards)  # a missing one is not an error
    # The shards' folders go; the model stays, with its content type.
    assert os.listdir(files / "m") == ["model"]
    store, uri = runner.stores.open("file://%s/m/model" % files)
    assert store.head(uri.key).headers["Content-Type"] == "application/octet-stream"


def test_on_the_client_by_request_even_for_cluster_uris(cluster_stores):
    runner = runner_for("swift://c/a/", "swift://c/b/", stores=cluster_stores, placement="client")
    assert isinstance(runner, ClientRunner)


def test_in_the_cluster_only_refuses_a_uri_outside_it(cluster_stores, tmp_path):
    runner = runner_for("swift://c/a/", stores=cluster_stores, placement="cluster")
    assert isinstance(runner, ClusterRunner)
    outside = "file://%s/x/" % tmp_path
    with pytest.raises(UsageError, match="in the cluster only, but %s is not in it" % outside):
        runner_for("swift://c/a/", outside, stores=cluster_stores, placement="cluster")
    with pytest.raises(UsageError, match="placement must be one of"):
        runner_for("swift://c/a/", stores=cluster_stores, placement="elsewhere")


def test_the_cli_refuses_before_any_work(files, capsys):
    from mlstorlets.client.cli import main

    src, dest = "file://%s/in/" % files, "file://%s/out/" % files
    for argv in (
        ["run", "extract_face.py", src, dest, "--in-cluster-only"],
        ["cp", src, dest, "--in-cluster-only"],
        ["faces", "train", src, "file://%s/m.npz" % files, "--in-cluster-only"],
        ["rotoscope", "file://%s/in/p0" % files, dest, "--filter", "cartoon", "--in-cluster-only"],
    ):
        assert main(argv) == 2, argv
        assert "in the cluster only, but file://" in capsys.readouterr().err
    assert not (files / "out").exists() and not (files / "m.npz").exists()
