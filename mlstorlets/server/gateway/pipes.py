"""Bigger pipes for a storlet's data, within a budget per process.

The engine hands a storlet its inputs and takes its output through pipes,
64 KiB each by default: a storlet reading megabytes from the proxy then
waits on a writer woken every 64 KiB, and the proxy's green thread on the
storlet.  A bigger pipe (``F_SETPIPE_SZ``) lets each side move more per
wake-up.

Linux counts every pipe's capacity against its user (the swift user, for
all its servers' workers): past ``/proc/sys/fs/pipe-user-pages-soft``
(64 MiB by default) every new pipe of that user is cut to two pages, which
would slow every invocation, and enlarging fails.  So each process keeps
its enlarged pipes within a sixteenth of that limit (a host runs many
workers), and one invocation enlarges a few pipes at most; past either, a
pipe keeps the default size, which is only slower.
"""

import fcntl
import os

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)

#: Capacity given to a storlet's data pipe: past it, a bigger pipe gained
#: little in ``benchmarks/sgd_remote_vs_local.py``.
PIPE_BYTES = 256 << 10
#: Pipes one invocation enlarges at most.
PIPES_PER_INVOCATION = 8
#: Share of the user's soft limit one process's enlarged pipes may hold.
SOFT_LIMIT_SHARE = 16
#: Budget of a process where the user's pipes have no soft limit.
UNLIMITED_BUDGET = 8 << 20


def process_budget(path="/proc/sys/fs/pipe-user-pages-soft"):
    """Bytes of capacity this process's enlarged pipes may hold."""
    try:
        with open(path) as f:
            pages = int(f.read())
    except (OSError, ValueError):
        return 0
    if pages == 0:
        return UNLIMITED_BUDGET
    return pages * os.sysconf("SC_PAGE_SIZE") // SOFT_LIMIT_SHARE


class PipeBudget(object):
    """Enlarges pipes while the capacity they hold stays within ``total``.

    Green threads share one budget per process: eventlet switches only on
    I/O, so the bookkeeping needs no lock.
    """

    def __init__(self, total=None, size=PIPE_BYTES):
        self.total = process_budget() if total is None else total
        self.size = size
        self.used = 0

    def enlarge(self, fd):
        """Give the pipe ``fd`` ``size`` bytes if the budget has room.

        Returns
        -------
        int
            The bytes taken from the budget, to give back with
            :meth:`release` when the pipe is closed (0: none taken).
        """
        if self.used + self.size > self.total:
            return 0
        try:
            taken = fcntl.fcntl(fd, F_SETPIPE_SZ, self.size)
        except OSError:
            # Over the user's limit already, or not a pipe: keep its size.
            return 0
        # The whole capacity: what the kernel counts against the user.
        self.used += taken
        return taken

    def release(self, taken):
        self.used = max(0, self.used - taken)


#: This process's budget.
BUDGET = PipeBudget()


class EnlargedPipes(object):
    """The pipes one invocation enlarged, each given back once.

    Parameters
    ----------
    budget : PipeBudget
    """

    def __init__(self, budget=BUDGET, most=PIPES_PER_INVOCATION):
        self.budget = budget
        self.most = most
        self.taken = {}

    def enlarge(self, fds):
        """Enlarge ``fds`` in order, while this invocation and the process
        have room."""
        for fd in fds:
            if len(self.taken) >= self.most:
                return
            if fd is not None and fd not in self.taken:
                taken = self.budget.enlarge(fd)
                if taken:
                    self.taken[fd] = taken

    def closed(self, fds):
        """``fds`` are being closed: give back what their pipes took."""
        for fd in fds:
            self.budget.release(self.taken.pop(fd, 0))


__all__ = ["BUDGET", "PIPE_BYTES", "EnlargedPipes", "PipeBudget", "process_budget"]
