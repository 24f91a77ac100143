"""Nothing a request starts outlives it.

A storlet may fork, and a child may detach (``setsid``, a double fork) and
go on sleeping or spinning after the request was answered, holding memory
and CPU of the account's sandbox.  A worker is made a *child subreaper*
(``PR_SET_CHILD_SUBREAPER``), so every process its storlet starts, however
it detaches, stays its descendant; after each request the worker kills
them all and reaps them, before it answers.  The storlet daemon is a
subreaper too: a worker killed mid-request (the host's cancel) leaves its
descendants to the daemon, which kills every child that is not one of its
workers.
"""

import ctypes
import os
import signal

PR_SET_CHILD_SUBREAPER = 36
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def become_subreaper():
    """Make orphaned descendants of this process its children, not
    init's."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def stat_fields(pid):
    """The fields of ``/proc/<pid>/stat`` after the command name (the
    first is the state), or None when the process is gone."""
    try:
        with open("/proc/%s/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces and ')'.
    return stat[stat.rindex(b")") + 2 :].split()


def cpu_seconds(pid):
    """The CPU time process ``pid`` used, all its threads, or None when
    it is gone."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    # utime and stime.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children(pid):
    """The pids whose parent is ``pid``, from ``/proc``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = stat_fields(name)
        if fields is not None and int(fields[1]) == pid:
            found.append(int(name))
    return found


def has_children():
    """Whether this process has a child, running or not yet reaped.

    In a subreaper, no child means no descendant at all: the oldest live
    process of any line of descendants is a child, as its parent either
    lives (and is a descendant, older in the line) or died and left it
    to this process.  One system call, where :func:`children` reads
    ``/proc``.
    """
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def kill_descendants(keep=()):
    """SIGKILL every descendant of this process and reap it; the count.

    A descendant's own children come back to this subreaper as their
    parent dies, and are killed in the next round, until none is left.

    Parameters
    ----------
    keep : collection of int
        Children to leave alone, with their own descendants.
    """
    if not keep and not has_children():
        return 0
    me = os.getpid()
    killed = 0
    while True:
        found = [pid for pid in children(me) if pid not in keep]
        if not found:
            return killed
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in found:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        killed += len(found)
