"""The bubblewrap sandbox attacked by a hostile storlet of the tests' own.

Each test makes one attack of issue 8's security list from inside a real
sandbox (tests/storlets/hostile.py) and checks that it has no effect on the
host, on another account, or on the cluster's service.  The attacks that
worked through host state in the channel directory need a sandbox start in
a fresh server worker, so those tests restart the proxy and run on it.
"""

import os
import stat
import subprocess

import pytest
from swiftclient.exceptions import ClientException

from mlstorlets.server.aio import processes
from mlstorlets.server.gateway.scope import account_scope

HOSTILE = "hostile.py"
PROBE = "probe.py"
RESULT = "x-object-meta-hostile-result"
ON_PROXY = {"X-Storlet-Run-On-Proxy": ""}
# Files the sandbox's /etc may hold: the dynamic loader's and Python's.
ETC = {"alternatives", "group", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd"}


def attack(conn, container, action, headers=None, **params):
    """Run the hostile storlet; return its report."""
    query = "&".join("%s=%s" % kv for kv in dict(params, action=action).items())
    headers, _ = conn.get_object(
        container,
        "input",
        query_string=query,
        headers=dict({"X-Run-Storlet": HOSTILE}, **(headers or {})),
    )
    return headers[RESULT]


def scope(conn):
    # The engine's scope: of the whole account name (not upstream's first
    # 13 characters).
    return account_scope(conn.url.rsplit("/", 1)[1])


def restart_proxy(cluster):
    """A fresh proxy worker: it starts its sandboxes anew."""
    assert processes.stop(cluster.layout.run_dir, "proxy-server")
    cluster.up(log=lambda msg: None)


@pytest.fixture
def target(conn, container):
    conn.put_object(container, "input", b"input data")
    return container


@pytest.fixture
def other_target(other_conn):
    other_conn.put_container("sandbox-attack")
    other_conn.put_object("sandbox-attack", "input", b"other data")
    yield "sandbox-attack"
    other_conn.delete_object("sandbox-attack", "input")
    other_conn.delete_container("sandbox-attack")


@pytest.fixture
def bystander():
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_planted_pid_is_never_signalled(cluster, conn, target, bystander):
    assert attack(conn, target, "plant-pid", ON_PROXY, pid=bystander.pid).startswith("allowed")
    restart_proxy(cluster)
    # The sandbox starts again in the new worker ...
    assert attack(conn, target, "whoami", ON_PROXY).startswith("allowed")
    # ... and the process whose pid the storlet wrote is untouched.
    assert bystander.poll() is None


def test_a_planted_wrapper_symlink_writes_nothing(cluster, conn, target, tmp_path):
    canary = tmp_path / "canary"
    canary.write_text("host file")
    canary.chmod(0o600)
    assert attack(conn, target, "plant-wrapper", ON_PROXY, target=str(canary)).startswith("allowed")
    restart_proxy(cluster)
    assert attack(conn, target, "whoami", ON_PROXY).startswith("allowed")
    assert canary.read_text() == "host file"
    assert stat.S_IMODE(canary.stat().st_mode) == 0o600


def test_a_planted_factory_path_does_not_keep_the_sandbox_down(cluster, conn, target):
    assert attack(conn, target, "block-factory", ON_PROXY).startswith("allowed")
    restart_proxy(cluster)
    # The host clears the factory's path before the sandbox starts: the
    # tenant's own sandbox is not down for good, nor the server blamed.
    assert attack(conn, target, "whoami", ON_PROXY).startswith("allowed")


def test_a_socket_symlink_does_not_reach_another_account(
    cluster, conn, other_conn, target, other_target
):
    attack(other_conn, other_target, "whoami", ON_PROXY)
    other_channels = os.path.join(cluster.layout.pipes_dir("proxy"), scope(other_conn))
    other_socket = os.path.join(other_channels, "hostile.HostileStorlet")
    assert stat.S_ISSOCK(os.stat(other_socket).st_mode)
    # What only a storlet served by the other account's sandbox sees.
    with open(os.path.join(other_channels, "marker-of-other"), "w"):
        pass
    attack(conn, target, "whoami", ON_PROXY)  # its daemon is running
    try:
        assert attack(
            conn,
            target,
            "redirect",
            ON_PROXY,
            storlet="hostile.HostileStorlet",
            target=other_socket,
        ).startswith("allowed")
        # The host refuses the link: the request fails, or runs in a daemon
        # the engine restarts in the account's own sandbox; never in the
        # other account's.
        try:
            report = attack(conn, target, "whoami", ON_PROXY)
        except ClientException:
            pass
        else:
            assert "marker-of-other" not in report
        # The other account is unaffected.
        assert "marker-of-other" in attack(other_conn, other_target, "whoami", ON_PROXY)
    finally:
        os.unlink(os.path.join(other_channels, "marker-of-other"))
        restart_proxy(cluster)  # a broken daemon socket stays broken
    assert attack(conn, target, "whoami", ON_PROXY).startswith("allowed")


def test_no_host_secrets_are_readable(conn, target):
    assert attack(conn, target, "read", path="/etc/shadow").startswith("denied: FileNotFoundError")
    environ = attack(conn, target, "read", path="/proc/1/environ")
    assert environ.startswith("denied: PermissionError") or environ == "allowed b''"
    etc = attack(conn, target, "whoami").split("etc=")[1].split(" ")[0]
    assert set(etc.split(",")) <= ETC


def test_storlets_run_unprivileged_one_uid_per_account(conn, other_conn, target, other_target):
    mine = attack(conn, target, "whoami").split()[1]
    theirs = attack(other_conn, other_target, "whoami").split()[1]
    assert mine.startswith("uid=") and mine != "uid=0"
    assert theirs != "uid=0"
    # Run on the proxy, both accounts' sandboxes are on one server.
    mine = attack(conn, target, "whoami", ON_PROXY).split()[1]
    theirs = attack(other_conn, other_target, "whoami", ON_PROXY).split()[1]
    assert mine != theirs


def test_mapping_20_gb_fails(conn, target):
    report = attack(conn, target, "mmap", gb=20)
    assert report.startswith("denied: OSError"), report


def test_forking_300_processes_fails(conn, target):
    report = attack(conn, target, "fork", n=300)
    assert report.startswith("denied: OSError"), report


def test_exhausting_memory_fails_and_the_cluster_keeps_serving(conn, target):
    with pytest.raises(ClientException) as err:
        attack(conn, target, "hog", gb=8)
    assert err.value.http_status >= 500
    assert attack(conn, target, "whoami").startswith("allowed")
    headers, body = conn.get_object(target, "input", headers={"X-Run-Storlet": PROBE})
    assert body == b"input data"
