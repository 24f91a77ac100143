"""The embedded cluster's life cycle and the deploy command."""

import glob
import io
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile

import pytest
from support import children, free_base_port

from mlstorlets.client.deploy import artifacts, deploy
from mlstorlets.server.aio import Cluster, ClusterError
from mlstorlets.server.gateway import cgroups, mounts

CLI = [sys.executable, "-m", "mlstorlets.client.cli"]
TEST_STORLETS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "storlets"
)


def cli(*args, env=None):
    return subprocess.run(
        CLI + list(args),
        capture_output=True,
        text=True,
        env=dict(os.environ, **(env or {})),
        timeout=120,
    )


def test_up_again_changes_nothing(cluster):
    before = cluster.status()
    messages = []
    assert cluster.up(log=messages.append) is False
    assert "nothing changed" in messages[0]
    assert cluster.status() == before


def test_status_and_env_commands(cluster):
    status = cli("aio", "status", "--state-dir", cluster.state_dir)
    assert status.returncode == 0, status.stderr
    for name in ("proxy-server", "object-server-2", "memcached"):
        assert name in status.stdout
    assert "stopped" not in status.stdout
    assert "auth: %s " % cluster.layout.auth_url in status.stdout
    env = cli("aio", "env", "--state-dir", cluster.state_dir)
    assert env.stdout.startswith("export ST_AUTH=http://127.0.0.1:")
    values = dict(part.split("=", 1) for part in env.stdout.split()[1:])
    # The printed credentials work with the swift CLI's variables.
    conn = __import__("mlstorlets.client.connection", fromlist=["x"]).connection_from_environment(
        values
    )
    assert conn.head_account()["x-account-meta-storlet-enabled"] == "True"


def test_changing_the_node_count_is_refused(cluster):
    with pytest.raises(ClusterError, match="made with nodes 3, not 1"):
        cluster.up(nodes=1)


def test_changing_the_proxy_bind_address_is_refused(cluster):
    with pytest.raises(ClusterError, match="made with proxy bind address 127.0.0.1, not 0.0.0.0"):
        cluster.up(proxy_bind_ip="0.0.0.0")


@pytest.fixture
def short_tmp():
    """A state directory of its own, removed after the test whatever it
    left there."""
    path = tempfile.mkdtemp(prefix="mls-")
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_a_taken_port_is_refused_clearly(short_tmp):
    tmp_path = short_tmp
    base = free_base_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", base + 2))
        sock.listen()
        with pytest.raises(ClusterError, match="port %d" % (base + 2)):
            Cluster(str(tmp_path)).up(base_port=base, log=lambda m: None)
    # Nothing was started or left half-made.
    assert not os.path.exists(tmp_path / "cluster.json")


def test_a_state_directory_too_deep_for_sockets_is_refused(tmp_path):
    deep = tmp_path / ("d" * 60)
    with pytest.raises(ClusterError, match="syslog socket .* 107 bytes"):
        Cluster(str(deep)).up(base_port=free_base_port(), log=lambda m: None)
    assert not deep.exists()


def test_the_deepest_state_directory_accepted_runs_storlets(short_tmp):
    """The default state directory lies under the user's home, at any
    depth: the deepest one accepted runs storlets on the object servers and
    on the proxy, whose sandboxes' sockets lie deeper still."""
    name = "run/log.sock"
    deep = str(short_tmp / "d")
    deep += "d" * (107 - len(deep) - len("/" + name))
    cluster = Cluster(deep)
    quiet = lambda m: None  # noqa: E731
    cluster.up(base_port=free_base_port(), log=quiet)
    try:
        assert len(cluster.layout.log_socket.encode()) == 107
        conn = cluster.connection()
        deploy(conn, TEST_STORLETS, library=False, log=quiet)
        conn.put_container("c")
        conn.put_object("c", "o", b"deep enough")
        for where in ({}, {"X-Storlet-Run-On-Proxy": ""}):
            headers, body = conn.get_object(
                "c", "o", headers=dict(where, **{"X-Run-Storlet": "probe.py"})
            )
            assert body == b"deep enough"
            assert headers["x-object-meta-probe-inputs"] == "1"
        sockets = glob.glob(os.path.join(deep, "storlets", "*", "sandboxes", "log-*.sock"))
        assert len(sockets) == 2 and all(len(s.encode()) > 107 for s in sockets)
    finally:
        cluster.down(purge=True, log=quiet)


def test_a_missing_prerequisite_is_refused_clearly(tmp_path):
    with pytest.raises(ClusterError, match="libsbus.so"):
        Cluster(str(tmp_path)).up(base_port=free_base_port(), native_lib_dir=str(tmp_path / "none"))


def test_down_stops_only_what_it_started(short_tmp):
    tmp_path = short_tmp
    cluster = Cluster(str(tmp_path))
    cluster.up(base_port=free_base_port(), log=lambda m: None)
    # A sandbox started: its file systems and cgroup exist until down.
    conn = cluster.connection()
    conn.put_container("c")
    conn.put_object("c", "o", b"x")
    deploy(conn, TEST_STORLETS, library=False, log=lambda m: None)
    conn.get_object("c", "o", headers={"X-Run-Storlet": "probe.py", "X-Storlet-Run-On-Proxy": ""})
    parent = cluster.layout.cgroup_parent
    assert mounts.mounts_under(str(tmp_path))
    assert glob.glob(os.path.join(cgroups.ROOT, "*", parent, "*"))
    pids = cluster.status()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        result = cli("aio", "down", "--state-dir", str(tmp_path), "--purge")
        assert result.returncode == 0, result.stderr
        for pid in pids.values():
            assert (
                not os.path.exists("/proc/%d" % pid)
                or open("/proc/%d/stat" % pid).read().split()[2] == "Z"
            )
        assert bystander.poll() is None
        assert not tmp_path.exists()
        assert mounts.mounts_under(str(tmp_path)) == []
        assert glob.glob(os.path.join(cgroups.ROOT, "*", parent)) == []
    finally:
        bystander.kill()


