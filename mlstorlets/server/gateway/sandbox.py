"""The sandbox of one scope (account) on one server, under bubblewrap.

How it is built (:class:`BubblewrapRunTimeSandbox`: the bwrap command
line, its mounts, limits, cgroup, seccomp program and log channel) and how
its daemons are started and recovered within bounds
(:class:`BoundedSandbox`).  The gateway options it reads are listed in
:mod:`mlstorlets.server.gateway.bubblewrap`.
"""

import collections
import functools
import hashlib
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time

import eventlet
from storlets.agent.common.server import LISTEN_TIMEOUT
from storlets.gateway.common.exceptions import StorletRuntimeException, StorletTimeout
from storlets.gateway.gateways.container.runtime import (
    RunTimeSandbox,
)
from storlets.sbus.client.exceptions import (
    SBusClientException,
)

from mlstorlets.sandbox import protocol
from mlstorlets.server.gateway import cgroups, log_channel, mounts, runtime_view, seccomp
from mlstorlets.server.gateway.sbus import BoundedSBusClient
from mlstorlets.server.gateway.scope_lock import scope_lock
from mlstorlets.server.node import SANDBOX_LIMITS, datagram_limit

SANDBOX_NATIVE_LIB_DIR = "/usr/local/lib/storlets"
SANDBOX_USER = "storlets"
SHM_SIZE = 64 * 1024**2
SETPRIV = "/usr/bin/setpriv"
UID_BASE = 2000000000
UID_RANGE = 2**24
# Seconds between SIGXCPU (the soft CPU-time limit) and SIGKILL.
CPU_GRACE = 10
# The host's top-level directories the sandbox's root is built from.
ROOT_ENTRIES = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# What of the host's /etc the dynamic loader and Python read; nothing else
# of it (no shadow, no Swift or host configuration) is visible inside.
ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime")
# Where the engine's own package (the sandbox agent) is mounted read-only.
SANDBOX_ENGINE_DIR = "/opt/mlstorlets-engine"
AGENTS = ("persistent", "upstream")
# The key of the seccomp program among the data handed to bwrap.
SECCOMP = "--seccomp"

# The sandbox processes this worker started, by scope.  Kept so that a
# restart reaps the old process instead of leaving a zombie behind.
_running = {}
# Each scope's log channel in this worker, read while its sandbox runs.
_log_channels = {}
DEFAULT_CANCEL_TIMEOUT = 2.0
#: Seconds a daemon seen running is taken to run without asking the
#: sandbox's factory (``daemon_check_time``; 0 asks on every invocation).
DEFAULT_DAEMON_CHECK_TIME = 10.0
#: Seconds a storlet's daemon runs with nothing to do before it exits
#: (``daemon_idle_time``): upstream's agents' own.
DEFAULT_DAEMON_IDLE_TIME = float(LISTEN_TIMEOUT)
# Until when (time.monotonic()) this worker takes each (scope, storlet)
# daemon to run, and the storlet's version it brought into the sandbox
# then: the factory's SBus round trip is skipped, and for that version the
# scope's lock and the storlet's files too.
_seen_running = {}
# How many times this worker killed each scope's sandbox to stop a storlet
# past its timeout: the storlets it ran with it did not fail on their own.
sandbox_kills = collections.Counter()


def storlet_version(sreq):
    """What names the version of ``sreq``'s storlet: its object, the length
    and timestamp the proxy read of it (upstream's test of the node's
    copy), and its dependencies."""
    options = getattr(sreq, "options", None) or {}
    return (
        getattr(sreq, "storlet_id", None),
        options.get("storlet_content_length"),
        options.get("storlet_x_timestamp"),
        tuple(getattr(sreq, "dependencies", None) or ()),
    )


def default_native_lib_dir():
    return os.path.join(sys.prefix, "lib", "storlets")


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
            entries += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            entries += ["--ro-bind", path, path]
    return entries


