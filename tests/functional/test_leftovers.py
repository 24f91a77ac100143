"""Nothing a request starts outlives it.

The hostile storlet starts two processes that detach (double fork,
``setsid``), one sleeping and one spinning, and returns.  Upstream's sandbox
kept them running after the answer (spinners slowed other tenants); the
worker, a child subreaper, kills them before it answers.  Threads it leaves
running end with their worker, at once after the answer.
"""

import time

from support import hostile


def test_detached_processes_end_with_their_request(conn, container):
    conn.put_object(container, "x", b"x")
    left = hostile(conn, container, "leave")
    assert left.startswith("allowed ")
    pids = left.split()[1]
    still = hostile(conn, container, "alive", pids=pids)
    print("left %s behind; still running after the answer: %s" % (pids, still.split()[1]))
    assert still == "allowed none"


def test_threads_left_running_end_with_their_worker(conn, container):
    conn.put_object(container, "x", b"x")
    left = hostile(conn, container, "threads")
    assert left.startswith("allowed ")
    pid = left.split()[1]
    # The worker ends once its answer is out, and the daemon reaps it: a
    # moment, polled here.  Without the check it serves on, its threads
    # with it.
    deadline = time.monotonic() + 10
    while hostile(conn, container, "alive", pids=pid) != "allowed none":
        assert time.monotonic() < deadline, "worker %s runs on with the threads" % pid
        time.sleep(0.05)
    # The account's next request is served by another worker.
    assert hostile(conn, container, "whoami").startswith("allowed uid=")
