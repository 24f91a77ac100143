"""The sandbox's persistent agent (mlstorlets.server.agent) on the cluster.

Real Swift, the real storlets middleware and the bubblewrap sandbox, with
the test storlets ``counter.py`` (which process served me, how many times)
and ``crash.py`` (writes 1 MiB, then dies), neither built on the project's
base class.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from swiftclient.exceptions import ClientException

COUNTER = "counter.py"
CRASH = "crash.py"
MIB = 1 << 20


@pytest.fixture
def source(conn, container):
    conn.put_object(container, "source.txt", b"some input")
    return "source.txt"


def count(conn, container, source, on_proxy=False, **params):
    headers = {"X-Run-Storlet": COUNTER}
    if on_proxy:
        headers["X-Storlet-Run-On-Proxy"] = ""
    for i, kv in enumerate(sorted(params.items())):
        headers["X-Storlet-Parameter-%d" % (i + 1)] = "%s:%s" % kv
    _, body = conn.get_object(container, source, headers=headers)
    host, pid, calls = body.decode().split()
    return host, int(pid), int(calls)


def crash_params(**params):
    return {
        "X-Run-Storlet": CRASH,
        **{
            "X-Storlet-Parameter-%d" % (i + 1): "%s:%s" % kv
            for i, kv in enumerate(sorted(params.items()))
        },
    }


def test_one_worker_serves_consecutive_requests(conn, container, source):
    served = [count(conn, container, source, on_proxy=True) for _ in range(5)]
    hosts, pids, calls = zip(*served)
    assert set(hosts) == {"proxy"}
    # One process, its module state kept from one request to the next.
    assert len(set(pids)) == 1
    assert list(calls) == list(range(calls[0], calls[0] + 5))


def test_object_servers_keep_their_workers_too(conn, container, source):
    by_host = {}
    for _ in range(9):
        host, pid, calls = count(conn, container, source)
        by_host.setdefault(host, []).append((pid, calls))
    for host, seen in by_host.items():
        assert host.startswith("object-server-")
        assert len({pid for pid, _ in seen}) == 1, (host, seen)
        counts = [c for _, c in seen]
        assert counts == list(range(counts[0], counts[0] + len(counts)))


def test_concurrent_requests_use_several_workers(conn, container, source, cluster):
    with ThreadPoolExecutor(2) as pool:
        served = list(
            pool.map(
                lambda _: count(cluster.connection(), container, source, on_proxy=True, sleep=1),
                range(2),
            )
        )
    # Two requests at once went to two processes: both cores work.
    assert len({pid for _, pid, _ in served}) == 2


@pytest.mark.parametrize("how", ["raise", "exit", "kill"])
@pytest.mark.parametrize("declare", ["yes", "no"])
def test_a_storlet_dying_mid_output_leaves_no_object(conn, container, source, how, declare):
    dest = "out-%s-%s" % (how, declare)
    with pytest.raises(ClientException) as err:
        conn.put_object(
            container,
            dest,
            b"",
            headers=dict(
                crash_params(how=how, declare=declare, size=MIB),
                **{"X-Copy-From": "%s/%s" % (container, source)},
            ),
        )
    assert err.value.http_status == 502
    assert b"nothing was written" in err.value.http_response_content
    with pytest.raises(ClientException) as missing:
        conn.head_object(container, dest)
    assert missing.value.http_status == 404
    # The same storlet, in a replaced worker where it died, works next.
    conn.put_object(
        container,
        dest,
        b"",
        headers=dict(
            crash_params(how="none", declare=declare, size=MIB),
            **{"X-Copy-From": "%s/%s" % (container, source)},
        ),
    )
    assert conn.head_object(container, dest)["content-length"] == str(2 * MIB)


def test_copy_with_destination_of_a_dying_storlet_writes_nothing(conn, container, source):
    with pytest.raises(ClientException) as err:
        conn.copy_object(
            container, source, "/%s/copied" % container, headers=crash_params(how="exit")
        )
    assert err.value.http_status == 502
    with pytest.raises(ClientException) as missing:
        conn.head_object(container, "copied")
    assert missing.value.http_status == 404


def test_a_get_through_a_dying_storlet_is_an_error_not_a_short_body(conn, container, source):
    # Upstream streams what the storlet wrote, then cuts: a 200 with 1 MiB
    # of a 2 MiB answer.  The output is sent only once the storlet returned.
    for how in ("raise", "kill"):
        with pytest.raises(ClientException) as err:
            conn.get_object(
                container,
                source,
                headers=crash_params(how=how, declare="no", size=MIB, **{})
                | {"X-Storlet-Run-On-Proxy": ""},
            )
        assert err.value.http_status == 502
    _, body = conn.get_object(
        container,
        source,
        headers=dict(crash_params(how="none", size=MIB), **{"X-Storlet-Run-On-Proxy": ""}),
    )
    assert body == b"x" * (2 * MIB)


def test_a_crashed_worker_is_replaced(conn, container, source):
    _, before, _ = count(conn, container, source, on_proxy=True)
    with pytest.raises(ClientException):
        conn.get_object(
            container,
            source,
            headers=dict(crash_params(how="kill"), **{"X-Storlet-Run-On-Proxy": ""}),
        )
    # Another storlet's workers are not touched ...
    _, after, _ = count(conn, container, source, on_proxy=True)
    assert after == before
    # ... and the crashing storlet serves again.
    _, body = conn.get_object(
        container,
        source,
        headers=dict(crash_params(how="none", size=10), **{"X-Storlet-Run-On-Proxy": ""}),
    )
    assert body == b"x" * 20


def test_a_timed_out_request_does_not_break_the_next(conn, container, source, cluster):
    failed = []

    def slow():
        try:
            # Past the engine's storlet_timeout (40 s): the host cancels.
            # One attempt: a retry would wait for the timeout again.
            count(cluster.connection(retries=0), container, source, on_proxy=True, sleep=60)
        except ClientException as err:
            failed.append(err.http_status)

    thread = threading.Thread(target=slow)
    thread.start()
    # Once the slow request holds a worker (it sleeps 60 s in it), the
    # others are served by the one worker left.
    time.sleep(2)
    served = [count(conn, container, source, on_proxy=True) for _ in range(3)]
    thread.join()
    assert failed and failed[0] >= 500
    assert len({pid for _, pid, _ in served}) == 1
    # The cancelled task's worker was killed and replaced: the storlet
    # still serves, from every worker.
    with ThreadPoolExecutor(2) as pool:
        after = list(
            pool.map(
                lambda _: count(cluster.connection(), container, source, on_proxy=True, sleep=1),
                range(2),
            )
        )
    assert len({pid for _, pid, _ in after}) == 2


def _kill_daemons(storlet):
    """SIGKILL every sandbox daemon of ``storlet`` on this host (the test
    runs as root, as the servers do); their pids."""
    import os
    import signal

    killed = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"mlstorlets.server.agent.daemon" in argv and storlet.encode() in argv:
            os.kill(int(pid), signal.SIGKILL)
            killed.append(int(pid))
    return killed


def test_a_daemon_that_died_is_started_again_by_the_next_request(conn, container, source, cluster):
    import os

    # The proxy worker behind this connection saw the daemon running: it
    # does not ask the sandbox again within daemon_check_time.
    count(conn, container, source, on_proxy=True)
    log = os.path.join(cluster.layout.log_dir, "syslog.log")
    seen = os.path.getsize(log)
    assert _kill_daemons("counter.CounterStorlet")
    headers, body = conn.get_object(
        container, source, headers={"X-Run-Storlet": COUNTER, "X-Storlet-Run-On-Proxy": ""}
    )
    host, _, calls = body.decode().split()
    # Served by a new daemon (its module state fresh), not an error, and
    # given the whole input the first attempt never read.
    assert host == "proxy" and calls == "1"
    assert headers["x-object-meta-counter-read"] == str(len(b"some input"))
    with open(log, errors="replace") as f:
        f.seek(seen)
        text = f.read()
    assert "storlet counter.py: SBus" in text and "activating it again" in text
