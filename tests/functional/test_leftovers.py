"""Nothing a request starts outlives it.

The hostile storlet starts two processes that detach (double fork,
``setsid``), one sleeping and one spinning, and returns.  Upstream's sandbox
kept them running after the answer (spinners slowed other tenants); the
worker, a child subreaper, kills them before it answers.
"""

from support import hostile


def test_detached_processes_end_with_their_request(conn, container):
    conn.put_object(container, "x", b"x")
    left = hostile(conn, container, "leave")
    assert left.startswith("allowed ")
    pids = left.split()[1]
    still = hostile(conn, container, "alive", pids=pids)
    print("left %s behind; still running after the answer: %s" % (pids, still.split()[1]))
    assert still == "allowed none"
