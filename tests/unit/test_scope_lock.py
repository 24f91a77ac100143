"""The lock of an account's sandbox start, across a server's workers."""

import os
import subprocess
import sys
import threading
import time

from mlstorlets.server.gateway.scope_lock import ScopeLock, scope_lock

# Another worker: takes the lock, says so, holds it until its stdin closes.
WORKER = """
import sys
from mlstorlets.server.gateway.scope_lock import ScopeLock
lock = ScopeLock(sys.argv[1])
assert lock.acquire(timeout=10)
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


def _worker(path):
    proc = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-c", WORKER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "held\n"
    return proc


def test_a_lock_another_worker_holds_is_not_taken_within_the_timeout(tmp_path):
    path = str(tmp_path / "acme.lock")
    other = _worker(path)
    try:
        lock = ScopeLock(path)
        assert not lock.acquire(timeout=0.3)
        # A failed try leaves this worker's green threads free to try again.
        assert not lock.acquire(timeout=0.1)
    finally:
        other.stdin.close()
        other.wait(timeout=30)
    assert lock.acquire(timeout=5)
    lock.release()


def test_the_lock_of_a_worker_that_died_is_free(tmp_path):
    path = str(tmp_path / "acme.lock")
    other = _worker(path)
    other.kill()
    other.wait(timeout=30)
    lock = ScopeLock(path)
    assert lock.acquire(timeout=5)
    lock.release()


def test_a_waiter_takes_it_when_the_holder_releases(tmp_path):
    path = str(tmp_path / "acme.lock")
    other = _worker(path)
    lock = ScopeLock(path)
    started = time.monotonic()
    threading.Timer(0.3, other.stdin.close).start()
    assert lock.acquire(timeout=20)
    assert time.monotonic() - started >= 0.3
    lock.release()
    other.wait(timeout=30)


def test_green_threads_of_one_worker_take_it_in_turn(tmp_path):
    lock = scope_lock(str(tmp_path / "state"), "acme")
    assert lock is scope_lock(str(tmp_path / "state"), "acme")
    assert os.stat(tmp_path / "state").st_mode & 0o777 == 0o700
    assert lock.acquire(timeout=1)
    assert not lock.acquire(timeout=0.1)
    lock.release()
    assert lock.acquire(timeout=1)
    lock.release()
