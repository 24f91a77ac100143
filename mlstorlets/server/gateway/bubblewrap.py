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
``sandbox_log_rate``, ``sandbox_log_burst``
    Lines a second, after a burst, that a sandbox's ``/dev/log`` (a log
    channel of its own, :mod:`mlstorlets.server.gateway.log_channel`)
    passes to the server's log, each tagged ``sandbox <scope>:``; defaults
    20 and 200.  What is over is counted and dropped.
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
``storlet_workers``
    Worker processes per storlet in the sandbox's persistent agent
    (:mod:`mlstorlets.server.agent`); default 0, the cores available to the
    sandbox.  Requests beyond that many wait for a free worker.
``storlet_agent``
    ``persistent`` (default): the agent of :mod:`mlstorlets.server.agent`,
    whose workers import a storlet once and serve request after request;
    ``upstream``: upstream's daemon factory, forking a child per request.
``storlet_cancel_timeout``
    Seconds the host waits for the sandbox to cancel a storlet past its
    timeout (default 2); past that, the account's sandbox is killed.

Every wait of the invocation is bounded.  Upstream waits on SBus without a
timeout for the daemon factory's and the daemon's answers (a daemon whose
pool is full of spinning storlets answers nothing, so the host's cancel and
every later request of the account hung), and sends its commands with a
blocking ``sendmsg`` that, once the socket's queue is full, stops the whole
server worker.  Here every SBus command is sent without blocking and
answered within a bound; ``storlet_timeout`` bounds the whole invocation,
from the first request's sandbox start to the storlet's first output; a
storlet past it is cancelled (or its sandbox killed) and answered ``504``
with the protocol's headers (:mod:`mlstorlets.sandbox.protocol`).  Within
one server worker, one lock per account serialises the sandbox's start and
the storlet cache updates, so concurrent first requests start one sandbox.
"""

import array
import collections
import hashlib
import os
import re
import resource
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time

import eventlet
from eventlet import patcher
from eventlet.semaphore import Semaphore
from storlets.gateway.common.exceptions import StorletRuntimeException, StorletTimeout
from storlets.gateway.common.stob import FileDescriptorIterator
from storlets.gateway.gateways.container.gateway import StorletGatewayContainer
from storlets.gateway.gateways.container.runtime import (
    RunTimePaths,
    RunTimeSandbox,
    StorletInvocationProtocol,
)
from storlets.sbus import SBus
from storlets.sbus.client import SBusClient
from storlets.sbus.client.exceptions import (
    SBusClientException,
    SBusClientIOError,
    SBusClientSendError,
)
from storlets.sbus.datagram import SBusFileDescriptor, build_datagram
from storlets.sbus.file_description import SBUS_FD_SERVICE_OUT
from swift.common import constraints
from swift.common.swob import status_map, str_to_wsgi, wsgi_to_str

from mlstorlets.sandbox import protocol
from mlstorlets.server.gateway import cgroups, log_channel, mounts, seccomp
from mlstorlets.server.gateway.scope import account_scope
from mlstorlets.server.middleware.storlet_failure import protocol_headers
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
# Where the engine's own package (the sandbox agent) is mounted read-only.
SANDBOX_ENGINE_DIR = '/opt/mlstorlets-engine'
AGENTS = ('persistent', 'upstream')
# The key of the seccomp program among the data handed to bwrap.
SECCOMP = '--seccomp'

# The sandbox processes this worker started, by scope.  Kept so that a
# restart reaps the old process instead of leaving a zombie behind.
_running = {}
_upstream_send = SBus.__dict__['send'].__func__
# Each scope's log channel in this worker, read while its sandbox runs.
_log_channels = {}
# One lock per scope (account) in this worker: a sandbox's start and the
# storlet cache it reads are changed by one request at a time.
_scope_locks = collections.defaultdict(Semaphore)
# How many times this worker killed each scope's sandbox to stop a storlet
# past its timeout: the storlets it ran with it did not fail on their own.
_kills = collections.Counter()
# Not eventlet's green socket: a send that never blocks, and retries.
_socket = patcher.original('socket')
DEFAULT_CANCEL_TIMEOUT = 2.0


def default_native_lib_dir():
    return os.path.join(sys.prefix, 'lib', 'storlets')


class _Socket:
    """A socket path a tenant can write into, opened without following links.

    The channel directory is writable inside the sandbox: a storlet can
    replace a socket by a symlink to another account's socket or to any
    host path.  The last component is opened with ``O_PATH | O_NOFOLLOW``
    (its directories belong to the host), must be a socket, and is reached
    through ``/proc/self/fd``, which names that very inode.  ``path`` is
    None when the name is not such a socket.
    """

    def __init__(self, name):
        self.fd, self.path = None, None
        if '..' in name.split(os.sep):
            return
        try:
            self.fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        if stat.S_ISSOCK(os.fstat(self.fd).st_mode):
            self.path = '/proc/self/fd/%d' % self.fd

    def __enter__(self):
        return self.path

    def __exit__(self, *exc_info):
        if self.fd is not None:
            os.close(self.fd)


def send_without_following_links(sbus_name, datagram):
    """``SBus.send`` through :class:`_Socket`; anything but a socket is a
    failure to send (-1), which upstream's SBus client reports as such."""
    with _Socket(sbus_name) as path:
        return _upstream_send(path, datagram) if path else -1


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


