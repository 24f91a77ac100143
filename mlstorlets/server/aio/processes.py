"""Start and stop the processes of an embedded cluster by recorded pid.

Each process is started as the leader of a new session and process group,
and its pid file records its pid and its start time (``/proc/<pid>/stat``
field 22, in clock ticks since boot), so that a pid reused by another
process is never taken for ours.  Swift's servers fork their workers into
the parent's group: when a server's parent dies (``kill -9``) its workers
go on serving, in a group whose id is the dead parent's pid.  The kernel
does not reuse a pid while a process group of that id exists, so members
of that group started no earlier than the parent are its orphaned workers;
:func:`orphans` finds them and :func:`stop` stops them with the parent.
Nothing is ever found by name.
"""

import errno
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request


def pidfile(run_dir, name):
    return os.path.join(run_dir, name + ".pid")


def _read_record(run_dir, name):
    """(pid, start time) recorded for ``name``; either may be None."""
    try:
        with open(pidfile(run_dir, name)) as f:
            fields = f.read().split()
    except OSError:
        return None, None
    try:
        pid = int(fields[0])
    except (ValueError, IndexError):
        return None, None
    try:
        return pid, int(fields[1])
    except (ValueError, IndexError):
        return pid, None


def _stat(pid):
    """(state, pgid, start time) of a process, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Fields after the command: state(3) ppid pgrp session ... starttime(22)
    return fields[0], int(fields[2]), int(fields[19])


def _ours(pid, started):
    """Whether ``pid`` is still the process we recorded (not a reused pid)."""
    stat = _stat(pid)
    return bool(stat) and (started is None or stat[2] == started)


def alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not a live server.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def running(run_dir, name):
    """The recorded pid of ``name`` if that process is still alive."""
    pid, started = _read_record(run_dir, name)
    return pid if alive(pid) and _ours(pid, started) else None


def orphans(run_dir, name):
    """Pids of the workers ``name`` left serving when its parent died.

    Empty while the parent runs (its workers are not orphans) or when no
    start time was recorded (nothing then tells ours from a stranger's).
    """
    pid, started = _read_record(run_dir, name)
    # A live process under that pid is ours running, or a stranger's that
    # reused the pid, which the kernel allows only once our group is gone.
    if not pid or started is None or alive(pid):
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat and stat[0] != "Z" and stat[1] == pid and stat[2] >= started:
            found.append(int(entry))
    return sorted(found)


def start(run_dir, log_dir, name, argv, env=None):
    """Start ``argv`` detached from us, record its pid, return it."""
    log = open(os.path.join(log_dir, name + ".log"), "ab")
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        log.close()
    stat = _stat(proc.pid)
    with open(pidfile(run_dir, name), "w") as f:
        f.write("%d %d\n" % (proc.pid, stat[2] if stat else 0))
    return proc.pid


def stop(run_dir, name, timeout=10.0):
    """Stop the process recorded under ``name``, its process group, and
    the workers it left behind if it died before.

    Returns True if something was running.  Only the pid recorded when we
    started it, and members of its group (see :func:`orphans`), are
    signalled, never a process found by name.
    """
    pid = running(run_dir, name)
    left = orphans(run_dir, name)
    try:
        os.unlink(pidfile(run_dir, name))
    except FileNotFoundError:
        pass
    if pid:
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if alive(pid):
            _signal_group(pid, signal.SIGKILL)
        _reap(pid)
    if left:
        _stop_orphans(left, timeout)
    return bool(pid or left)


def _stop_orphans(pids, timeout):
    # Each still one of ours: same group and start time as when found.
    stats = {pid: _stat(pid) for pid in pids}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, stat in stats.items():
            if stat and _same(pid, stat):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(
            stat and alive(pid) and _same(pid, stat) for pid, stat in stats.items()
        ):
            time.sleep(0.05)


def _same(pid, stat):
    now = _stat(pid)
    return bool(now) and now[1:] == stat[1:]


def _signal_group(pid, sig):
    # Our servers lead their own session (start_new_session), so the group
    # holds their workers and the sandboxes those started.
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def port_in_use(port, host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def wait_for_tcp(port, timeout, pid=None, host="127.0.0.1"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid and not alive(pid):
            return False
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def wait_for_healthcheck(port, timeout, pid=None):
    """Wait until ``http://127.0.0.1:port/healthcheck`` answers OK."""
    url = "http://127.0.0.1:%d/healthcheck" % port
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid and not alive(pid):
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    return False
