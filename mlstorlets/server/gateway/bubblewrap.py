"""A storlets gateway that runs the storlet sandbox under bubblewrap.

The upstream container gateways (docker, podman) start the storlet daemon
factory inside a container per scope (account).  Where no container engine
runs, this gateway starts the same daemon factory under ``bwrap`` with the
isolation those containers give: no network, a read-only root, private
``/tmp``, ``/proc`` and ``/dev``, its own pid, IPC and UTS namespaces and no
capabilities.  Everything else -- SBus, the invocation protocol, the storlet
cache and registration checks -- is upstream code; only ``_restart`` differs.

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
``container_mem_limit``, ``container_cpuset_cpus``
    Applied as ``RLIMIT_AS`` and CPU affinity (no cgroups are used).
``sandbox_file_size_limit``
    ``RLIMIT_FSIZE`` in bytes: bounds any file a storlet writes to its
    private ``/tmp``.
``storlet_workers``
    Worker processes per storlet in the sandbox's persistent agent
    (:mod:`mlstorlets.server.agent`); default 0, the cores available to the
    sandbox.  Requests beyond that many wait for a free worker.
``storlet_agent``
    ``persistent`` (default): the agent of :mod:`mlstorlets.server.agent`,
    whose workers import a storlet once and serve request after request;
    ``upstream``: upstream's daemon factory, forking a child per request.
"""

import os
import re
import resource
import signal
import subprocess
import sys

from storlets.gateway.common.exceptions import StorletRuntimeException
from storlets.gateway.gateways.container.gateway import \
    StorletGatewayContainer
from storlets.gateway.gateways.container.runtime import RunTimeSandbox
from storlets.sbus import SBus

SANDBOX_NATIVE_LIB_DIR = '/usr/local/lib/storlets'
# Where the engine's own package (the sandbox agent) is mounted read-only.
SANDBOX_ENGINE_DIR = '/opt/mlstorlets-engine'
AGENTS = ('persistent', 'upstream')
PIDFILE = 'sandbox.pid'

# The sandbox processes this worker started, by scope.  Kept so that a
# restart reaps the old process instead of leaving a zombie behind.
_running = {}


def default_native_lib_dir():
    return os.path.join(sys.prefix, 'lib', 'storlets')


def _host_root_entries():
    """Top-level host directories re-exposed read-only inside the sandbox.

    On a merged-/usr system ``/bin``, ``/lib``... are symlinks into ``/usr``;
    they are recreated as symlinks so that nothing else of the host leaks in.
    """
    entries = []
    for name in ('usr', 'bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32',
                 'etc'):
        path = '/' + name
        if os.path.islink(path):
            entries.append(('--symlink', os.readlink(path), path))
        elif os.path.isdir(path):
            entries.append(('--ro-bind', path, path))
    return entries


def _interpreters():
    """The interpreter paths the daemon factory may call, present on the host.

    The factory runs ``/usr/bin/python<Language-Version>``; each one that
    exists is replaced inside the sandbox by a wrapper that starts the
    configured interpreter.
    """
    return sorted(os.path.join('/usr/bin', n) for n in os.listdir('/usr/bin')
                  if re.fullmatch(r'python3(\.\d+)?', n))


