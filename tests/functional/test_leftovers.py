"""Nothing a request starts outlives it.

The hostile storlet starts two processes that detach (double fork,
``setsid``), one sleeping and one spinning, and returns.  Upstream's sandbox
kept them running after the answer (spinners slowed other tenants); the
worker, a child subreaper, kills them before it answers.  Threads it leaves
running end with their worker, at once after the answer; a thread of native
code, which the worker cannot see, once its daemon sees the worker burn CPU
with no task.
"""

import time

import pytest
from support import hostile


def test_detached_processes_end_with_their_request(conn, container):
    conn.put_object(container, "x", b"x")
    left = hostile(conn, container, "leave")
    assert left.startswith("allowed ")
    pids = left.split()[1]
    still = hostile(conn, container, "alive", pids=pids)
    print("left %s behind; still running after the answer: %s" % (pids, still.split()[1]))
    assert still == "allowed none"


@pytest.mark.parametrize("action, within, every", [("threads", 10, 0.1), ("native-spin", 40, 5)])
def test_threads_left_running_end_with_their_worker(conn, container, action, within, every):
    conn.put_object(container, "x", b"x")
    left = hostile(conn, container, action)
    assert left.startswith("allowed ")
    pid = left.split()[1]
    # Python's threads: the worker ends once its answer is out, and the
    # daemon reaps it, a moment.  A native thread: once the daemon saw the
    # worker burn CPU between two looks with no task, seconds; asked
    # seldom, as each request (this poll's too) is a task of the worker.
    # Without either, the worker serves on, its threads with it.
    started = time.monotonic()
    while hostile(conn, container, "alive", pids=pid) != "allowed none":
        assert time.monotonic() < started + within, "worker %s runs on with the threads" % pid
        time.sleep(every)
    print("%s: worker %s ended %.1f s after the answer" % (action, pid, time.monotonic() - started))
    # The account's next request is served by another worker.
    assert hostile(conn, container, "whoami").startswith("allowed uid=")
