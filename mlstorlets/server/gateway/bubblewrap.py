"""A storlets gateway that runs the storlet sandbox under bubblewrap.

The upstream container gateways (docker, podman) start the storlet daemon
factory inside a container per scope (account).  Where no container engine
runs, this gateway starts the same daemon factory under ``bwrap`` with the
isolation those containers give: no network, a read-only root, private
``/tmp``, ``/proc`` and ``/dev``, its own pid, IPC and UTS namespaces and no
capabilities.  Everything else -- SBus, the invocation protocol, the storlet
cache and registration checks -- is upstream code; only ``_restart`` differs.

Every storlet is hostile, so on top of that:

* nothing the host reads, trusts or executes lives where the sandbox can
  write.  The channel directory (``/mnt/channels`` inside) holds only the
  SBus sockets; the host connects to them through a descriptor opened
  without following links, and refuses anything but a socket there
  (:func:`send_without_following_links`).  The interpreter wrapper and the
  sandbox's ``passwd`` reach bwrap as data through pipes; the record of a
  running sandbox is kept in memory and in a root-only directory
  (``sandbox_state_dir``), and a recorded pid is signalled only while it is
  still the process that was started (same start time);
* storlets run as an unprivileged host uid, one per sandbox (server and
  account), so that the process-count limit counts one sandbox's processes
  and two accounts' storlets cannot signal or read each other.  bwrap
  builds the sandbox as root (it must bind host paths a plain user cannot
  reach, such as an interpreter under ``/root``), keeps only
  ``CAP_SETUID``/``CAP_SETGID`` for its child, and ``setpriv`` drops to that
  uid, with no capabilities left and ``no_new_privs``, before the daemon
  factory starts;
* ``/etc`` holds only what the dynamic loader and Python need, and a
  ``passwd``/``group`` naming the sandbox user; bwrap itself starts with an
  empty environment, so ``/proc/1/environ`` (bwrap is pid 1 inside, and
  unreadable by the sandbox uid anyway) shows nothing of the server's;
* memory, process-count and CPU-time limits, on by default (the defaults
  of :data:`mlstorlets.server.node.SANDBOX_LIMITS`).

Gateway options (the ``[DEFAULT]`` section of ``storlet_gateway_conf``), on
top of the upstream ones (``host_root``, ``storlet_timeout``, ...):

``native_lib_dir``
    Host directory holding ``libsbus.so`` (and an optional ``python/``
    directory), mounted read-only at ``/usr/local/lib/storlets`` inside.
    Default: ``<sys.prefix>/lib/storlets``.
``sandbox_python``
    Interpreter that storlet daemons run (the factory calls
    ``/usr/bin/python3``).  Default: this environment's ``python3``, so the
    sandbox has exactly the client's numpy, OpenCV and scikit-learn.
``sandbox_log_socket``
    Datagram socket bound at ``/dev/log`` inside; default ``/dev/log``.
``sandbox_hostname``
    Host name seen inside the sandbox (a storlet can tell where it ran).
``sandbox_state_dir``
    Root-only host directory where the gateway records the sandboxes it
    started; never mounted inside.  Default: ``<host_root>/sandboxes``.
``sandbox_uid_base``, ``sandbox_uid_range``
    The sandbox of an account on a server runs as uid (and gid)
    ``base + H(pipes_dir, account) mod range``, H a SHA-256: stable across
    restarts and workers, distinct per account (a collision only makes two
    sandboxes share a process budget).  Defaults 2000000000 and 16777216:
    above the ids any distribution allocates.
``container_mem_limit``
    Bytes of address space per process (``RLIMIT_AS``; upstream name).
``container_pids_limit``
    Processes and threads of the sandbox's uid (``RLIMIT_NPROC``; upstream
    name, docker's ``--pids-limit``).
``sandbox_cpu_time_limit``
    CPU-seconds per process (``RLIMIT_CPU``; ``SIGXCPU`` at the limit,
    ``SIGKILL`` 10 s later).  A backstop sized for the life of a sandbox
    process, not a request: each request is bounded by ``storlet_timeout``;
    a long-lived worker that reaches it dies and the engine starts another.
``sandbox_file_size_limit``
    ``RLIMIT_FSIZE`` in bytes: bounds any file a storlet writes.
``sandbox_tmp_size``
    Bytes of the private ``/tmp`` (a tmpfs, which is memory that
    ``RLIMIT_AS`` does not count).
``container_cpuset_cpus``
    Applied as CPU affinity.
``container_cpu_quota``, ``container_cpu_period``
    Not available without cgroups: a warning says so if they are set.
"""

