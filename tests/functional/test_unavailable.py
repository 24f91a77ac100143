"""A server that cannot start an account's sandbox, on a cluster of its own.

The proxy's gateway is given a bubblewrap that does not exist, then the
object server's.  A storlet run there then answers ``503`` with
``X-Mlstorlets-Error: unavailable``: the server's fault, not the
storlet's, and the reason sends the tenant to the server's log, which
says why, rather than showing the host's paths.
"""

import configparser
import os
import tempfile
from urllib.parse import unquote

import pytest
from support import deploy_source, free_base_port
from swiftclient.exceptions import ClientException

from mlstorlets.sandbox import protocol
from mlstorlets.server.aio import Cluster, processes

PROBE = "probe.py"
ON_PROXY = {"X-Storlet-Run-On-Proxy": ""}
SOURCE = b"hello storlets"


@pytest.fixture(scope="module")
def broken():
    """A 1-node cluster whose proxy cannot start a sandbox; the missing
    bubblewrap's path."""
    cluster = Cluster(tempfile.mkdtemp(prefix="mlu-"))
    quiet = lambda msg: None  # noqa: E731
    missing = os.path.join(cluster.state_dir, "no-such-bwrap")
    cluster.up(base_port=free_base_port(), nodes=1, log=quiet)
    try:
        deploy_source(cluster.connection(), SOURCE)
        without_bubblewrap(cluster, "proxy", missing)
        yield cluster, missing
    finally:
        cluster.down(purge=True, log=quiet)


def without_bubblewrap(cluster, server, missing):
    """Restart ``server`` (``proxy`` or ``object-server-0``) with a
    bubblewrap that does not exist."""
    etc = os.path.dirname(cluster.layout.conf("proxy-server"))
    path = os.path.join(etc, "storlet-gateway-%s.conf" % server)
    conf = configparser.ConfigParser(interpolation=None)
    conf.read(path)
    conf["DEFAULT"]["bwrap_path"] = missing
    with open(path, "w") as f:
        conf.write(f)
    assert processes.stop(cluster.layout.run_dir, server.replace("proxy", "proxy-server"))
    cluster.up(log=lambda msg: None)


def connect(cluster):
    return cluster.connection(retries=0, timeout=60)


def unavailable(call, missing):
    with pytest.raises(ClientException) as err:
        call()
    err = err.value
    assert err.http_status == 503, err.http_response_content
    headers = {k.lower(): v for k, v in err.http_response_headers.items()}
    assert headers[protocol.ERROR_HEADER.lower()] == protocol.UNAVAILABLE
    reason = unquote(headers[protocol.REASON_HEADER.lower()])
    assert PROBE in reason and "could not run" in reason
    assert "sandbox could not start" in reason and "log says why" in reason
    assert missing not in reason and missing.encode() not in err.http_response_content
    return reason


def test_a_get_run_where_the_sandbox_cannot_start_answers_unavailable(broken):
    cluster, missing = broken
    conn = connect(cluster)
    unavailable(
        lambda: conn.get_object("t", "src.txt", headers=dict({"X-Run-Storlet": PROBE}, **ON_PROXY)),
        missing,
    )
    # The server's log says why.
    with open(os.path.join(cluster.layout.log_dir, "syslog.log"), errors="replace") as f:
        log = f.read()
    assert "could not start" in log and missing in log
    # The object server's sandbox starts: the cluster goes on serving the
    # same storlet, and plain requests.
    _, body = conn.get_object("t", "src.txt", headers={"X-Run-Storlet": PROBE})
    assert body == SOURCE
    assert conn.get_object("t", "src.txt")[1] == SOURCE


def test_a_copy_run_where_the_sandbox_cannot_start_writes_nothing(broken):
    cluster, missing = broken
    conn = connect(cluster)
    reason = unavailable(
        lambda: conn.put_object(
            "t",
            "out.txt",
            b"",
            headers=dict({"X-Run-Storlet": PROBE, "X-Copy-From": "t/src.txt"}, **ON_PROXY),
        ),
        missing,
    )
    assert "t/src.txt" in reason
    names = [o["name"] for o in conn.get_container("t")[1]]
    assert names == ["src.txt"]
    assert conn.get_object("t", "src.txt")[1] == SOURCE


def test_an_object_server_whose_sandbox_cannot_start_answers_unavailable(broken):
    # Last: the cluster runs no storlet after it.
    cluster, missing = broken
    without_bubblewrap(cluster, "object-server-0", missing)
    conn = connect(cluster)
    # Through the object server's storlet_failure and the proxy's
    # storlet_copy, as a storlet's failure there is.
    unavailable(lambda: conn.get_object("t", "src.txt", headers={"X-Run-Storlet": PROBE}), missing)
    assert conn.get_object("t", "src.txt")[1] == SOURCE
