"""A storlet past its timeout, on a cluster of its own with a short one.

The storlet timeout here is 8 s (the session's cluster keeps the default
40 s), so each case below costs seconds.  It covers a sandbox's start: the
first request of each account must fit in it too.  The probe's ``spin`` action loops
forever before any output.
"""

import concurrent.futures
import os
import tempfile

import pytest
from support import deploy_source, free_base_port
from swiftclient.exceptions import ClientException

from mlstorlets.sandbox import protocol
from mlstorlets.server.aio import Cluster
from mlstorlets.server.gateway.scope import account_scope

STORLET_TIMEOUT = 8
PROBE = "probe.py"
ON_PROXY = {"X-Storlet-Run-On-Proxy": ""}


@pytest.fixture(scope="module")
def short():
    """A 3-node cluster whose storlets time out after 8 s."""
    cluster = Cluster(tempfile.mkdtemp(prefix="mlt-"))
    quiet = lambda msg: None  # noqa: E731
    cluster.up(base_port=free_base_port(), nodes=3, log=quiet, storlet_timeout=STORLET_TIMEOUT)
    try:
        for account in ("main", "other"):
            deploy_source(cluster.connection(account), b"hello storlets")
        yield cluster
    finally:
        cluster.down(purge=True, log=quiet)


def connect(cluster, account="main"):
    # No retries, and a client timeout far above the storlet timeout: a
    # hang fails the test instead of stalling the suite.
    return cluster.connection(account, retries=0, timeout=60)


def run(conn, query="action=copy", headers=None):
    return conn.get_object(
        "t",
        "src.txt",
        query_string=query,
        headers=dict({"X-Run-Storlet": PROBE}, **(headers or {})),
    )


def timed_out(call, killed_ok=False):
    """The ClientException of a call that must answer 'timed out'.

    With ``killed_ok``, a storlet may instead have been stopped with its
    sandbox, killed to stop another past its timeout.
    """
    with pytest.raises(ClientException) as err:
        call()
    err = err.value
    headers = {k.lower(): v for k, v in err.http_response_headers.items()}
    reason = headers[protocol.REASON_HEADER.lower()]
    if killed_ok and err.http_status == 502:
        assert headers[protocol.ERROR_HEADER.lower()] == protocol.FAILED
        assert "sandbox was killed" in reason
        return err
    assert err.http_status == 504, err.http_response_content
    assert headers[protocol.ERROR_HEADER.lower()] == protocol.TIMED_OUT
    assert PROBE in reason and "timed out" in reason
    assert "storlet timeout of %d s" % STORLET_TIMEOUT in reason
    assert reason.encode() in err.http_response_content
    return err


def object_server_gets(cluster, txn):
    """Object servers' log lines of the GETs that transaction made."""
    with open(os.path.join(cluster.layout.log_dir, "syslog.log"), errors="replace") as f:
        return [
            line
            for line in f
            if txn in line and line.startswith("<134>object-server-") and '"GET /d' in line
        ]


def test_concurrent_first_requests_start_one_sandbox(short):
    """The account 'other' has run nothing on the proxy yet."""

    def first(_):
        headers, body = run(connect(short, "other"), headers=ON_PROXY)
        return body, headers["x-object-meta-probe-host"]

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(first, range(6)))
    assert results == [(b"hello storlets", "proxy")] * 6
    with open(os.path.join(short.layout.log_dir, "syslog.log"), errors="replace") as f:
        log = f.readlines()
    # The gateway's account of it, and the sandboxes' own: each sandbox
    # started needs its daemon started (only the proxy ran 'other').
    scope = account_scope("AUTH_other")
    assert (
        len(
            [
                line
                for line in log
                if line.startswith("<134>proxy-server:")
                and "starting the sandbox of scope %s" % scope in line
            ]
        )
        == 1
    )
    assert (
        len(
            [
                line
                for line in log
                if scope in line
                and "daemon-factory" in line
                and "Command:SBUS_CMD_START_DAEMON" in line
            ]
        )
        == 1
    )


def test_a_spinning_storlet_times_out_on_one_object_server_only(short):
    conn = connect(short)
    err = timed_out(lambda: run(conn, "action=spin"))
    txn = {k.lower(): v for k, v in err.http_response_headers.items()}["x-trans-id"]
    # One replica ran it: the proxy asked no other.
    assert len(object_server_gets(short, txn)) == 1
    headers, body = run(conn)
    assert body == b"hello storlets"
    assert headers["x-object-meta-probe-host"].startswith("object-server-")


def test_a_spinning_storlet_times_out_on_the_proxy(short):
    conn = connect(short)
    timed_out(lambda: run(conn, "action=spin", ON_PROXY))
    for _ in range(2):
        headers, body = run(conn, headers=ON_PROXY)
        assert body == b"hello storlets"
        assert headers["x-object-meta-probe-host"] == "proxy"


def test_a_timed_out_copy_writes_nothing(short):
    conn = connect(short)
    timed_out(
        lambda: conn.put_object(
            "t",
            "out.txt",
            b"",
            headers={
                "X-Run-Storlet": PROBE,
                "X-Copy-From": "t/src.txt",
                "X-Storlet-Parameter-1": "action:spin",
            },
        )
    )
    with pytest.raises(ClientException) as missing:
        conn.head_object("t", "out.txt")
    assert missing.value.http_status == 404


def test_more_spinning_storlets_than_the_daemon_pool_all_time_out(short):
    """More spinning storlets than the daemon runs at once (upstream's takes
    no command, not even a cancel, with 5 spinning; the persistent agent
    queues what its workers cannot take): every one is answered."""

    def spin(_):
        return timed_out(
            lambda: run(connect(short), "action=spin", ON_PROXY), killed_ok=True
        ).http_status

    with concurrent.futures.ThreadPoolExecutor(7) as pool:
        assert 504 in list(pool.map(spin, range(7)))
    conn = connect(short)
    assert run(conn, headers=ON_PROXY)[1] == b"hello storlets"
    assert run(conn)[1] == b"hello storlets"