def test_a_new_library_reaches_running_storlets(cluster, other_conn, tmp_path, monkeypatch):
    """The engine never refreshes a cached dependency: a changed library
    must still reach a storlet that has already run."""
    import mlstorlets
    from mlstorlets.client import deploy as deployment

    source = tmp_path / "storlets"
    source.mkdir()
    (source / "version.py").write_text(VERSION_STORLET)
    other_conn.put_container("v")
    other_conn.put_object("v", "x", b"x")

    def version():
        headers, _ = other_conn.get_object("v", "x", headers={"X-Run-Storlet": "version.py"})
        return headers["x-object-meta-library-version"]

    quiet = lambda m: None  # noqa: E731
    deploy(other_conn, str(source), log=quiet)
    assert version() == mlstorlets.__version__
    built = deployment.library_zip()

    def next_version():
        # The same library with another version string.
        old, new = zipfile.ZipFile(io.BytesIO(built)), io.BytesIO()
        with zipfile.ZipFile(new, "w") as zf:
            for info in old.infolist():
                data = old.read(info)
                if info.filename == "mlstorlets/__init__.py":
                    data = data.replace(mlstorlets.__version__.encode(), b"99.0")
                zf.writestr(info, data)
        return new.getvalue()

    monkeypatch.setattr(deployment, "library_zip", next_version)
    deploy(other_conn, str(source), log=quiet)
    assert version() == "99.0"
    monkeypatch.undo()
    deploy(other_conn, str(source), log=quiet)
    assert version() == mlstorlets.__version__
    # The version superseded twice is gone; the one the project's storlets
    # (deployed to this account by the session) use is kept.
    _, deps = other_conn.get_container("dependency")
    assert [d["name"] for d in deps] == [deployment.artifacts(str(source))[0].name]


VERSION_STORLET = """
import os, sys
LIBRARY = None
if LIBRARY:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), LIBRARY))


class VersionStorlet(object):
    def __init__(self, logger):
        pass

    def __call__(self, in_files, out_files, params):
        import mlstorlets
        in_files[0].read()
        out_files[0].set_metadata({'Library-Version': mlstorlets.__version__})
        out_files[0].close()
"""


def test_deploy_uploads_only_what_changed(cluster, conn):
    # The session fixture deployed everything already.
    assert deploy(conn, log=lambda m: None) == []
    names = {a.name for a in artifacts()}
    library = [n for n in names if n.startswith("mlstorlets-")]
    assert len(library) == 1 and "estimator.py" in names
    for artifact in artifacts():
        headers = conn.head_object(artifact.container, artifact.name)
        assert headers["etag"] == artifact.etag
    main = conn.head_object("storlet", "estimator.py")
    assert main["x-object-meta-storlet-main"] == "estimator.EstimatorStorlet"
    assert main["x-object-meta-storlet-dependency"] == library[0]


def test_up_and_down_stop_the_workers_of_a_killed_server(short_tmp):
    import signal
    import time
    import urllib.request

    from mlstorlets.server.aio import processes

    cluster = Cluster(str(short_tmp))
    quiet = lambda m: None  # noqa: E731
    cluster.up(base_port=free_base_port(), log=quiet)
    try:
        port = cluster.layout.object_port(0)
        parent = cluster.status()["object-server-0"]
        workers = children(parent)
        assert workers
        os.kill(parent, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while processes.alive(parent) and time.monotonic() < deadline:
            time.sleep(0.05)
        # The orphaned worker goes on serving the port.
        with urllib.request.urlopen("http://127.0.0.1:%d/healthcheck" % port, timeout=5) as resp:
            assert resp.status == 200
        status = cli("aio", "status", "--state-dir", str(short_tmp))
        assert status.returncode == 3
        line = [row for row in status.stdout.splitlines() if row.startswith("object-server-0")][0]
        assert "still serving" in line and str(workers[0]) in line
        messages = []
        assert cluster.up(log=messages.append)
        assert any("object-server-0" in m and str(workers[0]) in m for m in messages)
        assert not any(processes.alive(w) for w in workers)
        assert all(cluster.status().values())
        conn = cluster.connection()
        conn.put_container("c")
        conn.put_object("c", "o", b"served again")
        assert conn.get_object("c", "o")[1] == b"served again"
        # down, too, stops what a dead parent left behind.
        parent = cluster.status()["object-server-0"]
        workers = children(parent)
        os.kill(parent, signal.SIGKILL)
        while processes.alive(parent) and time.monotonic() < deadline + 10:
            time.sleep(0.05)
        cluster.down(log=quiet)
        assert not any(processes.alive(w) for w in workers)
        assert not processes.port_in_use(port)
    finally:
        cluster.down(purge=True, log=quiet)
