"""A storlet's daemon that goes idle, on a cluster of its own.

The daemons here exit after 3 s with no request (``daemon_idle_time``; the
session's cluster keeps upstream's 300 s), and a server worker takes a
daemon it saw running to run still for 60 s (``daemon_check_time``): the
request after an idle exit is sent to a daemon that is gone, the host's
second try path, which a daemon killed from outside also takes
(``test_agent``).  The test storlet ``counter.py`` answers which process
served it and how many requests that process served.
"""

import configparser
import glob
import os
import tempfile
import time

import pytest
from support import deploy_source, free_base_port

from mlstorlets.server.aio import Cluster

IDLE_TIME = 3
COUNTER = {"X-Run-Storlet": "counter.py", "X-Storlet-Run-On-Proxy": ""}
IDLE_EXIT = "Idle for %d s: exiting" % IDLE_TIME


@pytest.fixture(scope="module")
def idle():
    """A 1-node cluster whose storlet daemons exit after 3 s idle."""
    cluster = Cluster(tempfile.mkdtemp(prefix="mli-"))
    quiet = lambda msg: None  # noqa: E731
    cluster.up(base_port=free_base_port(), nodes=1, log=quiet)
    try:
        etc = os.path.dirname(cluster.layout.conf("proxy-server"))
        cluster.down(log=quiet)
        for path in glob.glob(os.path.join(etc, "storlet-gateway-*.conf")):
            conf = configparser.ConfigParser(interpolation=None)
            conf.read(path)
            conf["DEFAULT"]["daemon_idle_time"] = str(IDLE_TIME)
            conf["DEFAULT"]["daemon_check_time"] = "60"
            with open(path, "w") as f:
                conf.write(f)
        cluster.up(log=quiet)
        deploy_source(cluster.connection(), b"some input")
        yield cluster
    finally:
        cluster.down(purge=True, log=quiet)


def count(conn):
    _, body = conn.get_object("t", "src.txt", headers=COUNTER)
    host, pid, calls = body.decode().split()
    assert host == "proxy"
    return int(pid), int(calls)


class Log(object):
    """The cluster's syslog from now on."""

    def __init__(self, cluster):
        self.path = os.path.join(cluster.layout.log_dir, "syslog.log")
        self.start = os.path.getsize(self.path)

    def text(self):
        with open(self.path, errors="replace") as f:
            f.seek(self.start)
            return f.read()

    def wait_for(self, line, timeout):
        deadline = time.monotonic() + timeout
        while line not in self.text():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True


def test_an_idle_daemon_exits_and_the_next_request_starts_it_again(idle):
    conn = idle.connection(retries=0, timeout=60)
    count(conn)
    log = Log(idle)
    pid, calls = count(conn)
    # The counter's own daemon, and its workers with it: no other storlet
    # ran on this cluster's proxy since.
    assert log.wait_for(IDLE_EXIT, timeout=10 * IDLE_TIME), log.text()[-2000:]
    again, fresh = count(conn)
    # A new worker (its module state fresh) served it, not an error: the
    # host found the daemon gone and started it again.
    assert fresh == 1
    assert "storlet counter.py: SBus" in log.text()
    assert "activating it again" in log.text()
    # And it goes on serving.
    assert count(conn) == (again, 2)


def test_a_daemon_with_requests_coming_stays(idle):
    conn = idle.connection(retries=0, timeout=60)
    pid, calls = count(conn)
    log = Log(idle)
    served = []
    # Requests 10 times as often as the idle time, for twice as long.
    ends = time.monotonic() + 2 * IDLE_TIME
    while time.monotonic() < ends:
        served.append(count(conn))
        time.sleep(IDLE_TIME / 10)
    assert served == [(pid, calls + i) for i in range(1, len(served) + 1)]
    assert IDLE_EXIT not in log.text()
