"""Start and stop the processes of an embedded cluster by recorded pid."""

import errno
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request


def pidfile(run_dir, name):
    return os.path.join(run_dir, name + '.pid')


def read_pid(run_dir, name):
    try:
        with open(pidfile(run_dir, name)) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


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
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def running(run_dir, name):
    """The recorded pid of ``name`` if that process is still alive."""
    pid = read_pid(run_dir, name)
    return pid if alive(pid) else None


def start(run_dir, log_dir, name, argv, env=None):
    """Start ``argv`` detached from us, record its pid, return it."""
    log = open(os.path.join(log_dir, name + '.log'), 'ab')
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, close_fds=True)
    finally:
        log.close()
    with open(pidfile(run_dir, name), 'w') as f:
        f.write('%d\n' % proc.pid)
    return proc.pid


def stop(run_dir, name, timeout=10.0):
    """Stop the process recorded under ``name`` and its process group.

    Returns True if something was running.  Only the pid recorded when we
    started it is signalled, never a process found by name.
    """
    pid = read_pid(run_dir, name)
    try:
        os.unlink(pidfile(run_dir, name))
    except FileNotFoundError:
        pass
    if not alive(pid):
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if alive(pid):
        _signal_group(pid, signal.SIGKILL)
    _reap(pid)
    return True


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


def port_in_use(port, host='127.0.0.1'):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def wait_for_tcp(port, timeout, pid=None, host='127.0.0.1'):
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
    url = 'http://127.0.0.1:%d/healthcheck' % port
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
