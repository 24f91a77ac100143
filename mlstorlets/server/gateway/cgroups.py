"""Budgets per sandbox, in a cgroup of its own.

rlimits bound each process: a sandbox of N processes held N times
``RLIMIT_AS``, and its tmpfs ``/tmp`` and kernel objects (400,000 empty
files) counted in none.  A cgroup bounds the whole sandbox, every process
it starts included: memory (pages of its tmpfs and, where the controller
counts it, kernel memory), processes, CPU share and CPU set.

Both hierarchies are driven with the same options:

* cgroup v2 (``cgroup.controllers`` at the root, most production hosts):
  ``memory.max``, ``pids.max``, ``cpu.max``, ``cpuset.cpus`` in one
  directory ``<root>/<parent>/<name>``;
* cgroup v1 (one hierarchy per controller, as on the machines this is
  developed on): ``memory.limit_in_bytes`` (and ``memory.kmem.limit_in_bytes``
  where the kernel still takes it), ``pids.max``, ``cpu.cfs_quota_us`` and
  ``cpu.cfs_period_us``, ``cpuset.cpus``, each in
  ``<root>/<controller>/<parent>/<name>``, with ``cpuacct`` for the CPU
  used.

Where neither is usable, :func:`detect` says why and the gateway falls
back to rlimits, saying so.
"""

import collections
import dataclasses
import errno
import os
import signal
import time

ROOT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "cpuset")
V2_CONTROLLERS = ("memory", "pids", "cpu", "cpuset")


@dataclasses.dataclass
class Budget:
    """What one sandbox may use; 0 (or None for ``cpus``) lifts a bound.

    Attributes
    ----------
    memory : int
        Bytes of memory, its tmpfs pages included.
    pids : int
        Processes and threads.
    cpu_quota, cpu_period : int
        Microseconds of CPU per period (``quota / period`` cores).
    cpus : str or None
        CPU list, e.g. ``'0-1'``.
    """

    memory: int = 0
    pids: int = 0
    cpu_quota: int = 0
    cpu_period: int = 100000
    cpus: str = None


def detect(root=ROOT):
    """``('v2' | 'v1', None)`` for the hierarchy to use, or ``(None, why)``."""
    controllers = os.path.join(root, "cgroup.controllers")
    if os.path.exists(controllers):
        with open(controllers) as f:
            present = set(f.read().split())
        missing = set(V2_CONTROLLERS) - present
        if missing:
            return None, ("cgroup v2 lacks the controllers %s" % ", ".join(sorted(missing)))
        if not os.access(root, os.W_OK):
            return None, "cgroup v2 at %s is not writable" % root
        return "v2", None
    missing = [c for c in V1_CONTROLLERS if not os.path.isdir(os.path.join(root, c))]
    if missing:
        return None, (
            "no cgroup v2 and no cgroup v1 hierarchies %s under %s" % (", ".join(missing), root)
        )
    unwritable = [c for c in V1_CONTROLLERS if not os.access(os.path.join(root, c), os.W_OK)]
    if unwritable:
        return None, ("cgroup v1 hierarchies %s are not writable" % ", ".join(unwritable))
    return "v1", None


