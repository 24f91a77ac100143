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
``daemon_check_time``
    Seconds a worker takes a storlet's daemon it saw running to be running
    still, without asking the sandbox's factory on each invocation (default
    10; 0 asks every time).  A daemon that died meanwhile receives no
    command: the invocation asks the factory, starts it again and sends the
    request once more, its inputs untouched.
``daemon_idle_time``
    Seconds a storlet's daemon runs with no request before it exits, its
    workers and their memory with it (default 300, upstream's; persistent
    agent).  The next request starts it again, as it does one that died.

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

import collections
import copy
import os
import shutil
import stat
import time

from storlets.gateway.common.exceptions import StorletRuntimeException, StorletTimeout
from storlets.gateway.gateways.base import StorletGatewayBase
from storlets.gateway.gateways.container.gateway import StorletGatewayContainer
from storlets.gateway.gateways.container.runtime import (
    RunTimePaths,
)
from storlets.sbus import SBus
from swift.common.swob import status_map
from swift.common.utils import close_if_possible

from mlstorlets.sandbox import protocol
from mlstorlets.server.gateway import invocation_log
from mlstorlets.server.gateway.invocation import (
    BoundedInvocationProtocol,
    DaemonGone,
    InputCut,
    InputsTooLong,
    StorletFailed,
    UnsafeMetadata,
)
from mlstorlets.server.gateway.sandbox import (
    DEFAULT_CANCEL_TIMEOUT,
    BoundedSandbox,
    SandboxUnavailable,
    StorletNotLoaded,
    default_native_lib_dir,
    sandbox_kills,
    sandbox_uid,
)
from mlstorlets.server.gateway.sbus import send_without_following_links
from mlstorlets.server.gateway.scope import account_scope

# The sandbox this worker made for each (class, scope, options).
_sandboxes = collections.OrderedDict()
# A scope's paths and sandbox uid for each (scope, options): upstream makes
# the paths again on every invocation, twice here (the handler's short
# scope, then the account's).
_scopes = collections.OrderedDict()
KEEP_SANDBOXES = 1024


def _made_for(made, key, conf, make, kept=lambda value: True):
    """What ``make()`` made for ``key`` under the options ``conf``, made
    once: held in ``made`` with the options (so that their id names them),
    the most recently used ones, when ``kept(value)``."""
    key += (id(conf),)
    held = made.get(key)
    if held is not None and held[0] is conf:
        made.move_to_end(key)
        return held[1]
    value = make()
    if kept(value):
        made[key] = (conf, value)
        while len(made) > KEEP_SANDBOXES:
            made.popitem(last=False)
    return value


def _scope_paths(scope, conf):
    """``(RunTimePaths, sandbox uid)`` of ``scope`` under the options
    ``conf``."""

    def make():
        paths = RunTimePaths(scope, conf)
        return paths, sandbox_uid(paths.host_pipe_root_dir, scope, conf)

    return _made_for(_scopes, (scope,), conf, make)


# libsbus's path for each native_lib_dir option.
_libsbus = {}
_send_without_following_links = staticmethod(send_without_following_links)


def _differ(a, b):
    """True when files ``a`` and ``b`` differ in size or modification time
    (or one is missing)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except FileNotFoundError:
        return True
    return (sa.st_size, sa.st_mtime_ns) != (sb.st_size, sb.st_mtime_ns)


def _close_unfed(sreq):
    """Close the inputs of an invocation that failed before any was fed: a
    backend request given as an input (on a proxy) would stay open until
    collected.  A file the storlet would have read is its server's."""
    for data in [sreq.data] + list(sreq.extra_data_list):
        if not data.has_fd:
            close_if_possible(data.data_iter)


