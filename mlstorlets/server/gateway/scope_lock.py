"""One start of an account's sandbox at a time on a node.

A Swift server runs several workers (processes), each with its green
threads, and all of them share an account's sandbox: its channels are
files of the node.  A worker that finds no sandbox answering starts one,
stopping what was there before.  Two workers doing so at once each stop
the other's sandbox under the requests it was serving.  The lock is held
across the check and the start, so the second worker finds the first's
sandbox answering and uses it.

It is a green semaphore (this worker's green threads) and a ``flock`` on a
file of the root-only state directory (the other workers; the kernel
drops it with a worker that dies).  The ``flock`` is tried without
blocking and retried with green sleeps: a blocking one would stop every
request of the worker.
"""

import fcntl
import os
import time

import eventlet
from eventlet.semaphore import Semaphore

# Between two tries of the file lock.
POLL = 0.02


class ScopeLock(object):
    """The lock of one scope (account) on one node.

    Parameters
    ----------
    path : str
        The lock file, in a directory only root can reach (a sandbox that
        could lock it would keep every worker from starting it again).
    """

    def __init__(self, path):
        self.path = path
        self._green = Semaphore()
        self._fd = None

    def acquire(self, timeout):
        """Take the lock within ``timeout`` seconds; whether it was taken."""
        deadline = time.monotonic() + timeout
        if not self._green.acquire(timeout=timeout):
            return False
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            self._green.release()
            raise
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    self._green.release()
                    return False
                eventlet.sleep(POLL)
                continue
            self._fd = fd
            return True

    def release(self):
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
            self._green.release()


# This worker's locks, by lock file.
_locks = {}


def scope_lock(state_dir, scope):
    """The lock of ``scope`` whose file is in ``state_dir``."""
    path = os.path.join(state_dir, "%s.lock" % scope)
    lock = _locks.get(path)
    if lock is None:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        lock = _locks[path] = ScopeLock(path)
    return lock