class SandboxCgroup(object):
    """The cgroup of one sandbox.

    Parameters
    ----------
    parent : str
        Path below each hierarchy's root that holds the sandboxes'
        cgroups, e.g. ``'mlstorlets'``.
    name : str
        The sandbox's own directory below ``parent``.
    version : {'v1', 'v2'}
    root : str
    """

    def __init__(self, parent, name, version, root=ROOT):
        self.parent = parent.strip("/")
        self.name = name
        self.version = version
        self.root = root

    # -- where -----------------------------------------------------------
    def _dir(self, controller=None):
        if self.version == "v2":
            return os.path.join(self.root, self.parent, self.name)
        return os.path.join(self.root, controller, self.parent, self.name)

    def directories(self):
        """Every directory of this cgroup (one, or one per controller)."""
        if self.version == "v2":
            return [self._dir()]
        return [self._dir(c) for c in V1_CONTROLLERS]

    # -- life ------------------------------------------------------------
    def create(self, budget):
        """Make the cgroup (again) and write ``budget`` into it."""
        if self.version == "v2":
            self._create_v2(budget)
        else:
            self._create_v1(budget)

    def _create_v2(self, budget):
        wanted = " ".join("+" + c for c in V2_CONTROLLERS)
        path = self.root
        for part in self.parent.split("/"):
            _write(os.path.join(path, "cgroup.subtree_control"), wanted)
            path = os.path.join(path, part)
            os.makedirs(path, exist_ok=True)
        _write(os.path.join(path, "cgroup.subtree_control"), wanted)
        here = self._dir()
        os.makedirs(here, exist_ok=True)
        _write(os.path.join(here, "memory.max"), budget.memory or "max")
        _write(os.path.join(here, "memory.swap.max"), 0, optional=True)
        _write(os.path.join(here, "pids.max"), budget.pids or "max")
        _write(
            os.path.join(here, "cpu.max"), "%s %d" % (budget.cpu_quota or "max", budget.cpu_period)
        )
        if budget.cpus:
            _write(os.path.join(here, "cpuset.cpus"), budget.cpus)

    def _create_v1(self, budget):
        for controller in V1_CONTROLLERS:
            path = os.path.join(self.root, controller)
            for part in self.parent.split("/") + [self.name]:
                parent, path = path, os.path.join(path, part)
                os.makedirs(path, exist_ok=True)
                if controller == "cpuset":
                    # A new cpuset has no CPU and no memory node: it takes
                    # its parent's before a process may join it.
                    for key in ("cpuset.cpus", "cpuset.mems"):
                        if not _read(os.path.join(path, key)):
                            _write(os.path.join(path, key), _read(os.path.join(parent, key)))
        memory = self._dir("memory")
        limit = budget.memory or -1
        _write(os.path.join(memory, "memory.limit_in_bytes"), limit)
        # Kernel memory (inodes, dentries of a tmpfs full of empty files)
        # where the kernel still takes a separate limit; newer kernels
        # count it in the limit above anyway.
        _write(os.path.join(memory, "memory.kmem.limit_in_bytes"), limit, optional=True)
        _write(os.path.join(self._dir("pids"), "pids.max"), budget.pids or "max")
        cpu = self._dir("cpu")
        _write(os.path.join(cpu, "cpu.cfs_period_us"), budget.cpu_period)
        _write(os.path.join(cpu, "cpu.cfs_quota_us"), budget.cpu_quota or -1)
        if budget.cpus:
            _write(os.path.join(self._dir("cpuset"), "cpuset.cpus"), budget.cpus)

    def attach(self, pid=0):
        """Move process ``pid`` (0: this one) into the cgroup; what it
        starts from then on stays there."""
        pid = pid or os.getpid()
        for path in self.directories():
            _write(os.path.join(path, "cgroup.procs"), pid)

    def pids(self):
        """The processes in the cgroup."""
        path = self.directories()[0]
        text = _read(os.path.join(path, "cgroup.procs")) or ""
        return [int(p) for p in text.split()]

    def remove(self, timeout=5.0):
        """Kill what is left in the cgroup and remove it; False if it could
        not be removed in ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        removed = True
        for path in self.directories():
            _forget_under(path)
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as err:
                    if err.errno != errno.EBUSY or time.monotonic() > deadline:
                        removed = False
                        break
                    time.sleep(0.05)
        return removed

    # -- readings --------------------------------------------------------
    def oom_kills(self):
        """Processes the kernel killed for the memory budget so far."""
        if self.version == "v2":
            text = _read_again(os.path.join(self._dir(), "memory.events"))
        else:
            text = _read_again(os.path.join(self._dir("memory"), "memory.oom_control"))
        for line in (text or "").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def cpu_seconds(self):
        """CPU time the sandbox's processes used, in seconds."""
        if self.version == "v2":
            text = _read(os.path.join(self._dir(), "cpu.stat")) or ""
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
            return 0.0
        text = _read(os.path.join(self._dir("cpuacct"), "cpuacct.usage"))
        return int(text or 0) / 1e9


def remove_tree(parent, root=ROOT):
    """Remove every (empty) cgroup below ``parent`` and ``parent`` itself,
    in each hierarchy; what could not be removed."""
    left = []
    for top in _tops(parent, root):
        if not os.path.isdir(top):
            continue
        for path, dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(path)
            except OSError:
                left.append(path)
    return left


def remove_if_empty(parent, root=ROOT):
    """Remove ``parent`` in each hierarchy where nothing is left in it."""
    for top in _tops(parent, root):
        try:
            os.rmdir(top)
        except OSError:
            pass


def _tops(parent, root):
    """``parent`` in each hierarchy: one under v2, one per controller
    under v1."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return [os.path.join(root, parent)]
    return [os.path.join(root, c, parent) for c in V1_CONTROLLERS]


# The counters this process reads on every invocation, by path: kept open,
# the most recently read ones (a server may serve any number of accounts).
_kept_open = collections.OrderedDict()
KEEP_OPEN = 128


def _read_again(path):
    """What ``path`` holds now, read through a descriptor kept open (a
    cgroup's counters, read twice per invocation); None when it is gone."""
    for _ in range(2):
        fd = _kept_open.get(path)
        if fd is None:
            try:
                fd = _kept_open[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
            while len(_kept_open) > KEEP_OPEN:
                os.close(_kept_open.popitem(last=False)[1])
        else:
            _kept_open.move_to_end(path)
        try:
            return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        except OSError:
            # The cgroup was removed since (and may have been made again).
            _forget_under(path)
    return None


def _forget_under(path):
    """Close what is kept open at or below ``path``."""
    for kept in [k for k in _kept_open if k == path or k.startswith(path + os.sep)]:
        os.close(_kept_open.pop(kept))


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def _write(path, value, optional=False):
    try:
        with open(path, "w") as f:
            f.write(str(value))
    except OSError:
        if not optional:
            raise
