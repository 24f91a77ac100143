"""Budgets per sandbox, not per process, in the sandbox's cgroup.

The hostile storlet holds memory across several processes, each within the
per-process limit (``RLIMIT_AS``) but together over the sandbox's budget:
upstream's rlimits let it; the sandbox's cgroup stops it, the client hears
``507 out-of-memory`` and the sandbox keeps serving.  Then it spins in
several processes: the CPU its sandbox used, read from the cgroup, stays
within the sandbox's share (one core by default) on this 2-core machine.
"""

import os
import time
import urllib.parse

import pytest
from support import hostile
from swiftclient.exceptions import ClientException

from mlstorlets.sandbox import protocol
from mlstorlets.server.gateway import cgroups
from mlstorlets.server.node import SANDBOX_LIMITS

BUDGET = int(SANDBOX_LIMITS["container_mem_limit"])
SHARE = int(SANDBOX_LIMITS["container_cpu_quota"]) / int(SANDBOX_LIMITS["container_cpu_period"])


@pytest.fixture
def target(conn, container):
    conn.put_object(container, "x", b"x")
    return container


def test_the_cgroups_of_this_host_are_used():
    version, why = cgroups.detect()
    assert version, why


def test_memory_across_processes_is_bounded_per_sandbox(cluster, conn, target):
    # Three processes of 0.6 of the budget each: each under RLIMIT_AS
    # (the same number), together far over the sandbox's budget.
    gb = 0.6 * BUDGET / 2**30
    once = cluster.connection(retries=0)  # a 507 is not to be tried again
    with pytest.raises(ClientException) as err:
        once.get_object(
            target,
            "x",
            headers={
                "X-Run-Storlet": "hostile.py",
                "X-Storlet-Run-On-Proxy": "",
                "X-Storlet-Parameter-1": "action:hog-procs",
                "X-Storlet-Parameter-2": "gb:%.3f" % gb,
                "X-Storlet-Parameter-3": "n:3",
            },
        )
    headers = {k.lower(): v for k, v in err.value.http_response_headers.items()}
    reason = urllib.parse.unquote(headers[protocol.REASON_HEADER.lower()])
    print("3 x %.2f GB in one sandbox: %d %s" % (gb, err.value.http_status, reason))
    assert err.value.http_status == 507
    assert headers[protocol.ERROR_HEADER.lower()] == protocol.OUT_OF_MEMORY
    assert "memory budget of %d bytes" % BUDGET in reason
    # The sandbox keeps serving.
    assert hostile(conn, target, "whoami").startswith("allowed uid=")


def test_spinning_processes_get_the_sandboxs_cpu_share(conn, target):
    path = hostile(conn, target, "cgroup").split()[1]
    usage = os.path.join(cgroups.ROOT, "cpuacct", path.lstrip("/"), "cpuacct.usage")
    if not os.path.exists(usage):  # cgroup v2
        usage = os.path.join(cgroups.ROOT, path.lstrip("/"), "cpu.stat")

    def cpu():
        with open(usage) as f:
            text = f.read()
        if usage.endswith("cpu.stat"):
            return int(text.split("usage_usec ")[1].split()[0]) / 1e6
        return int(text) / 1e9

    before, started = cpu(), time.monotonic()
    assert hostile(conn, target, "spin-procs", n=3, seconds=4) == "allowed spun"
    share = (cpu() - before) / (time.monotonic() - started)
    print(
        "3 processes spinning for 4 s used %.2f cores (share %.2f, host "
        "cores %d)" % (share, SHARE, os.cpu_count())
    )
    # CFS enforces the quota per 100 ms period; without it, 3 spinners
    # would use both cores of this machine.
    assert share <= SHARE * 1.25
