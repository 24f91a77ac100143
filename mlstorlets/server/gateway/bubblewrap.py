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
import os
import re
import resource
import select
import signal
import struct
import subprocess
import sys
import time

import eventlet
from eventlet import patcher
from eventlet.semaphore import Semaphore
from storlets.gateway.common.exceptions import StorletRuntimeException, \
    StorletTimeout
from storlets.gateway.common.stob import FileDescriptorIterator
from storlets.gateway.gateways.container.gateway import \
    StorletGatewayContainer
from storlets.gateway.gateways.container.runtime import RunTimeSandbox, \
    StorletInvocationProtocol
from storlets.sbus import SBus
from storlets.sbus.client import SBusClient
from storlets.sbus.client.exceptions import SBusClientException, \
    SBusClientIOError, SBusClientSendError
from storlets.sbus.datagram import SBusFileDescriptor, build_datagram
from storlets.sbus.file_description import SBUS_FD_SERVICE_OUT
from swift.common.swob import status_map

from mlstorlets.sandbox import protocol
from mlstorlets.server.middleware.storlet_failure import protocol_headers

SANDBOX_NATIVE_LIB_DIR = '/usr/local/lib/storlets'
PIDFILE = 'sandbox.pid'

# The sandbox processes this worker started, by scope.  Kept so that a
# restart reaps the old process instead of leaving a zombie behind.
_running = {}
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
            '--setenv', 'PYTHONPATH',
            os.path.join(SANDBOX_NATIVE_LIB_DIR, 'python'),
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
    with _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM) as sock:
        while True:
            try:
                sock.sendmsg([message], rights, _socket.MSG_DONTWAIT, path)
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

        Upstream's daemon leaves its main loop after any cancel and waits
        for its other tasks before it exits, reading no command meanwhile:
        a cancelled storlet's daemon is stopped, so that the next request
        starts another.  A sandbox that could not cancel is killed, and
        every storlet it runs with it; the next request starts another.
        """
        self.deadline = None
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
        # The host side loads libsbus through a path hardcoded upstream.
        SBus.SBUS_SO_NAME = os.path.join(
            conf.get('native_lib_dir', default_native_lib_dir()),
            'libsbus.so')
        self.cancel_timeout = float(conf.get('storlet_cancel_timeout',
                                             DEFAULT_CANCEL_TIMEOUT))

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
        sandbox = self.sandbox(self.scope, self.conf, self.logger)
        sandbox.deadline = deadline
        kills = _kills[self.scope]
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
        except StorletTimeout:
            raise self._answer(sreq, protocol.TIMED_OUT,
                               'no output within the storlet timeout of '
                               '%g s' % self.storlet_timeout)
        except StorletRuntimeException:
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