def _interpreters():
    """The interpreter paths the daemon factory may call, present on the host.

    The factory runs ``/usr/bin/python<Language-Version>``; each one that
    exists is replaced inside the sandbox by a wrapper that starts the
    configured interpreter.  A link to another of them (``python3`` to
    ``python3.11``) is left a link: mounting on it would mount on its
    target twice.
    """
    names = [
        os.path.join("/usr/bin", n)
        for n in sorted(os.listdir("/usr/bin"))
        if re.fullmatch(r"python3(\.\d+)?", n)
    ]
    files = {os.path.realpath(n) for n in names if not os.path.islink(n)}
    return [n for n in names if not os.path.islink(n) or os.path.realpath(n) not in files]


# Whether this worker said, once, why sandboxes get no cgroup.
_cgroups_said = []


def sandbox_cgroup(conf, pipes_dir, scope, logger):
    """The cgroup of a scope's sandbox on this server, or None (and a
    warning, once per worker) where cgroups are off or unusable."""
    wanted = conf.get("sandbox_cgroups", "auto")
    if wanted not in ("auto", "off"):
        raise ValueError("sandbox_cgroups must be auto or off, not %r" % wanted)
    root = conf.get("cgroup_root", cgroups.ROOT)
    version, why = cgroups.detect(root) if wanted == "auto" else (None, "sandbox_cgroups = off")
    if version is None:
        if not _cgroups_said:
            _cgroups_said.append(why)
            logger.warning(
                "storlet sandboxes get no cgroup (%s): their "
                "memory, processes and CPU are bounded per "
                "process by rlimits only" % why
            )
        return None
    name = "%s-%s" % (hashlib.sha256(pipes_dir.encode()).hexdigest()[:8], scope)
    return cgroups.SandboxCgroup(conf.get("cgroup_parent", "mlstorlets"), name, version, root)


def sandbox_uid(pipes_dir, scope, conf):
    """The host uid (and gid) a scope's sandbox runs as on one server."""
    return _uid(
        pipes_dir,
        scope,
        int(conf.get("sandbox_uid_base", UID_BASE)),
        int(conf.get("sandbox_uid_range", UID_RANGE)),
    )


# Asked on every invocation, for a few accounts at a time.
@functools.lru_cache(maxsize=4096)
def _uid(pipes_dir, scope, base, span):
    digest = hashlib.sha256(("%s\0%s" % (pipes_dir, scope)).encode())
    return base + int.from_bytes(digest.digest()[:8], "big") % span