# Whether this worker said, once, why sandboxes get no cgroup.
_cgroups_said = []


def sandbox_cgroup(conf, pipes_dir, scope, logger):
    """The cgroup of a scope's sandbox on this server, or None (and a
    warning, once per worker) where cgroups are off or unusable."""
    wanted = conf.get('sandbox_cgroups', 'auto')
    if wanted not in ('auto', 'off'):
        raise ValueError('sandbox_cgroups must be auto or off, not %r'
                         % wanted)
    root = conf.get('cgroup_root', cgroups.ROOT)
    version, why = cgroups.detect(root) if wanted == 'auto' \
        else (None, 'sandbox_cgroups = off')
    if version is None:
        if not _cgroups_said:
            _cgroups_said.append(why)
            logger.warning('storlet sandboxes get no cgroup (%s): their '
                           'memory, processes and CPU are bounded per '
                           'process by rlimits only' % why)
        return None
    name = '%s-%s' % (hashlib.sha256(pipes_dir.encode()).hexdigest()[:8],
                      scope)
    return cgroups.SandboxCgroup(conf.get('cgroup_parent', 'mlstorlets'),
                                 name, version, root)


def _differ(a, b):
    """True when files ``a`` and ``b`` differ in size or modification time
    (or one is missing)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except FileNotFoundError:
        return True
    return (sa.st_size, sa.st_mtime_ns) != (sb.st_size, sb.st_mtime_ns)


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
        self.log_rate = float(conf.get('sandbox_log_rate',
                                       log_channel.DEFAULT_RATE))
        self.log_burst = int(conf.get('sandbox_log_burst',
                                      log_channel.DEFAULT_BURST))
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
        self.tmp_inodes = self._load_int_opt(conf, 'sandbox_tmp_inodes')
        self.host_tmp_dir = os.path.join(self.state_dir, 'tmp', scope)
        self.log_channel_path = os.path.join(self.state_dir,
                                             'log-%s.sock' % scope)
        self.bwrap = conf.get('bwrap_path', '/usr/bin/bwrap')
        self.storlet_workers = int(conf.get('storlet_workers', 0))
        self.agent = conf.get('storlet_agent', 'persistent')
        if self.agent not in AGENTS:
            raise ValueError('storlet_agent must be one of %s, not %r'
                             % (AGENTS, self.agent))
        self.cgroup = sandbox_cgroup(conf, self.paths.host_pipe_root_dir,
                                     scope, logger)
        self.seccomp = conf.get('sandbox_seccomp', 'on')
        if self.seccomp not in ('on', 'off'):
            raise ValueError('sandbox_seccomp must be on or off, not %r'
                             % self.seccomp)
        self.budget = cgroups.Budget(
            memory=self.container_mem_limit
            if isinstance(self.container_mem_limit, int) else 0,
            pids=self.container_pids_limit or 0,
            cpu_quota=self.container_cpu_quota or 0,
            cpu_period=self.container_cpu_period or 100000,
            cpus=self.container_cpuset_cpus or None)

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
        # /tmp is a tmpfs of the host's, bounded in bytes and files.
        args += ['--proc', '/proc', '--dev', '/dev',
                 '--bind', self.host_tmp_dir, '/tmp']
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
        # The engine's own package (the sandbox agent): trusted code, read
        # from the host's install, never from a tenant-writable directory.
        engine = os.path.join(SANDBOX_ENGINE_DIR, 'mlstorlets')
        args += parents(engine) + ['--ro-bind', _engine_package(), engine]
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
        args += ['--bind', self.log_channel_path, '/dev/log']
        args += ['--remount-ro', '/']
        return args

    def _command(self, container_name, data_fds, seccomp_fd=None):
        return [
            self.bwrap,
            '--die-with-parent', '--new-session',
        ] + (['--seccomp', str(seccomp_fd)] if seccomp_fd is not None
             else []) + [
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
            '--setenv', 'PYTHONPATH', SANDBOX_ENGINE_DIR + ':' +
            os.path.join(SANDBOX_NATIVE_LIB_DIR, 'python'),
            SETPRIV, '--reuid', str(self.uid), '--regid', str(self.uid),
            '--clear-groups', '--inh-caps', '-all', '--no-new-privs', '--',
            '/usr/bin/python3',
        ] + self._get_container_command(container_name)

    def _get_container_command(self, container_name):
        if self.agent == 'upstream':
            return super()._get_container_command(container_name)
        return [
            '-m', 'mlstorlets.server.agent.factory',
            self.paths.sandbox_factory_pipe,
            self.storlet_daemon_factory_debug_level,
            container_name, '--workers', str(self.storlet_workers),
        ]

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

        cgroup = self.cgroup

        def apply():
            if cgroup is not None:
                # Before exec: bwrap and all it starts are born in it.
                cgroup.attach()
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
            self._end_cgroup()
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
        self._end_cgroup()

    def _end_cgroup(self):
        if self.cgroup is not None and not self.cgroup.remove():
            self.logger.warning('the cgroup %s of the sandbox of scope %s '
                                'could not be removed'
                                % (self.cgroup.name, self.scope))

    def _prepare_host_dirs(self):
        os.makedirs(self.paths.host_storlet_base_dir, exist_ok=True)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        # Upstream leaves the channel directory 0777; it is the sandbox
        # user's own, out of reach of any other uid but root.
        pipe_dir = self.paths.host_pipe_dir
        os.chown(pipe_dir, self.uid, self.uid, follow_symlinks=False)
        os.chmod(pipe_dir, 0o700, follow_symlinks=False)

    def _mount_writable_dirs(self):
        """Fresh bounded tmpfs for the channel directory and ``/tmp``
        (:mod:`mlstorlets.server.gateway.mounts`)."""
        mounts.mount_tmpfs(self.paths.host_pipe_dir, mounts.CHANNEL_SIZE,
                           mounts.CHANNEL_INODES, 0o700, uid=self.uid,
                           noexec=True, fresh=False)
        mounts.mount_tmpfs(self.host_tmp_dir, self.tmp_size or (1 << 30),
                           self.tmp_inodes or 65536, 0o1777)

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
        try:
            self._mount_writable_dirs()
        except OSError as err:
            raise StorletRuntimeException(
                'Cannot mount the sandbox\'s file systems: %s' % err)
        previous = _log_channels.pop(self.scope, None)
        if previous:
            previous.close()
        _log_channels[self.scope] = log_channel.LogChannel(
            self.log_channel_path, self.scope, self.logger.info,
            self.log_rate, self.log_burst).open()
        if self.cgroup is not None:
            try:
                self.cgroup.create(self.budget)
            except OSError as err:
                raise StorletRuntimeException(
                    'Cannot make the cgroup of the sandbox: %s' % err)
        container_name = self._get_container_name(container_image_name)
        files = {path: text.encode() for path, (_, text)
                 in self._data().items()}
        if self.seccomp == 'on':
            files[SECCOMP] = seccomp.program()
        data_fds, seccomp_fd = {}, None
        try:
            for path, data in files.items():
                read, write = os.pipe()
                data_fds[path] = read
                # At most a few KB each: within a pipe's buffer.
                with open(write, 'wb') as f:
                    f.write(data)
            seccomp_fd = data_fds.pop(SECCOMP, None)
            proc = subprocess.Popen(
                self._command(container_name, data_fds, seccomp_fd),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env={}, close_fds=True,
                pass_fds=sorted(list(data_fds.values()) +
                                ([seccomp_fd] if seccomp_fd is not None
                                 else [])),
                preexec_fn=self._limits())
        except OSError as err:
            raise StorletRuntimeException(
                'Cannot start the bubblewrap sandbox: %s' % err)
        finally:
            for fd in data_fds.values():
                os.close(fd)
            if seccomp_fd is not None:
                os.close(seccomp_fd)
        _running[self.scope] = proc
        tmp = '%s.%d.tmp' % (self._record, os.getpid())
        with open(tmp, 'w') as f:
            f.write('%d %s\n' % (proc.pid, _start_time(proc.pid)))
        os.replace(tmp, self._record)


def _engine_package():
    """The host directory of this ``mlstorlets`` package (trusted code)."""
    import mlstorlets
    return os.path.dirname(os.path.abspath(mlstorlets.__file__))


def _parse_cpuset(spec):
    """Parse a cpuset list such as ``0-2,5`` into a set of CPU numbers."""
    cpus = set()
    for part in spec.split(','):
        first, _, last = part.strip().partition('-')
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def sbus_send(path, datagram, timeout):
    """Send an SBus datagram as libsbus does, but never block past timeout.

    libsbus's ``sbus_send_msg`` is a blocking ``sendmsg`` called through
    ctypes: when the receiver's queue is full it stops the whole (green)
    server worker.  The message is libsbus's: three native ints (number of
    file descriptors, lengths of the metadata and of the parameters), the
    two JSON strings, a NUL, and the descriptors as ``SCM_RIGHTS``.
    """
    fds = datagram.fds
    metadata = (datagram.serialized_metadata if fds else '').encode('utf8')
    params = datagram.serialized_cmd_params.encode('utf8')
    message = struct.pack('iii', len(fds), len(metadata), len(params)) + \
        metadata + params + b'\0'
    rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array('i', fds))]
    deadline = time.monotonic() + timeout
    with _Socket(path) as target, \
            _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM) as sock:
        if target is None:
            raise SBusClientSendError('SBus %s: not a socket' % path)
        while True:
            try:
                sock.sendmsg([message], rights, _socket.MSG_DONTWAIT, target)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise SBusClientSendError(
                        'SBus %s: nobody read the command in %g s'
                        % (path, timeout))
                eventlet.sleep(0.01)
            except OSError as err:
                raise SBusClientSendError('SBus %s: %s' % (path, err))


class BoundedSBusClient(SBusClient):
    """An SBus client whose every command is answered within ``timeout``
    seconds, or raises :class:`SBusClientException`."""

    def __init__(self, socket_path, timeout):
        super().__init__(socket_path)
        self.timeout = timeout

    def _request(self, command, params=None, task_id=None, extra_fds=None):
        deadline = time.monotonic() + self.timeout
        read_fd, write_fd = os.pipe()
        try:
            try:
                datagram = build_datagram(
                    command, [SBusFileDescriptor(SBUS_FD_SERVICE_OUT,
                                                 write_fd)] +
                    (extra_fds or []), params, task_id)
                sbus_send(self.socket_path, datagram, self.timeout)
            finally:
                # The other side holds its copy; ours would keep the
                # reply from ever ending.
                os.close(write_fd)
            reply = b''
            while True:
                left = deadline - time.monotonic()
                ready = left > 0 and select.select([read_fd], [], [], left)[0]
                if not ready:
                    raise SBusClientIOError(
                        'SBus %s: no answer to %s in %g s'
                        % (self.socket_path, command, self.timeout))
                chunk = os.read(read_fd, 4096)
                if not chunk:
                    break
                reply += chunk
        finally:
            os.close(read_fd)
        return self._parse_response(reply.decode('utf-8'))


class BoundedSandbox(BubblewrapRunTimeSandbox):
    """The bubblewrap sandbox, whose daemon factory commands are bounded.

    ``deadline`` (a ``time.monotonic()`` value), when set, also bounds them:
    the invocation's storlet timeout covers the sandbox's start.
    """

    deadline = None

    def __init__(self, scope, conf, logger):
        super().__init__(scope, conf, logger)
        self.cancel_timeout = float(conf.get('storlet_cancel_timeout',
                                             DEFAULT_CANCEL_TIMEOUT))

    def restart(self):
        # Logged: one start per account and worker is what the lock is for.
        self.logger.info('starting the sandbox of scope %s' % self.scope)
        super().restart()

    def _factory(self, timeout):
        if self.deadline is not None:
            timeout = min(timeout, self.deadline - time.monotonic())
            if timeout <= 0:
                raise StorletTimeout()
        return BoundedSBusClient(self.paths.host_factory_pipe, timeout)

    def ping(self):
        try:
            return self._factory(self.sandbox_ping_interval * 4).ping().status
        except SBusClientException:
            return False

    def _get_storlet_daemon_status(self, storlet_id):
        try:
            return bool(self._factory(self.sandbox_wait_timeout)
                        .daemon_status(storlet_id).status)
        except SBusClientException as err:
            raise StorletRuntimeException(
                'Failed to get status about storlet daemon: %s' % err)

    def start_storlet_daemon(self, spath, storlet_id, language,
                             language_version=None):
        try:
            # The factory gives a daemon 10 pings a second apart after its
            # start, which imports the storlet; a loaded machine takes
            # longer, and a factory whose answer nobody reads dies of it.
            resp = self._factory(self.sandbox_wait_timeout * 3).start_daemon(
                language.lower(), spath, storlet_id,
                self.paths.get_sbox_storlet_pipe(storlet_id),
                self.storlet_daemon_debug_level,
                self.storlet_daemon_thread_pool_size, language_version)
        except SBusClientException as err:
            raise StorletRuntimeException('Daemon start failed: %s' % err)
        if not resp.status and not self._started_late(storlet_id):
            raise StorletRuntimeException(
                'Daemon start failed: %s' % resp.message)

    def _started_late(self, storlet_id):
        """Whether a daemon the factory gave up on answers after all.

        The factory gives up after ten pings, but leaves the daemon running:
        on a loaded machine its import of the storlet (OpenCV, scikit-learn)
        takes longer.  Waits while the factory sees it alive, until the
        invocation's deadline.
        """
        pipe = self.paths.get_host_storlet_pipe(storlet_id)
        deadline = self.deadline or \
            time.monotonic() + self.sandbox_wait_timeout
        while time.monotonic() < deadline:
            try:
                if BoundedSBusClient(pipe, 1).ping().status:
                    return True
            except SBusClientException:
                pass
            if not self._get_storlet_daemon_status(storlet_id):
                return False
            eventlet.sleep(self.sandbox_ping_interval)
        return False

    def stop_storlet_daemon(self, storlet_id):
        try:
            resp = self._factory(self.sandbox_wait_timeout).stop_daemon(
                storlet_id)
        except SBusClientException as err:
            raise StorletRuntimeException('Daemon stop failed: %s' % err)
        if not resp.status:
            raise StorletRuntimeException(
                'Daemon stop failed: %s' % resp.message)

    def recover(self, storlet_id, cancelled):
        """Leave the sandbox able to serve after a storlet's timeout.

        The persistent agent's cancel kills only the cancelled request's
        worker and replaces it: its other requests go on.  Upstream's daemon
        leaves its main loop after any cancel and waits for its other tasks
        before it exits, reading no command meanwhile: a cancelled storlet's
        daemon is stopped, so that the next request starts another.  A
        sandbox that could not cancel is killed, and every storlet it runs
        with it; the next request starts another.
        """
        self.deadline = None
        if cancelled and self.agent == 'persistent':
            return
        lock = _scope_locks[self.scope]
        if not lock.acquire(timeout=self.sandbox_wait_timeout):
            return  # the next activation's bounded checks restart it
        try:
            if cancelled:
                try:
                    self.stop_storlet_daemon(storlet_id)
                    return
                except StorletRuntimeException as err:
                    self.logger.warning(str(err))
            self.logger.warning('killing the sandbox of scope %s'
                                % self.scope)
            _kills[self.scope] += 1
            self._stop_previous()
        finally:
            lock.release()


class UnsafeMetadata(StorletRuntimeException):
    """A storlet's output metadata breaks a rule of the protocol's
    (:func:`mlstorlets.sandbox.protocol.output_metadata_problem`)."""


class StorletOutputIterator(FileDescriptorIterator):
    """A storlet's output that fails, instead of ending, when the storlet
    sends nothing for ``timeout`` seconds.

    Upstream ends the iteration: a storlet stalled mid-output would give
    a truncated object that looks whole.
    """

    def next(self, size=64 * 1024):
        if not self.buf and not self.closed and \
                not select.select([self.fd], [], [], self.timeout)[0]:
            if self.cancel_func:
                self.cancel_func()
            self.close()
            raise StorletTimeout()
        return super().next(size)

    __next__ = next


class BoundedInvocationProtocol(StorletInvocationProtocol):
    """The invocation protocol with a bounded execute and cancel.

    ``recover(cancelled)`` runs after a cancel (``cancelled`` says whether
    the daemon cancelled the task) and when the daemon takes no task in
    time (``False``), in a green thread of its own: the client's answer
    does not wait for it (the proxy gives an object server only 5 s past
    the storlet timeout), the account's next activation does (it takes
    the account's lock first).
    """

    def __init__(self, srequest, storlet_pipe_path, storlet_logger_path,
                 timeout, logger, cancel_timeout, recover):
        super().__init__(srequest, storlet_pipe_path, storlet_logger_path,
                         timeout, logger)
        self.cancel_timeout = cancel_timeout
        self.recover = recover

    def _send_execute_command(self):
        client = BoundedSBusClient(self.storlet_pipe_path, self.timeout)
        try:
            resp = client.execute(self.srequest.params, self.remote_fds)
        except SBusClientException as err:
            # A daemon whose pool is full waits for a slot before it
            # answers: with no answer within the storlet's time, its
            # storlets are stuck.
            self.logger.warning('storlet daemon %s took no task: %s'
                                % (self.storlet_pipe_path, err))
            eventlet.spawn_n(self.recover, False)
            raise StorletTimeout()
        if not resp.status:
            raise StorletRuntimeException('Failed to send execute command')
        if not resp.task_id:
            raise StorletRuntimeException('Missing task id')
        self.task_id = resp.task_id

    def _cancel(self):
        client = BoundedSBusClient(self.storlet_pipe_path,
                                   self.cancel_timeout)
        try:
            cancelled = client.cancel(self.task_id).status
        except SBusClientException:
            cancelled = False
        if not cancelled:
            self.logger.warning('task %s of %s could not be cancelled'
                                % (self.task_id, self.storlet_pipe_path))
        eventlet.spawn_n(self.recover, cancelled)

    @property
    def remote_fds(self):
        # Swift hands the engine metadata as WSGI strings (UTF-8 bytes read
        # as Latin-1); a storlet reads and writes text, whatever the script.
        fds = super().remote_fds
        for fd in fds:
            fd.storage_metadata = {wsgi_to_str(k): wsgi_to_str(v)
                                   for k, v in fd.storage_metadata.items()}
        return fds

    def _read_metadata(self):
        metadata = super()._read_metadata()
        if not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str)
                for k, v in metadata.items()):
            raise UnsafeMetadata('its output metadata is not text to text')
        # Before anything becomes a header: a CR/LF would write headers (or
        # a whole response) of the storlet's into another user's answer.
        problem = protocol.output_metadata_problem(
            metadata, constraints.MAX_META_NAME_LENGTH,
            constraints.MAX_META_VALUE_LENGTH, constraints.MAX_META_COUNT,
            constraints.MAX_META_OVERALL_SIZE)
        if problem:
            raise UnsafeMetadata(problem)
        return {str_to_wsgi(k): str_to_wsgi(v) for k, v in metadata.items()}

    def communicate(self):
        sresp = super().communicate()
        data = sresp.data
        data._data_iter = StorletOutputIterator(data.data_fd, self.timeout,
                                                data.cancel)
        return sresp


class BubblewrapStorletGateway(StorletGatewayContainer):
    sandbox = BoundedSandbox

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
        self.cancel_timeout = float(conf.get('storlet_cancel_timeout',
                                             DEFAULT_CANCEL_TIMEOUT))

    def bring_from_cache(self, obj_name, sreq, is_storlet):
        """Upstream's, then the copy made readable by the sandbox's group.

        Upstream writes the storlet and its dependencies owner-only, for a
        container running as the server's uid.  They stay the server's, so
        the sandbox can read (and run) them but not change them.

        Upstream refreshes the sandbox's copy from the node's cache only
        when the two differ in size or the cache is the older (its test is
        the wrong way round), so a new version of a storlet of the same
        size was never run; here any difference in size or time refreshes
        it.
        """
        directory = self.paths.get_host_storlet_dir(sreq.storlet_main)
        cached = os.path.join(self.paths.host_storlet_cache_dir
                              if is_storlet else
                              self.paths.host_dependency_cache_dir, obj_name)
        updated = super().bring_from_cache(obj_name, sreq, is_storlet)
        target = os.path.join(directory, obj_name)
        if not updated and _differ(cached, target):
            shutil.copy2(cached, target)
            updated = True
        for path in (directory, os.path.join(directory, obj_name)):
            mode = os.stat(path, follow_symlinks=False).st_mode
            os.chown(path, -1, self.sandbox_gid, follow_symlinks=False)
            os.chmod(path, stat.S_IMODE(mode) & 0o700 |
                     (mode & 0o500) >> 3)
        return updated

    def _rescope(self, sreq):
        """Take the scope of the request's whole account (the handler gave
        upstream's 13-character one)."""
        account = sreq.options.get('scope')
        if not account:
            raise StorletRuntimeException('the request names no account')
        scope = account_scope(account)
        if scope != self.scope:
            self.scope = scope
            self.paths = RunTimePaths(scope, self.conf)
            self.sandbox_gid = sandbox_uid(self.paths.host_pipe_root_dir,
                                           scope, self.conf)

    def invocation_flow(self, sreq):
        """Run a storlet within ``storlet_timeout``; see the module.

        Raises
        ------
        swift.common.swob.HTTPException
            ``504`` with the protocol's headers for a storlet (or its
            sandbox's start) past the storlet timeout; ``502`` for one
            whose sandbox was killed to stop another.
        """
        deadline = time.monotonic() + self.storlet_timeout
        self._rescope(sreq)
        sandbox = self.sandbox(self.scope, self.conf, self.logger)
        sandbox.deadline = deadline
        kills = _kills[self.scope]
        ooms = sandbox.cgroup.oom_kills() if sandbox.cgroup else 0
        try:
            lock = _scope_locks[self.scope]
            if not lock.acquire(timeout=self.storlet_timeout):
                raise StorletTimeout()
            try:
                updated = self.update_container_from_cache(sreq)
                sandbox.activate_storlet_daemon(sreq, updated)
            except StorletTimeout:
                if time.monotonic() < deadline:
                    # Upstream's wait for a new sandbox, not ours.
                    raise StorletRuntimeException(
                        'the sandbox did not start in %g s'
                        % sandbox.sandbox_wait_timeout)
                raise
            finally:
                lock.release()
            self._add_system_params(sreq)
            slog_path = self.paths.get_host_slog_path(sreq.storlet_main)
            sprotocol = BoundedInvocationProtocol(
                sreq, self.paths.get_host_storlet_pipe(sreq.storlet_main),
                slog_path, max(deadline - time.monotonic(), 0.001),
                self.logger, self.cancel_timeout,
                lambda cancelled: sandbox.recover(sreq.storlet_main,
                                                  cancelled))
            sresp = sprotocol.communicate()
            if sandbox.cgroup and sandbox.cgroup.oom_kills() > ooms:
                # A process of the storlet's was killed for memory: what
                # it answered may miss that process's part.
                sresp.data.cancel()
                os.close(sresp.data.data_fd)
                raise StorletRuntimeException('over the memory budget')
        except UnsafeMetadata as err:
            raise self._answer(sreq, protocol.FAILED,
                               'storlet %s broke the protocol: %s'
                               % (sreq.storlet_id, err))
        except StorletTimeout:
            raise self._answer(sreq, protocol.TIMED_OUT,
                               'no output within the storlet timeout of '
                               '%g s' % self.storlet_timeout)
        except StorletRuntimeException:
            if sandbox.cgroup and sandbox.cgroup.oom_kills() > ooms:
                raise self._answer(
                    sreq, protocol.OUT_OF_MEMORY,
                    'the sandbox of the account went over its memory budget '
                    'of %d bytes' % sandbox.budget.memory)
            if _kills[self.scope] == kills:
                raise
            raise self._answer(sreq, protocol.FAILED,
                               'its sandbox was killed to stop another '
                               'storlet of the account past its timeout')
        self._upload_storlet_logs(slog_path, sreq)
        return sresp

    def _answer(self, sreq, kind, reason):
        """The HTTP error that the storlet handler passes on."""
        self.logger.warning('storlet %s %s: %s'
                            % (sreq.storlet_id, kind, reason))
        return status_map[protocol.STATUS[kind]](
            body=reason + '\n', content_type='text/plain',
            headers=protocol_headers(kind, reason))
