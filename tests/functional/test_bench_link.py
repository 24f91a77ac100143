"""The benchmarks' shaped link (benchmarks/link.py): two network namespaces
joined by a veth pair; needs root and iproute2, as the benchmarks do."""

import os
import shutil
import socket
import sys
import tempfile

import pytest

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benchmarks")
)

from link import NETNS_DIR, Link, LinkedCluster  # noqa: E402
from support import free_base_port  # noqa: E402

from mlstorlets.server.aio.processes import alive  # noqa: E402


def ours(link):
    return (
        [n for n in os.listdir(NETNS_DIR) if n in link.namespaces.values()]
        if os.path.isdir(NETNS_DIR)
        else []
    )


def test_the_client_reaches_the_server_only_across_the_link():
    with Link("100mbit") as link:
        assert len(ours(link)) == 2
        with link.inside("server"):
            listener = socket.create_server(("0.0.0.0", 0))
        port = listener.getsockname()[1]
        with link.inside("client"), socket.create_connection((link.server_ip, port), timeout=5):
            pass
        # Not from the host's namespace, which the link leaves untouched.
        with pytest.raises(OSError):
            socket.create_connection((link.server_ip, port), timeout=1)
        listener.close()
    assert ours(link) == []


def test_the_link_is_removed_on_an_exception():
    with pytest.raises(RuntimeError):
        with Link("1gbit") as link:
            assert len(ours(link)) == 2
            raise RuntimeError("the benchmark failed")
    assert ours(link) == []


def test_a_bad_rate_is_refused_before_anything_is_made():
    with pytest.raises(ValueError, match="100mbit"):
        Link("fast")


def test_a_linked_cluster_serves_the_client_namespace():
    home = os.readlink("/proc/thread-self/ns/net")
    state = tempfile.mkdtemp(prefix="mlsl-")
    cluster = LinkedCluster(state, "1gbit")
    pids = []
    try:
        cluster.up(base_port=free_base_port(), log=lambda msg: None)
        assert os.readlink("/proc/thread-self/ns/net") != home
        pids = list(cluster.status().values())
        # This thread is now the client: its requests cross the link.
        auth, _, _ = cluster.credentials()
        assert auth.startswith("http://%s:" % cluster.link.server_ip)
        conn = cluster.connection()
        conn.put_container("c")
        conn.put_object("c", "o", b"across")
        assert conn.get_object("c", "o")[1] == b"across"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", cluster.layout.proxy_port), timeout=1)
    finally:
        cluster.down(purge=True, log=lambda msg: None)
        shutil.rmtree(state, ignore_errors=True)
    assert ours(cluster.link) == []
    assert os.readlink("/proc/thread-self/ns/net") == home
    assert pids and not any(alive(pid) for pid in pids)