def _start_time(pid):
    """The start time of ``pid`` (clock ticks after boot), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            # The command name, in parentheses, may hold spaces.
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class BubblewrapRunTimeSandbox(RunTimeSandbox):
    """The per-scope sandbox, started as a bubblewrap child of this server."""

    def __init__(self, scope, conf, logger):
        conf = dict(SANDBOX_LIMITS, **conf)
        super().__init__(scope, conf, logger)
        self.native_lib_dir = conf.get("native_lib_dir", default_native_lib_dir())
        self.sandbox_python = conf.get("sandbox_python", os.path.join(sys.prefix, "bin", "python3"))
        # Distributions storlets import beyond the engine's own.
        self.distributions = runtime_view.SANDBOX_DISTRIBUTIONS + tuple(
            n.strip() for n in conf.get("sandbox_distributions", "").split(",") if n.strip()
        )
        self.log_rate = float(conf.get("sandbox_log_rate", log_channel.DEFAULT_RATE))
        self.log_burst = int(conf.get("sandbox_log_burst", log_channel.DEFAULT_BURST))
        self.hostname = conf.get("sandbox_hostname", "storlets-sandbox")
        self.state_dir = conf.get(
            "sandbox_state_dir", os.path.join(self.paths.host_root_dir, "sandboxes")
        )
        self.uid = sandbox_uid(self.paths.host_pipe_root_dir, scope, conf)
        self.file_size_limit = self._load_int_opt(conf, "sandbox_file_size_limit")
        self.cpu_time_limit = self._load_int_opt(conf, "sandbox_cpu_time_limit")
        self.tmp_size = self._load_int_opt(conf, "sandbox_tmp_size")
        self.tmp_inodes = self._load_int_opt(conf, "sandbox_tmp_inodes")
        self.host_tmp_dir = os.path.join(self.state_dir, "tmp", scope)
        self.log_channel_path = os.path.join(self.state_dir, "log-%s.sock" % scope)
        self.bwrap = conf.get("bwrap_path", "/usr/bin/bwrap")
        self.storlet_workers = int(conf.get("storlet_workers", 0))
        self.daemon_idle_time = float(conf.get("daemon_idle_time", DEFAULT_DAEMON_IDLE_TIME))
        if not self.daemon_idle_time > 0:
            raise ValueError(
                "daemon_idle_time must be a number of seconds above 0, not %r"
                % conf.get("daemon_idle_time")
            )
        self.agent = conf.get("storlet_agent", "persistent")
        if self.agent not in AGENTS:
            raise ValueError("storlet_agent must be one of %s, not %r" % (AGENTS, self.agent))
        # What the agent receives an invocation's datagram into.
        self.datagram_limit = datagram_limit(self.agent)
        self.cgroup = sandbox_cgroup(conf, self.paths.host_pipe_root_dir, scope, logger)
        self.seccomp = conf.get("sandbox_seccomp", "on")
        if self.seccomp not in ("on", "off"):
            raise ValueError("sandbox_seccomp must be on or off, not %r" % self.seccomp)
        self.budget = cgroups.Budget(
            memory=self.container_mem_limit if isinstance(self.container_mem_limit, int) else 0,
            pids=self.container_pids_limit or 0,
            cpu_quota=self.container_cpu_quota or 0,
            cpu_period=self.container_cpu_period or 100000,
            cpus=self.container_cpuset_cpus or None,
        )

    def lock(self):
        """The scope's lock on this node: a sandbox's start and the storlet
        cache it reads are changed by one request of one worker at a time
        (:mod:`mlstorlets.server.gateway.scope_lock`)."""
        return scope_lock(self.state_dir, self.scope)

    @property
    def _record(self):
        return os.path.join(self.state_dir, "%s.pid" % self.scope)

    def _data(self):
        """Files made inside from data, by destination: no host file."""
        wrapper = '#!/bin/sh\nexec %s "$@"\n' % self.sandbox_python
        files = {path: (0o755, wrapper) for path in _interpreters()}
        files["/etc/passwd"] = (
            0o644,
            (
                "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
                "%s:x:%d:%d:storlet sandbox:/tmp:/usr/sbin/nologin\n"
                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
                % (SANDBOX_USER, self.uid, self.uid)
            ),
        )
        files["/etc/group"] = (
            0o644,
            "root:x:0:\n%s:x:%d:\nnogroup:x:65534:\n" % (SANDBOX_USER, self.uid),
        )
        return files

    def _mounts(self, data_fds):
        """bwrap arguments that build the sandbox's file system.

        ``data_fds`` maps each path of :meth:`_data` to the descriptor that
        carries its content.
        """
        args = ["--tmpfs", "/"] + _host_entries("/", ROOT_ENTRIES)
        # bwrap, run by root, makes the directories leading to a mount point
        # 0700: each is made first, readable by the sandbox user.
        made = {"/", "/usr", "/tmp", "/proc", "/dev", "/etc"}

        def parents(dest):
            out = []
            path = os.path.dirname(dest)
            while path not in made and not path.startswith("/usr/"):
                out[:0] = ["--perms", "0755", "--dir", path]
                made.add(path)
                path = os.path.dirname(path)
            return out

        args += ["--perms", "0755", "--dir", "/etc"]
        args += _host_entries("/etc", ETC_ENTRIES)
        # Private /proc, /dev and /tmp first: what is bound below must stay
        # visible even when it lives under the host's /tmp (a checkout there).
        # /tmp is a tmpfs of the host's, bounded in bytes and files.
        args += ["--proc", "/proc", "--dev", "/dev", "--bind", self.host_tmp_dir, "/tmp"]
        # Semaphores for joblib and multiprocessing; docker's default size.
        args += ["--perms", "1777", "--size", str(SHM_SIZE), "--tmpfs", "/dev/shm"]
        # /usr is read-only, so the mount point of the native library
        # directory is made on a tmpfs over /usr/local/lib, into which the
        # host's own entries are bound back.
        local_lib = "/usr/local/lib"
        args += ["--tmpfs", local_lib]
        for name in sorted(os.listdir(local_lib)):
            if name != "storlets":
                path = os.path.join(local_lib, name)
                args += ["--ro-bind", path, path]
        args += ["--ro-bind", self.native_lib_dir, SANDBOX_NATIVE_LIB_DIR]
        # The interpreter, its standard library, the distributions storlets
        # import and the engine's sandbox half (trusted code, read from the
        # host's install), at the paths they have outside; nothing else of
        # the host's Python.
        args += runtime_view.bind_args(
            self.sandbox_python, _engine_package(), SANDBOX_ENGINE_DIR, parents, self.distributions
        )
        files = self._data()
        for path in sorted(files):
            args += [
                "--perms",
                "%04o" % files[path][0],
                "--ro-bind-data",
                str(data_fds[path]),
                path,
            ]
        args += parents(self.paths.sandbox_pipe_dir) + [
            "--bind",
            self.paths.host_pipe_dir,
            self.paths.sandbox_pipe_dir,
        ]
        args += parents(self.paths.sandbox_storlet_base_dir) + [
            "--ro-bind",
            self.paths.host_storlet_base_dir,
            self.paths.sandbox_storlet_base_dir,
        ]
        args += ["--bind", self.log_channel_path, "/dev/log"]
        args += ["--remount-ro", "/"]
        return args

    def _command(self, container_name, data_fds, seccomp_fd=None):
        return (
            [
                self.bwrap,
                "--die-with-parent",
                "--new-session",
            ]
            + (["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else [])
            + [
                "--unshare-net",
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
                "--hostname",
                self.hostname,
                # Only what setpriv needs to drop to the sandbox uid; the uid
                # change clears them (no keep-caps, no ambient set).
                "--cap-drop",
                "ALL",
                "--cap-add",
                "CAP_SETUID",
                "--cap-add",
                "CAP_SETGID",
            ]
            + self._mounts(data_fds)
            + [
                "--chdir",
                "/",
                "--clearenv",
                "--setenv",
                "PATH",
                "/usr/bin:/bin",
                "--setenv",
                "HOME",
                "/tmp",
                "--setenv",
                "TMPDIR",
                "/tmp",
                "--setenv",
                "USER",
                SANDBOX_USER,
                "--setenv",
                "PYTHONPATH",
                SANDBOX_ENGINE_DIR + ":" + os.path.join(SANDBOX_NATIVE_LIB_DIR, "python"),
                SETPRIV,
                "--reuid",
                str(self.uid),
                "--regid",
                str(self.uid),
                "--clear-groups",
                "--inh-caps",
                "-all",
                "--no-new-privs",
                "--",
                "/usr/bin/python3",
            ]
            + self._get_container_command(container_name)
        )

    def _get_container_command(self, container_name):
        if self.agent == "upstream":
            return super()._get_container_command(container_name)
        return [
            "-m",
            "mlstorlets.server.agent.factory",
            self.paths.sandbox_factory_pipe,
            self.storlet_daemon_factory_debug_level,
            container_name,
            "--workers",
            str(self.storlet_workers),
            "--daemon-idle-time",
            repr(self.daemon_idle_time),
        ]

    def _limits(self):
        """Limits applied to the sandbox between fork and exec."""
        mem_limit = self.container_mem_limit
        if isinstance(mem_limit, str):
            raise StorletRuntimeException(
                "container_mem_limit must be a number of bytes, not %r" % mem_limit
            )
        cpus = self.container_cpuset_cpus
        cpuset = _parse_cpuset(cpus) if cpus else None
        limits = []
        if mem_limit:
            limits.append((resource.RLIMIT_AS, mem_limit, mem_limit))
        if self.file_size_limit:
            limits.append((resource.RLIMIT_FSIZE, self.file_size_limit, self.file_size_limit))
        if self.container_pids_limit:
            # Counted per real uid: the sandbox's processes and threads
            # (bwrap itself runs as root, which the limit exempts).
            limits.append(
                (resource.RLIMIT_NPROC, self.container_pids_limit, self.container_pids_limit)
            )
        if self.cpu_time_limit:
            limits.append(
                (resource.RLIMIT_CPU, self.cpu_time_limit, self.cpu_time_limit + CPU_GRACE)
            )

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

    def oom_kills(self):
        """Processes the kernel killed for this sandbox's memory budget so
        far (0 without a cgroup)."""
        return self.cgroup.oom_kills() if self.cgroup else 0

    def over_memory_since(self, oom_kills):
        """Whether the kernel killed a process for the memory budget since
        :meth:`oom_kills` said ``oom_kills``."""
        return self.cgroup is not None and self.oom_kills() > oom_kills

    def _end_cgroup(self):
        if self.cgroup is not None and not self.cgroup.remove():
            self.logger.warning(
                "the cgroup %s of the sandbox of scope %s "
                "could not be removed" % (self.cgroup.name, self.scope)
            )

    def _prepare_host_dirs(self):
        os.makedirs(self.paths.host_storlet_base_dir, exist_ok=True)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        # Upstream leaves the channel directory 0777; it is the sandbox
        # user's own, out of reach of any other uid but root.
        pipe_dir = self.paths.host_pipe_dir
        os.chown(pipe_dir, self.uid, self.uid, follow_symlinks=False)
        os.chmod(pipe_dir, 0o700, follow_symlinks=False)

    def _clear_factory_path(self):
        """Remove what is where the new factory binds its socket.  The
        channel directory is the sandbox user's and outlives a restart: a
        storlet may have left there what libsbus cannot bind over (a
        directory), which would keep the account's sandbox from starting.
        The sandbox is stopped: nothing inside can swap the path meanwhile,
        and ``rmtree`` follows no link."""
        path = self.paths.host_factory_pipe
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISDIR(mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def _mount_writable_dirs(self):
        """Fresh bounded tmpfs for the channel directory and ``/tmp``
        (:mod:`mlstorlets.server.gateway.mounts`)."""
        mounts.mount_tmpfs(
            self.paths.host_pipe_dir,
            mounts.CHANNEL_SIZE,
            mounts.CHANNEL_INODES,
            0o700,
            uid=self.uid,
            noexec=True,
            fresh=False,
        )
        mounts.mount_tmpfs(
            self.host_tmp_dir, self.tmp_size or (1 << 30), self.tmp_inodes or 65536, 0o1777
        )

    def _restart(self, container_image_name):
        if not os.path.exists(os.path.join(self.native_lib_dir, "libsbus.so")):
            raise StorletRuntimeException("libsbus.so not found in %s" % self.native_lib_dir)
        if not os.path.exists(SETPRIV):
            raise StorletRuntimeException(
                "%s (util-linux) is needed to run storlets unprivileged" % SETPRIV
            )
        self._prepare_host_dirs()
        self._stop_previous()
        try:
            self._mount_writable_dirs()
        except OSError as err:
            raise StorletRuntimeException("Cannot mount the sandbox's file systems: %s" % err)
        self._clear_factory_path()
        previous = _log_channels.pop(self.scope, None)
        if previous:
            previous.close()
        _log_channels[self.scope] = log_channel.LogChannel(
            self.log_channel_path, self.scope, self.logger.info, self.log_rate, self.log_burst
        ).open()
        if self.cgroup is not None:
            try:
                self.cgroup.create(self.budget)
            except OSError as err:
                raise StorletRuntimeException("Cannot make the cgroup of the sandbox: %s" % err)
        container_name = self._get_container_name(container_image_name)
        files = {path: text.encode() for path, (_, text) in self._data().items()}
        if self.seccomp == "on":
            files[SECCOMP] = seccomp.program()
        data_fds, seccomp_fd = {}, None
        try:
            for path, data in files.items():
                read, write = os.pipe()
                data_fds[path] = read
                # At most a few KB each: within a pipe's buffer.
                with open(write, "wb") as f:
                    f.write(data)
            seccomp_fd = data_fds.pop(SECCOMP, None)
            proc = subprocess.Popen(
                self._command(container_name, data_fds, seccomp_fd),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={},
                close_fds=True,
                pass_fds=sorted(
                    list(data_fds.values()) + ([seccomp_fd] if seccomp_fd is not None else [])
                ),
                preexec_fn=self._limits(),
            )
        except OSError as err:
            raise StorletRuntimeException("Cannot start the bubblewrap sandbox: %s" % err)
        finally:
            for fd in data_fds.values():
                os.close(fd)
            if seccomp_fd is not None:
                os.close(seccomp_fd)
        _running[self.scope] = proc
        tmp = "%s.%d.tmp" % (self._record, os.getpid())
        with open(tmp, "w") as f:
            f.write("%d %s\n" % (proc.pid, _start_time(proc.pid)))
        os.replace(tmp, self._record)


def _engine_package():
    """The host directory of this ``mlstorlets`` package (trusted code)."""
    import mlstorlets

    return os.path.dirname(os.path.abspath(mlstorlets.__file__))


def _parse_cpuset(spec):
    """Parse a cpuset list such as ``0-2,5`` into a set of CPU numbers."""
    cpus = set()
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


class SandboxUnavailable(StorletRuntimeException):
    """The scope's sandbox could not start: the server's fault, not the
    storlet's."""