import hashlib
import os
import re
import resource
import signal
import stat
import subprocess
import sys

from storlets.gateway.common.exceptions import StorletRuntimeException
from storlets.gateway.gateways.container.gateway import \
    StorletGatewayContainer
from storlets.gateway.gateways.container.runtime import RunTimeSandbox
from storlets.sbus import SBus

from mlstorlets.server.node import SANDBOX_LIMITS

SANDBOX_NATIVE_LIB_DIR = '/usr/local/lib/storlets'
SANDBOX_USER = 'storlets'
SHM_SIZE = 64 * 1024 ** 2
SETPRIV = '/usr/bin/setpriv'
UID_BASE = 2000000000
UID_RANGE = 2 ** 24
# Seconds between SIGXCPU (the soft CPU-time limit) and SIGKILL.
CPU_GRACE = 10
# The host's top-level directories the sandbox's root is built from.
ROOT_ENTRIES = ('usr', 'bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32')
# What of the host's /etc the dynamic loader and Python read; nothing else
# of it (no shadow, no Swift or host configuration) is visible inside.
ETC_ENTRIES = ('ld.so.cache', 'ld.so.conf', 'ld.so.conf.d', 'alternatives',
               'localtime')

# The sandbox processes this worker started, by scope.  Kept so that a
# restart reaps the old process instead of leaving a zombie behind.
_running = {}
_upstream_send = SBus.__dict__['send'].__func__


def default_native_lib_dir():
    return os.path.join(sys.prefix, 'lib', 'storlets')


