"""CPU time by process, for the benchmarks' CPU per object.

A snapshot reads every process's user and system time from /proc (its own
and that of the children it reaped, so that Swift's workers count for
their server), summed by role: the proxy, the object, container and
account servers, the storlet sandboxes (bubblewrap and the agent inside),
memcached.  The client, a child of the benchmark, is counted from the
benchmark's own reaped children.  ``per_object(before, after, n)`` gives
milliseconds of CPU per object by role.
"""

import os
import resource

ROLES = (
    ("proxy", ("swift-proxy-server",)),
    ("object server", ("swift-object-server",)),
    ("container server", ("swift-container-server",)),
    ("account server", ("swift-account-server",)),
    ("sandbox", ("bwrap", "mlstorlets.server.agent")),
    ("memcached", ("memcached",)),
)
_TICK = os.sysconf("SC_CLK_TCK")


def _role(cmdline):
    for role, needles in ROLES:
        if any(needle in cmdline for needle in needles):
            return role
    return None


def snapshot():
    """{role: CPU seconds so far}, with ``client`` for reaped children."""
    found = {role: 0.0 for role, _ in ROLES}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            role = _role(cmdline)
            if role is None:
                continue
            with open("/proc/%s/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        # utime, stime, cutime, cstime: fields 14 to 17 of stat(5).
        found[role] += sum(int(v) for v in fields[11:15]) / _TICK
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    found["client"] = children.ru_utime + children.ru_stime
    return found


def per_object(before, after, objects):
    """{role: CPU milliseconds per object} between two snapshots, and
    ``total``."""
    found = {
        role: round(1000.0 * (after[role] - before.get(role, 0.0)) / max(objects, 1), 2)
        for role in after
    }
    found["total"] = round(sum(found.values()), 2)
    return found


def format_cpu(found):
    """One line: ``proxy 11.5, object server 9.6, ... ms/object``."""
    parts = ["%s %.1f" % (role, ms) for role, ms in found.items() if role != "total" and ms]
    return "%s; total %.1f ms CPU/object" % (", ".join(parts), found["total"])