class BubblewrapRunTimeSandbox(RunTimeSandbox):
    """The per-scope sandbox, started as a bubblewrap child of this server."""

    def __init__(self, scope, conf, logger):
        super().__init__(scope, conf, logger)
        self.native_lib_dir = conf.get('native_lib_dir',
                                       default_native_lib_dir())
        self.sandbox_python = conf.get(
            'sandbox_python', os.path.join(sys.prefix, 'bin', 'python3'))
        self.log_socket = conf.get('sandbox_log_socket', '/dev/log')
        self.hostname = conf.get('sandbox_hostname', 'storlets-sandbox')
        self.file_size_limit = self._load_int_opt(
            conf, 'sandbox_file_size_limit')
        self.bwrap = conf.get('bwrap_path', '/usr/bin/bwrap')
        self.storlet_workers = int(conf.get('storlet_workers', 0))
        self.agent = conf.get('storlet_agent', 'persistent')
        if self.agent not in AGENTS:
            raise ValueError('storlet_agent must be one of %s, not %r'
                             % (AGENTS, self.agent))
        for option in ('container_cpu_quota', 'container_cpu_period',
                       'container_pids_limit'):
            if conf.get(option):
                logger.warning('%s is set but not enforced: the bubblewrap '
                               'sandbox uses no cgroups', option)

    @property
    def _pidfile(self):
        return os.path.join(self.paths.host_pipe_dir, PIDFILE)

    def _python_wrapper(self):
        """Write the script that stands for /usr/bin/python3 inside."""
        path = os.path.join(self.paths.host_pipe_dir, 'python3')
        text = '#!/bin/sh\nexec %s "$@"\n' % self.sandbox_python
        try:
            with open(path) as f:
                if f.read() == text:
                    return path
        except OSError:
            pass
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.rename(tmp, path)
        return path

    def _mounts(self):
        """bwrap arguments that build the sandbox's file system."""
        args = ['--tmpfs', '/']
        for entry in _host_root_entries():
            args.extend(entry)
        # Private /proc, /dev and /tmp first: what is bound below must stay
        # visible even when it lives under the host's /tmp (a checkout there).
        args += ['--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp']
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
        # Made traversable by any uid before the bind (bwrap makes missing
        # parents 0700).
        args += ['--perms', '0755', '--dir', os.path.dirname(
                     SANDBOX_ENGINE_DIR),
                 '--perms', '0755', '--dir', SANDBOX_ENGINE_DIR,
                 '--ro-bind', _engine_package(),
                 os.path.join(SANDBOX_ENGINE_DIR, 'mlstorlets')]
        # The interpreter, its standard library and the environment holding
        # numpy, OpenCV and scikit-learn, at the paths they have outside.
        venv = os.path.dirname(os.path.dirname(self.sandbox_python))
        home = os.path.dirname(os.path.dirname(
            os.path.realpath(self.sandbox_python)))
        for prefix in sorted({venv, home, os.path.realpath(sys.base_prefix)}):
            if prefix != '/usr' and not prefix.startswith('/usr/'):
                args += ['--ro-bind', prefix, prefix]
        wrapper = self._python_wrapper()
        for interpreter in _interpreters():
            args += ['--ro-bind', wrapper, interpreter]
        args += [
            '--bind', self.paths.host_pipe_dir, self.paths.sandbox_pipe_dir,
            '--ro-bind', self.paths.host_storlet_base_dir,
            self.paths.sandbox_storlet_base_dir,
        ]
        if os.path.exists(self.log_socket):
            args += ['--bind', self.log_socket, '/dev/log']
        args += ['--remount-ro', '/']
        return args

    def _command(self, container_name):
        return [
            self.bwrap,
            '--die-with-parent', '--new-session',
            '--unshare-net', '--unshare-pid', '--unshare-ipc',
            '--unshare-uts', '--hostname', self.hostname,
            '--cap-drop', 'ALL',
        ] + self._mounts() + [
            '--chdir', '/',
            '--clearenv',
            '--setenv', 'PATH', '/usr/bin:/bin',
            '--setenv', 'HOME', '/tmp',
            '--setenv', 'TMPDIR', '/tmp',
            '--setenv', 'PYTHONPATH', SANDBOX_ENGINE_DIR + ':' +
            os.path.join(SANDBOX_NATIVE_LIB_DIR, 'python'),
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
        fsize = self.file_size_limit

        def apply():
            if mem_limit:
                resource.setrlimit(resource.RLIMIT_AS, (mem_limit, mem_limit))
            if fsize:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            if cpuset:
                os.sched_setaffinity(0, cpuset)
        return apply

    def _stop_previous(self):
        proc = _running.pop(self.scope, None)
        pid = proc.pid if proc else _read_pid(self._pidfile)
        if not pid:
            return
        try:
            # bwrap is the parent of the sandbox's pid namespace: ending it
            # ends every process inside.
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc:
            proc.wait()

    def _restart(self, container_image_name):
        if not os.path.exists(os.path.join(self.native_lib_dir, 'libsbus.so')):
            raise StorletRuntimeException(
                'libsbus.so not found in %s' % self.native_lib_dir)
        os.makedirs(self.paths.host_storlet_base_dir, exist_ok=True)
        self._stop_previous()
        container_name = self._get_container_name(container_image_name)
        try:
            proc = subprocess.Popen(
                self._command(container_name), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                close_fds=True, preexec_fn=self._limits())
        except OSError as err:
            raise StorletRuntimeException(
                'Cannot start the bubblewrap sandbox: %s' % err)
        _running[self.scope] = proc
        with open(self._pidfile, 'w') as f:
            f.write('%d\n' % proc.pid)


def _engine_package():
    """The host directory of this ``mlstorlets`` package (trusted code)."""
    import mlstorlets
    return os.path.dirname(os.path.abspath(mlstorlets.__file__))


def _read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


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
        # The host side loads libsbus through a path hardcoded upstream.
        SBus.SBUS_SO_NAME = os.path.join(
            conf.get('native_lib_dir', default_native_lib_dir()),
            'libsbus.so')