def send_without_following_links(sbus_name, datagram):
    """``SBus.send`` to a socket path a tenant can write into.

    The channel directory is writable inside the sandbox: a storlet can
    replace a socket by a symlink to another account's socket or to any
    host path.  The last component is opened with ``O_PATH | O_NOFOLLOW``
    (its directories belong to the host), must be a socket, and is
    connected to through ``/proc/self/fd``, which names that very inode.
    Anything else is a failure to send (-1), which upstream's SBus client
    reports as such.
    """
    if '..' in sbus_name.split(os.sep):
        return -1
    try:
        fd = os.open(sbus_name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return -1
        return _upstream_send('/proc/self/fd/%d' % fd, datagram)
    finally:
        os.close(fd)


def _host_entries(parent, names):
    """bwrap arguments re-exposing ``parent/name`` read-only, as on the host.

    On a merged-/usr system ``/bin``, ``/lib``... are symlinks into ``/usr``
    (and ``/etc/localtime`` one into ``/usr/share/zoneinfo``): links are
    recreated as links, so that nothing else of the host leaks in.
    """
    entries = []
    for name in names:
        path = os.path.join(parent, name)
        if os.path.islink(path):
            entries += ['--symlink', os.readlink(path), path]
        elif os.path.exists(path):
            entries += ['--ro-bind', path, path]
    return entries


def _interpreters():
    """The interpreter paths the daemon factory may call, present on the host.

    The factory runs ``/usr/bin/python<Language-Version>``; each one that
    exists is replaced inside the sandbox by a wrapper that starts the
    configured interpreter.  A link to another of them (``python3`` to
    ``python3.11``) is left a link: mounting on it would mount on its
    target twice.
    """
    names = [os.path.join('/usr/bin', n) for n in sorted(os.listdir('/usr/bin'))
             if re.fullmatch(r'python3(\.\d+)?', n)]
    files = {os.path.realpath(n) for n in names if not os.path.islink(n)}
    return [n for n in names
            if not os.path.islink(n) or os.path.realpath(n) not in files]


def sandbox_uid(pipes_dir, scope, conf):
    """The host uid (and gid) a scope's sandbox runs as on one server."""
    digest = hashlib.sha256(('%s\0%s' % (pipes_dir, scope)).encode())
    return (int(conf.get('sandbox_uid_base', UID_BASE)) +
            int.from_bytes(digest.digest()[:8], 'big') %
            int(conf.get('sandbox_uid_range', UID_RANGE)))


def _start_time(pid):
    """The start time of ``pid`` (clock ticks after boot), or None."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            # The command name, in parentheses, may hold spaces.
            return int(f.read().rsplit(')', 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class BubblewrapRunTimeSandbox(RunTimeSandbox):
    """The per-scope sandbox, started as a bubblewrap child of this server."""

    def __init__(self, scope, conf, logger):
        conf = dict(SANDBOX_LIMITS, **conf)
        super().__init__(scope, conf, logger)
        self.native_lib_dir = conf.get('native_lib_dir',
                                       default_native_lib_dir())
        self.sandbox_python = conf.get(
            'sandbox_python', os.path.join(sys.prefix, 'bin', 'python3'))
        self.log_socket = conf.get('sandbox_log_socket', '/dev/log')
        self.hostname = conf.get('sandbox_hostname', 'storlets-sandbox')
        self.state_dir = conf.get(
            'sandbox_state_dir',
            os.path.join(self.paths.host_root_dir, 'sandboxes'))
        self.uid = sandbox_uid(self.paths.host_pipe_root_dir, scope, conf)
        self.file_size_limit = self._load_int_opt(
            conf, 'sandbox_file_size_limit')
        self.cpu_time_limit = self._load_int_opt(
            conf, 'sandbox_cpu_time_limit')
        self.tmp_size = self._load_int_opt(conf, 'sandbox_tmp_size')
        self.bwrap = conf.get('bwrap_path', '/usr/bin/bwrap')
        for option in ('container_cpu_quota', 'container_cpu_period'):
            if conf.get(option):
                logger.warning('%s is set but not enforced: the bubblewrap '
                               'sandbox uses no cgroups (CPU time is bounded '
                               'by sandbox_cpu_time_limit and '
                               'storlet_timeout)', option)

    @property
    def _record(self):
        return os.path.join(self.state_dir, '%s.pid' % self.scope)

    def _data(self):
        """Files made inside from data, by destination: no host file."""
        wrapper = '#!/bin/sh\nexec %s "$@"\n' % self.sandbox_python
        files = {path: (0o755, wrapper) for path in _interpreters()}
        files['/etc/passwd'] = (0o644, (
            'root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n'
            '%s:x:%d:%d:storlet sandbox:/tmp:/usr/sbin/nologin\n'
            'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n'
            % (SANDBOX_USER, self.uid, self.uid)))
        files['/etc/group'] = (0o644, 'root:x:0:\n%s:x:%d:\nnogroup:x:65534:\n'
                               % (SANDBOX_USER, self.uid))
        return files

    def _mounts(self, data_fds):
        """bwrap arguments that build the sandbox's file system.

        ``data_fds`` maps each path of :meth:`_data` to the descriptor that
        carries its content.
        """
        args = ['--tmpfs', '/'] + _host_entries('/', ROOT_ENTRIES)
        # bwrap, run by root, makes the directories leading to a mount point
        # 0700: each is made first, readable by the sandbox user.
        made = {'/', '/usr', '/tmp', '/proc', '/dev', '/etc'}

        def parents(dest):
            out = []
            path = os.path.dirname(dest)
            while path not in made and not path.startswith('/usr/'):
                out[:0] = ['--perms', '0755', '--dir', path]
                made.add(path)
                path = os.path.dirname(path)
            return out

        args += ['--perms', '0755', '--dir', '/etc']
        args += _host_entries('/etc', ETC_ENTRIES)
        # Private /proc, /dev and /tmp first: what is bound below must stay
        # visible even when it lives under the host's /tmp (a checkout there).
        args += ['--proc', '/proc', '--dev', '/dev', '--perms', '1777']
        if self.tmp_size:
            args += ['--size', str(self.tmp_size)]
        args += ['--tmpfs', '/tmp']
        # Semaphores for joblib and multiprocessing; docker's default size.
        args += ['--perms', '1777', '--size', str(SHM_SIZE),
                 '--tmpfs', '/dev/shm']
        # /usr is read-only, so the mount point of the native library
        # directory is made on a tmpfs over /usr/local/lib, into which the
        # host's own entries are bound back.
        local_lib = '/usr/local/lib'
        args += ['--tmpfs', local_lib]
        for name in sorted(os.listdir(local_lib)):
            if name != 'storlets':
                path = os.path.join(local_lib, name)
                args += ['--ro-bind', path, path]
        args += ['--ro-bind', self.native_lib_dir, SANDBOX_NATIVE_LIB_DIR]
        # The interpreter, its standard library and the environment holding
        # numpy, OpenCV and scikit-learn, at the paths they have outside.
        venv = os.path.dirname(os.path.dirname(self.sandbox_python))
        home = os.path.dirname(os.path.dirname(
            os.path.realpath(self.sandbox_python)))
        for prefix in sorted({venv, home, os.path.realpath(sys.base_prefix)}):
            if prefix != '/usr' and not prefix.startswith('/usr/'):
                args += parents(prefix) + ['--ro-bind', prefix, prefix]
        files = self._data()
        for path in sorted(files):
            args += ['--perms', '%04o' % files[path][0],
                     '--ro-bind-data', str(data_fds[path]), path]
        args += parents(self.paths.sandbox_pipe_dir) + [
            '--bind', self.paths.host_pipe_dir, self.paths.sandbox_pipe_dir]
        args += parents(self.paths.sandbox_storlet_base_dir) + [
            '--ro-bind', self.paths.host_storlet_base_dir,
            self.paths.sandbox_storlet_base_dir]
        if os.path.exists(self.log_socket):
            args += ['--bind', self.log_socket, '/dev/log']
        args += ['--remount-ro', '/']
        return args

    def _command(self, container_name, data_fds):
        return [
            self.bwrap,
            '--die-with-parent', '--new-session',
            '--unshare-net', '--unshare-pid', '--unshare-ipc',
            '--unshare-uts', '--hostname', self.hostname,
            # Only what setpriv needs to drop to the sandbox uid; the uid
            # change clears them (no keep-caps, no ambient set).
            '--cap-drop', 'ALL',
            '--cap-add', 'CAP_SETUID', '--cap-add', 'CAP_SETGID',
        ] + self._mounts(data_fds) + [
            '--chdir', '/',
            '--clearenv',
            '--setenv', 'PATH', '/usr/bin:/bin',
            '--setenv', 'HOME', '/tmp',
            '--setenv', 'TMPDIR', '/tmp',
            '--setenv', 'USER', SANDBOX_USER,
            '--setenv', 'PYTHONPATH',
            os.path.join(SANDBOX_NATIVE_LIB_DIR, 'python'),
            SETPRIV, '--reuid', str(self.uid), '--regid', str(self.uid),
            '--clear-groups', '--inh-caps', '-all', '--no-new-privs', '--',
            '/usr/bin/python3',
        ] + self._get_container_command(container_name)

    def _limits(self):
        """Limits applied to the sandbox between fork and exec."""
        mem_limit = self.container_mem_limit
        if isinstance(mem_limit, str):
            raise StorletRuntimeException(
                'container_mem_limit must be a number of bytes, not %r'
                % mem_limit)
        cpus = self.container_cpuset_cpus
        cpuset = _parse_cpuset(cpus) if cpus else None
        limits = []
        if mem_limit:
            limits.append((resource.RLIMIT_AS, mem_limit, mem_limit))
        if self.file_size_limit:
            limits.append((resource.RLIMIT_FSIZE, self.file_size_limit,
                           self.file_size_limit))
        if self.container_pids_limit:
            # Counted per real uid: the sandbox's processes and threads
            # (bwrap itself runs as root, which the limit exempts).
            limits.append((resource.RLIMIT_NPROC, self.container_pids_limit,
                           self.container_pids_limit))
        if self.cpu_time_limit:
            limits.append((resource.RLIMIT_CPU, self.cpu_time_limit,
                           self.cpu_time_limit + CPU_GRACE))

        def apply():
            for which, soft, hard in limits:
                resource.setrlimit(which, (soft, hard))
            if cpuset:
                os.sched_setaffinity(0, cpuset)
        return apply

    def _stop_previous(self):
        """Stop the scope's sandbox this server started before, if any.

        The one this worker started is known by its process; one another
        worker of this server started, by the root-only record, and only
        while that pid is still the process recorded (same start time).
        """
        proc = _running.pop(self.scope, None)
        if proc:
            proc.kill()
            proc.wait()
            return
        try:
            with open(self._record) as f:
                pid, started = (int(n) for n in f.read().split())
        except (OSError, ValueError):
            return
        if _start_time(pid) == started:
            try:
                # bwrap is the parent of the sandbox's pid namespace:
                # ending it ends every process inside.
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _prepare_host_dirs(self):
        os.makedirs(self.paths.host_storlet_base_dir, exist_ok=True)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        # Upstream leaves the channel directory 0777; it is the sandbox
        # user's own, out of reach of any other uid but root.
        pipe_dir = self.paths.host_pipe_dir
        os.chown(pipe_dir, self.uid, self.uid, follow_symlinks=False)
        os.chmod(pipe_dir, 0o700, follow_symlinks=False)

    def _restart(self, container_image_name):
        if not os.path.exists(os.path.join(self.native_lib_dir, 'libsbus.so')):
            raise StorletRuntimeException(
                'libsbus.so not found in %s' % self.native_lib_dir)
        if not os.path.exists(SETPRIV):
            raise StorletRuntimeException(
                '%s (util-linux) is needed to run storlets unprivileged'
                % SETPRIV)
        self._prepare_host_dirs()
        self._stop_previous()
        container_name = self._get_container_name(container_image_name)
        files = self._data()
        data_fds = {}
        try:
            for path, (_, text) in files.items():
                read, write = os.pipe()
                data_fds[path] = read
                # A few hundred bytes each: within a pipe's buffer.
                with open(write, 'wb') as f:
                    f.write(text.encode())
            proc = subprocess.Popen(
                self._command(container_name, data_fds),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env={}, close_fds=True,
                pass_fds=sorted(data_fds.values()),
                preexec_fn=self._limits())
        except OSError as err:
            raise StorletRuntimeException(
                'Cannot start the bubblewrap sandbox: %s' % err)
        finally:
            for fd in data_fds.values():
                os.close(fd)
        _running[self.scope] = proc
        tmp = '%s.%d.tmp' % (self._record, os.getpid())
        with open(tmp, 'w') as f:
            f.write('%d %s\n' % (proc.pid, _start_time(proc.pid)))
        os.replace(tmp, self._record)


def _parse_cpuset(spec):
    """Parse a cpuset list such as ``0-2,5`` into a set of CPU numbers."""
    cpus = set()
    for part in spec.split(','):
        first, _, last = part.strip().partition('-')
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


class BubblewrapStorletGateway(StorletGatewayContainer):
    sandbox = BubblewrapRunTimeSandbox

    def __init__(self, conf, logger, scope):
        super().__init__(conf, logger, scope)
        # The host side loads libsbus through a path hardcoded upstream, and
        # connects to sockets in directories the sandboxes write to.
        SBus.SBUS_SO_NAME = os.path.join(
            conf.get('native_lib_dir', default_native_lib_dir()),
            'libsbus.so')
        SBus.send = staticmethod(send_without_following_links)
        self.sandbox_gid = sandbox_uid(self.paths.host_pipe_root_dir, scope,
                                       conf)

    def bring_from_cache(self, obj_name, sreq, is_storlet):
        """Upstream's, then the copy made readable by the sandbox's group.

        Upstream writes the storlet and its dependencies owner-only, for a
        container running as the server's uid.  They stay the server's, so
        the sandbox can read (and run) them but not change them.
        """
        updated = super().bring_from_cache(obj_name, sreq, is_storlet)
        directory = self.paths.get_host_storlet_dir(sreq.storlet_main)
        for path in (directory, os.path.join(directory, obj_name)):
            mode = os.stat(path, follow_symlinks=False).st_mode
            os.chown(path, -1, self.sandbox_gid, follow_symlinks=False)
            os.chmod(path, stat.S_IMODE(mode) & 0o700 |
                     (mode & 0o500) >> 3)
        return updated
