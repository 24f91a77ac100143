"""The agent's end of what a request started (no cluster).

tests/functional/test_leftovers.py shows it in the sandbox against a
hostile storlet.
"""

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, os, time
    from mlstorlets.server.agent import descendants
    descendants.become_subreaper()
    keep = os.fork()
    if keep == 0:
        time.sleep(60)
        os._exit(0)
    read, write = os.pipe()
    for _ in range(3):                    # detached grandchildren
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.write(write, b'%d,' % os.getpid())
                time.sleep(60)
            os._exit(0)
    pids = b''
    while pids.count(b',') < 3:
        pids += os.read(read, 100)
    pids = [int(p) for p in pids.decode().strip(',').split(',')]
    time.sleep(0.2)                       # the middle children are gone
    killed = descendants.kill_descendants(keep={keep})
    alive = [p for p in pids if os.path.exists('/proc/%d' % p)]
    kept = os.path.exists('/proc/%d' % keep)
    os.kill(keep, 9)
    print(json.dumps([killed, alive, kept]))
""")


def test_detached_grandchildren_are_killed_and_kept_children_are_not():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    killed, alive, kept = json.loads(done.stdout)
    # The three grandchildren (reparented to the subreaper), and the three
    # middle children if not yet reaped.
    assert killed >= 3
    assert alive == [] and kept


CHILDLESS = textwrap.dedent("""
    import json, os, time
    from mlstorlets.server.agent import descendants
    descendants.become_subreaper()
    before = descendants.has_children()
    read, write = os.pipe()
    if os.fork() == 0:                    # a child that leaves a grandchild
        os.setsid()
        if os.fork() == 0:
            os.write(write, b'%d,' % os.getpid())
            time.sleep(60)
        os._exit(0)
    grandchild = int(os.read(read, 100).decode().strip(','))
    time.sleep(0.2)                       # its parent is gone, unreaped
    during = descendants.has_children()
    killed = descendants.kill_descendants()
    print(json.dumps([before, during, killed, descendants.has_children(),
                      os.path.exists('/proc/%d' % grandchild)]))
""")


def test_a_process_without_children_is_told_so_and_a_detached_one_is_still_found():
    done = subprocess.run(
        [sys.executable, "-c", CHILDLESS], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    before, during, killed, after, alive = json.loads(done.stdout)
    assert (before, during, after, alive) == (False, True, False, False)
    assert killed >= 1
