"""Keystone v3 end to end: a real Keystone, a cluster whose proxy trusts it.

The Keystone is PyPI's ``keystone`` on sqlite (tests/keystone_server.py);
the cluster's proxy runs ``authtoken`` and Swift's ``keystoneauth`` in
tempauth's place.  The client, from Python and from the command line, is
given nothing but the ``OS_*`` variables a Keystone user has for the
``swift`` command line.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from keystone_server import Keystone
from support import free_base_port
from swiftclient.exceptions import ClientException

from mlstorlets.client.connection import connection_from_environment
from mlstorlets.client.deploy import deploy
from mlstorlets.client.placement import run_anywhere
from mlstorlets.client.stores.registry import Stores
from mlstorlets.server.aio import Cluster

BIN = os.path.dirname(sys.executable)
TEST_STORLETS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "storlets"
)


def _quiet(msg):
    pass


def _cli(env, *args):
    return subprocess.run(
        [os.path.join(BIN, args[0])] + list(args[1:]),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def keystone():
    server = Keystone(tempfile.mkdtemp(prefix="ks-"))
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(server.directory)


@pytest.fixture(scope="module")
def ks_cluster(keystone):
    base_port = free_base_port()
    keystone.add_object_store(base_port)
    keystone.grant_reseller_admin()
    cluster = Cluster(tempfile.mkdtemp(prefix="mls-"))
    env = dict(os.environ, **keystone.env())
    try:
        up = _cli(
            env,
            "mlstorlets",
            "aio",
            "up",
            "--keystone",
            "--state-dir",
            cluster.state_dir,
            "--nodes",
            "1",
            "--base-port",
            str(base_port),
        )
        assert up.returncode == 0, up.stderr
        deploy(cluster.connection(), TEST_STORLETS, library=False, log=_quiet)
        yield cluster
    finally:
        cluster.down(purge=True, log=_quiet)


@pytest.fixture
def os_environ(keystone, monkeypatch):
    """The process environment of a Keystone user, and nothing of tempauth."""
    for key in list(os.environ):
        if key.startswith(("ST_", "OS_", "AWS_")):
            monkeypatch.delenv(key)
    for key, value in keystone.env().items():
        monkeypatch.setenv(key, value)
    return dict(os.environ)


@pytest.fixture
def ks_container(ks_cluster):
    conn = ks_cluster.connection()
    name = "ks-%s" % os.urandom(4).hex()
    conn.put_container(name)
    yield name
    for entry in conn.get_container(name, full_listing=True)[1]:
        conn.delete_object(name, entry["name"])
    conn.delete_container(name)


def test_python_api_authenticates_with_os_v3_variables(
    keystone, ks_cluster, os_environ, ks_container
):
    conn = connection_from_environment()
    assert conn.auth_version == "3"
    project = keystone.admin().projects.find(name="admin")
    conn.put_object(ks_container, "in/a.txt", b"alpha", headers={"X-Object-Meta-Label": "A"})
    conn.put_object(ks_container, "in/b.txt", b"beta")
    # The account is the Keystone project's, reached through the catalog.
    assert conn.url.endswith("/v1/AUTH_%s" % project.id)
    names = [o["name"] for o in conn.get_container(ks_container)[1]]
    assert names == ["in/a.txt", "in/b.txt"]
    assert conn.get_object(ks_container, "in/a.txt")[1] == b"alpha"

    summary = run_anywhere(
        "probe.py", "swift://%s/in/" % ks_container, "swift://%s/out/" % ks_container
    )
    assert summary.placement == "cluster"
    assert len(summary.done) == 2 and not summary.failed
    headers, body = conn.get_object(ks_container, "out/a.txt")
    assert body == b"alpha"
    assert headers["x-object-meta-probe-inputs"] == "1"
    assert headers["x-object-meta-label"] == "A"
    assert Stores().in_cluster("swift://%s/" % ks_container)


def test_aio_env_gives_the_operators_os_variables(keystone, ks_cluster):
    env = _cli(dict(os.environ), "mlstorlets", "aio", "env", "--state-dir", ks_cluster.state_dir)
    assert env.returncode == 0, env.stderr
    values = dict(part.split("=", 1) for part in env.stdout.split()[1:])
    assert values == keystone.env()
    status = _cli(
        dict(os.environ), "mlstorlets", "aio", "status", "--state-dir", ks_cluster.state_dir
    )
    assert "auth: %s " % keystone.env()["OS_AUTH_URL"] in status.stdout
    assert "/auth/v1.0" not in status.stdout
    other = _cli(
        dict(os.environ),
        "mlstorlets",
        "aio",
        "env",
        "--state-dir",
        ks_cluster.state_dir,
        "--account",
        "other",
    )
    assert other.returncode == 2 and "no account 'other'" in other.stderr


def test_cli_authenticates_with_os_v3_variables(os_environ, ks_container, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    for i in range(3):
        (local / ("f%d.txt" % i)).write_bytes(b"file %d" % i)

    up = _cli(os_environ, "mlstorlets", "cp", "file://%s/" % local, "swift://%s/up/" % ks_container)
    assert up.returncode == 0, up.stderr
    run = _cli(
        os_environ,
        "mlstorlets",
        "run",
        "probe.py",
        "swift://%s/up/" % ks_container,
        "swift://%s/out/" % ks_container,
        "-p",
        "k=v",
        "-j",
        "2",
    )
    assert run.returncode == 0, run.stderr
    assert "3 done" in run.stdout
    down = _cli(
        os_environ,
        "mlstorlets",
        "cp",
        "swift://%s/out/" % ks_container,
        "file://%s/" % (tmp_path / "back"),
    )
    assert down.returncode == 0, down.stderr
    for i in range(3):
        assert (tmp_path / "back" / ("f%d.txt" % i)).read_bytes() == b"file %d" % i

    # The swift command line, given the same variables, sees the same
    # objects: both read them alike.
    listing = _cli(os_environ, "swift", "list", ks_container)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split() == (
        ["out/f%d.txt" % i for i in range(3)] + ["up/f%d.txt" % i for i in range(3)]
    )


def test_cli_names_the_missing_keystone_variable(os_environ):
    env = dict(os_environ)
    del env["OS_PASSWORD"]
    result = _cli(env, "mlstorlets", "deploy")
    assert result.returncode == 2
    assert "Auth version 3 requires OS_PASSWORD" in result.stderr


def test_storlet_acl_reads_keystones_user_name(keystone, ks_cluster, ks_container):
    owner = ks_cluster.connection()
    owner.put_object(ks_container, "secret.txt", b"only through the probe")
    # 'reader' gives a token on the project, but no access to its objects.
    reader = connection_from_environment(keystone.add_user("reader", "reader"))
    stranger = connection_from_environment(keystone.add_user("stranger", "reader"))
    # Both may read the storlet, which the middleware checks first.
    owner.post_container("storlet", {"X-Container-Read": "admin:reader,admin:stranger"})
    run = {"X-Run-Storlet": "probe.py"}
    for conn in (reader, stranger):
        with pytest.raises(ClientException) as err:
            conn.get_object(ks_container, "secret.txt", headers=run)
        assert err.value.http_status == 403

    owner.post_container(
        ks_container, {"X-Storlet-Container-Read": "reader", "X-Storlet-Name": "probe.py"}
    )

    headers, body = reader.get_object(ks_container, "secret.txt", headers=run)
    assert body == b"only through the probe"
    assert headers["x-object-meta-probe-inputs"] == "1"
    # The ACL lets the storlet's output out, not the object itself, and
    # only to the user it names (keystone's X-User-Name).
    with pytest.raises(ClientException) as err:
        reader.get_object(ks_container, "secret.txt")
    assert err.value.http_status == 403
    with pytest.raises(ClientException) as err:
        stranger.get_object(ks_container, "secret.txt", headers=run)
    assert err.value.http_status == 403


def test_requests_without_a_valid_token_are_refused(ks_cluster, ks_container):
    conn = ks_cluster.connection()
    url, _ = conn.get_auth()
    import requests

    for headers in (
        {},
        {"X-Auth-Token": "not-a-token"},
        # A client cannot pose as a user: authtoken replaces
        # the identity headers.
        {"X-User-Name": "admin", "X-Roles": "admin"},
    ):
        response = requests.get("%s/%s" % (url, ks_container), headers=headers, timeout=30)
        assert response.status_code == 401, headers