class BubblewrapStorletGateway(StorletGatewayContainer):
    sandbox = BoundedSandbox

    def __init__(self, conf, logger, scope):
        # Upstream's StorletGatewayContainer.__init__, with the scope's
        # paths made once.
        StorletGatewayBase.__init__(self, conf, logger, scope)
        self.storlet_timeout = float(conf.get("storlet_timeout", 40))
        self.paths, self.sandbox_gid = _scope_paths(scope, conf)
        # The host side loads libsbus through a path hardcoded upstream, and
        # connects to sockets in directories the sandboxes write to.
        lib_dir = conf.get("native_lib_dir")
        if lib_dir not in _libsbus:
            _libsbus[lib_dir] = os.path.join(lib_dir or default_native_lib_dir(), "libsbus.so")
        SBus.SBUS_SO_NAME = _libsbus[lib_dir]
        SBus.send = _send_without_following_links
        self.cancel_timeout = float(conf.get("storlet_cancel_timeout", DEFAULT_CANCEL_TIMEOUT))

    def _sandbox(self):
        """The scope's sandbox for one invocation: a copy of one this
        worker made once for these options (which it parsed, and whose
        cgroup it found)."""
        made = _made_for(
            _sandboxes,
            (self.sandbox, self.scope),
            self.conf,
            lambda: self.sandbox(self.scope, self.conf, self.logger),
            # One without the cgroup it should have is made again each
            # time: cgroups may be usable next time.
            lambda made: (
                getattr(made, "cgroup", None) is not None
                or self.conf.get("sandbox_cgroups") == "off"
            ),
        )
        sandbox = copy.copy(made)
        sandbox.logger = self.logger
        return sandbox

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
        cached = os.path.join(
            self.paths.host_storlet_cache_dir
            if is_storlet
            else self.paths.host_dependency_cache_dir,
            obj_name,
        )
        updated = super().bring_from_cache(obj_name, sreq, is_storlet)
        target = os.path.join(directory, obj_name)
        if not updated and _differ(cached, target):
            shutil.copy2(cached, target)
            updated = True
        for path in (directory, os.path.join(directory, obj_name)):
            mode = os.stat(path, follow_symlinks=False).st_mode
            os.chown(path, -1, self.sandbox_gid, follow_symlinks=False)
            os.chmod(path, stat.S_IMODE(mode) & 0o700 | (mode & 0o500) >> 3)
        return updated

    def _rescope(self, sreq):
        """Take the scope of the request's whole account (the handler gave
        upstream's 13-character one)."""
        account = sreq.options.get("scope")
        if not account:
            raise StorletRuntimeException("the request names no account")
        scope = account_scope(account)
        if scope != self.scope:
            self.scope = scope
            self.paths, self.sandbox_gid = _scope_paths(scope, self.conf)

    def _bring_up(self, sreq, sandbox, deadline):
        """Under the scope's lock, bring ``sreq``'s storlet into the
        sandbox from the node's cache and start its daemon if need be."""
        lock = sandbox.lock()
        if not lock.acquire(timeout=max(deadline - time.monotonic(), 0)):
            raise StorletTimeout()
        try:
            updated = self.update_container_from_cache(sreq)
            sandbox.activate_storlet_daemon(sreq, updated)
        except StorletTimeout:
            if time.monotonic() < deadline:
                # Upstream's wait for a new sandbox, not ours.
                raise SandboxUnavailable(
                    "the sandbox did not start in %g s" % sandbox.sandbox_wait_timeout
                )
            raise
        finally:
            lock.release()

    def _activated(self, sreq, sandbox, deadline):
        """The invocation protocol of ``sreq``, its storlet's daemon
        activated."""
        if not sandbox.ready(sreq):
            try:
                self._bring_up(sreq, sandbox, deadline)
            except BaseException:
                _close_unfed(sreq)
                raise
        self._add_system_params(sreq)
        sprotocol = BoundedInvocationProtocol(
            sreq,
            self.paths.get_host_storlet_pipe(sreq.storlet_main),
            self.paths.get_host_slog_path(sreq.storlet_main),
            max(deadline - time.monotonic(), 0.001),
            self.logger,
            self.cancel_timeout,
            lambda cancelled: sandbox.recover(sreq.storlet_main, cancelled),
            sandbox.datagram_limit,
        )
        return sprotocol

    def invocation_flow(self, sreq):
        """Run a storlet within ``storlet_timeout``; see the module.

        Raises
        ------
        swift.common.swob.HTTPException
            ``502`` with the protocol's headers for a storlet that raised
            (the reason is its exception's type and message) or failed
            before producing output, or whose sandbox was killed to stop
            another; ``503`` (``unavailable``) when the account's sandbox
            could not start; ``504`` for a storlet (or its sandbox's start)
            past the storlet timeout.  With ``X-Storlet-Generate-Log: True``, each
            answer after the storlet was sent its request names the
            invocation's log object (on an output, in its metadata).
        """
        deadline = time.monotonic() + self.storlet_timeout
        self._rescope(sreq)
        sandbox = self._sandbox()
        sandbox.deadline = deadline
        kills = sandbox_kills[self.scope]
        ooms = sandbox.oom_kills()
        sprotocol = None
        try:
            sprotocol = self._activated(sreq, sandbox, deadline)
            try:
                sresp = sprotocol.communicate()
            except DaemonGone as err:
                # A daemon seen running a moment ago (not asked again, see
                # BoundedSandbox.activate_storlet_daemon) died since: asked
                # this time, and started again.
                self.logger.info("storlet %s: %s; activating it again" % (sreq.storlet_id, err))
                sandbox.forget_daemons(sreq.storlet_main)
                sprotocol = self._activated(sreq, sandbox, deadline)
                try:
                    sresp = sprotocol.communicate()
                except DaemonGone:
                    # Twice untaken: nothing fed the inputs this time either.
                    _close_unfed(sreq)
                    raise
            if sandbox.over_memory_since(ooms):
                # A process of the storlet's was killed for memory: what
                # it answered may miss that process's part.
                sresp.data.cancel()
                # Through its iterator, which owns the descriptor: closed
                # twice, the number could be another request's by then.
                sresp.data.data_iter.close()
                raise StorletRuntimeException("over the memory budget")
        except InputsTooLong as err:
            raise self._answer(sreq, protocol.REFUSED, str(err), sprotocol)
        except UnsafeMetadata as err:
            raise self._answer(
                sreq,
                protocol.FAILED,
                "storlet %s broke the protocol: %s" % (sreq.storlet_id, err),
                sprotocol,
            )
        except StorletFailed as err:
            raise self._answer(sreq, protocol.FAILED, err.reason, sprotocol)
        except InputCut as err:
            raise self._answer(
                sreq,
                protocol.FAILED,
                "storlet %s was given only part of an input (%s)" % (sreq.storlet_id, err.reason),
                sprotocol,
            )
        except StorletTimeout:
            raise self._answer(
                sreq,
                protocol.TIMED_OUT,
                "no output within the storlet timeout of %g s" % self.storlet_timeout,
                sprotocol,
            )
        except SandboxUnavailable as err:
            # Why is the server's business: a tenant is told where to look,
            # not the host's paths.
            self.logger.error("the sandbox of scope %s could not start: %s" % (self.scope, err))
            raise self._answer(
                sreq,
                protocol.UNAVAILABLE,
                "the account's sandbox could not start on this server (its log says why)",
                sprotocol,
            )
        except StorletNotLoaded as err:
            raise self._answer(
                sreq, protocol.FAILED, "%s%s" % (protocol.NOT_LOADED, err), sprotocol
            )
        except StorletRuntimeException:
            if sandbox.over_memory_since(ooms):
                raise self._answer(
                    sreq,
                    protocol.OUT_OF_MEMORY,
                    "the sandbox of the account went over its memory budget "
                    "of %d bytes" % sandbox.budget.memory,
                    sprotocol,
                )
            if sandbox_kills[self.scope] != kills:
                raise self._answer(
                    sreq,
                    protocol.FAILED,
                    "its sandbox was killed to stop another storlet of the account past its "
                    "timeout",
                    sprotocol,
                )
            if sprotocol is None or sprotocol.task_id is None:
                # The sandbox's, not the storlet's: upstream's answer.
                raise
            # It took its task and answered nothing (it died, or broke
            # the protocol): the log says what it got to write.
            raise self._answer(
                sreq, protocol.FAILED, "the storlet failed before producing output", sprotocol
            )
        # Upstream's output metadata is what becomes X-Object-Meta- headers.
        for header, value in self._stored_log(sreq, sprotocol, "done").items():
            sresp.data.user_metadata[protocol.LOG_KEYS[header]] = value
        return sresp

    def _stored_log(self, sreq, sprotocol, outcome):
        """Store the invocation's log if it was asked for; the headers that
        say where (:func:`mlstorlets.server.gateway.invocation_log.store`)."""
        log = sprotocol.storlet_logger if sprotocol is not None else None
        if log is None or not log.wanted or not log.opened:
            return {}
        return invocation_log.store(
            sreq, log, outcome, getattr(self.logger, "txn_id", None), self.logger
        )

    def _upload_storlet_logs(self, slog_path, sreq):
        # Upstream's upload of its shared log file, which fails (the
        # object's name is left out): replaced by _stored_log.
        pass

    def _answer(self, sreq, kind, reason, sprotocol=None):
        """The HTTP error that the storlet handler passes on."""
        self.logger.warning("storlet %s %s: %s" % (sreq.storlet_id, kind, reason))
        headers = protocol.failure_headers(kind, reason)
        headers.update(self._stored_log(sreq, sprotocol, "%s: %s" % (kind, reason)))
        return status_map[protocol.STATUS[kind]](
            body=reason + "\n",
            content_type="text/plain",
            headers=headers,
        )