class StorletNotLoaded(StorletRuntimeException):
    """The storlet's module could not be loaded: what it raised, one line
    (the storlet's own words, from inside the sandbox)."""


class BoundedSandbox(BubblewrapRunTimeSandbox):
    """The bubblewrap sandbox, whose daemon factory commands are bounded.

    ``deadline`` (a ``time.monotonic()`` value), when set, also bounds them:
    the invocation's storlet timeout covers the sandbox's start.
    """

    deadline = None

    def __init__(self, scope, conf, logger):
        super().__init__(scope, conf, logger)
        self.cancel_timeout = float(conf.get("storlet_cancel_timeout", DEFAULT_CANCEL_TIMEOUT))
        self.daemon_check_time = float(conf.get("daemon_check_time", DEFAULT_DAEMON_CHECK_TIME))

    def activate_storlet_daemon(self, sreq, cache_updated=True):
        """Upstream's activation (ask the factory whether the storlet's
        daemon runs, start it if not), skipped for a daemon this worker saw
        running within ``daemon_check_time`` and whose storlet did not
        change.  A daemon that died since receives no command: the
        invocation then raises
        :class:`~mlstorlets.server.gateway.invocation.DaemonGone`, and the
        gateway forgets it and activates it again."""
        key = (self.scope, sreq.storlet_main)
        until = _seen_running.get(key, (0, None))[0]
        if not cache_updated and time.monotonic() < until:
            # The sandbox holds this version (another worker brought it).
            _seen_running[key] = (until, storlet_version(sreq))
            return
        _seen_running.pop(key, None)
        super().activate_storlet_daemon(sreq, cache_updated)
        if self.daemon_check_time > 0:
            _seen_running[key] = (time.monotonic() + self.daemon_check_time, storlet_version(sreq))

    def ready(self, sreq):
        """Whether, within ``daemon_check_time``, this worker brought this
        version of ``sreq``'s storlet (and dependencies) into the sandbox
        and saw its daemon running: then nothing is to be checked before
        the invocation."""
        until, version = _seen_running.get((self.scope, sreq.storlet_main), (0, None))
        return time.monotonic() < until and version == storlet_version(sreq)

    def forget_daemons(self, storlet_id=None):
        """Ask the factory again before the next invocation of
        ``storlet_id`` (None: of every storlet of the scope)."""
        for key in [k for k in _seen_running if k[0] == self.scope]:
            if storlet_id is None or key[1] == storlet_id:
                del _seen_running[key]

    def restart(self):
        # Logged: one start per account and worker is what the lock is for.
        self.logger.info("starting the sandbox of scope %s" % self.scope)
        self.forget_daemons()
        try:
            super().restart()
        except StorletTimeout:
            raise
        except (StorletRuntimeException, OSError) as err:
            raise SandboxUnavailable(str(err)) from err

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
            return bool(self._factory(self.sandbox_wait_timeout).daemon_status(storlet_id).status)
        except SBusClientException as err:
            raise StorletRuntimeException("Failed to get status about storlet daemon: %s" % err)

    def start_storlet_daemon(self, spath, storlet_id, language, language_version=None):
        try:
            # The factory gives a daemon 10 pings a second apart after its
            # start, which imports the storlet; a loaded machine takes
            # longer, and a factory whose answer nobody reads dies of it.
            resp = self._factory(self.sandbox_wait_timeout * 3).start_daemon(
                language.lower(),
                spath,
                storlet_id,
                self.paths.get_sbox_storlet_pipe(storlet_id),
                self.storlet_daemon_debug_level,
                self.storlet_daemon_thread_pool_size,
                language_version,
            )
        except SBusClientException as err:
            raise StorletRuntimeException("Daemon start failed: %s" % err)
        if not resp.status and not self._started_late(storlet_id):
            message = str(resp.message)
            if message.startswith(protocol.NOT_LOADED):
                raise StorletNotLoaded(protocol.one_line(message[len(protocol.NOT_LOADED) :]))
            raise StorletRuntimeException("Daemon start failed: %s" % resp.message)

    def _started_late(self, storlet_id):
        """Whether a daemon the factory gave up on answers after all.

        The factory gives up after ten pings, but leaves the daemon running:
        on a loaded machine its import of the storlet (OpenCV, scikit-learn)
        takes longer.  Waits while the factory sees it alive, until the
        invocation's deadline.
        """
        pipe = self.paths.get_host_storlet_pipe(storlet_id)
        deadline = self.deadline or time.monotonic() + self.sandbox_wait_timeout
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
            resp = self._factory(self.sandbox_wait_timeout).stop_daemon(storlet_id)
        except SBusClientException as err:
            raise StorletRuntimeException("Daemon stop failed: %s" % err)
        if not resp.status:
            raise StorletRuntimeException("Daemon stop failed: %s" % resp.message)

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
        if cancelled and self.agent == "persistent":
            return
        lock = self.lock()
        if not lock.acquire(timeout=self.sandbox_wait_timeout):
            return  # the next activation's bounded checks restart it
        try:
            if cancelled:
                try:
                    self.forget_daemons(storlet_id)
                    self.stop_storlet_daemon(storlet_id)
                    return
                except StorletRuntimeException as err:
                    self.logger.warning(str(err))
            self.logger.warning("killing the sandbox of scope %s" % self.scope)
            sandbox_kills[self.scope] += 1
            self.forget_daemons()
            self._stop_previous()
        finally:
            lock.release()
