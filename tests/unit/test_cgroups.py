"""Sandbox cgroups on fake cgroup trees (no kernel): what is written where,
for v2 and for v1.  tests/functional/test_budgets.py enforces them for
real against hostile storlets."""

import logging
import os

import pytest

from mlstorlets.server.gateway import cgroups
from mlstorlets.server.gateway.sandbox import sandbox_cgroup

BUDGET = cgroups.Budget(memory=2**30, pids=64, cpu_quota=50000, cpu_period=100000, cpus="0")


def read(path):
    with open(path) as f:
        return f.read()


@pytest.fixture
def v2(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    return tmp_path


@pytest.fixture
def v1(tmp_path):
    for controller in cgroups.V1_CONTROLLERS:
        (tmp_path / controller).mkdir()
    (tmp_path / "cpuset" / "cpuset.cpus").write_text("0-1\n")
    (tmp_path / "cpuset" / "cpuset.mems").write_text("0\n")
    return tmp_path


def test_detect(v2, tmp_path_factory):
    assert cgroups.detect(str(v2)) == ("v2", None)
    empty = tmp_path_factory.mktemp("none")
    version, why = cgroups.detect(str(empty))
    assert version is None and "no cgroup v2 and no cgroup v1" in why
    (v2 / "cgroup.controllers").write_text("cpu io\n")
    version, why = cgroups.detect(str(v2))
    assert version is None and "memory, pids" in why


def test_v1_is_detected(v1):
    assert cgroups.detect(str(v1)) == ("v1", None)


def test_v2_budget(v2):
    group = cgroups.SandboxCgroup("mlstorlets/aio", "abc-scope", "v2", str(v2))
    group.create(BUDGET)
    here = v2 / "mlstorlets" / "aio" / "abc-scope"
    assert read(here / "memory.max") == str(2**30)
    assert read(here / "pids.max") == "64"
    assert read(here / "cpu.max") == "50000 100000"
    assert read(here / "cpuset.cpus") == "0"
    # Each level hands the controllers down.
    for level in (v2, v2 / "mlstorlets", v2 / "mlstorlets" / "aio"):
        assert read(level / "cgroup.subtree_control") == "+memory +pids +cpu +cpuset"
    group.attach(4242)
    assert read(here / "cgroup.procs") == "4242"
    (here / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
    (here / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1\n")
    assert group.oom_kills() == 2 and group.cpu_seconds() == 1.5


def test_v2_lifts_what_is_0(v2):
    group = cgroups.SandboxCgroup("mlstorlets", "s", "v2", str(v2))
    group.create(cgroups.Budget())
    here = v2 / "mlstorlets" / "s"
    assert read(here / "memory.max") == "max"
    assert read(here / "cpu.max") == "max 100000"
    assert not (here / "cpuset.cpus").exists()


def test_v1_budget(v1):
    group = cgroups.SandboxCgroup("mlstorlets", "abc-scope", "v1", str(v1))
    group.create(BUDGET)
    memory = v1 / "memory" / "mlstorlets" / "abc-scope"
    assert read(memory / "memory.limit_in_bytes") == str(2**30)
    assert read(memory / "memory.kmem.limit_in_bytes") == str(2**30)
    assert read(v1 / "pids" / "mlstorlets" / "abc-scope" / "pids.max") == "64"
    cpu = v1 / "cpu" / "mlstorlets" / "abc-scope"
    assert read(cpu / "cpu.cfs_quota_us") == "50000"
    assert read(cpu / "cpu.cfs_period_us") == "100000"
    cpuset = v1 / "cpuset" / "mlstorlets"
    # The parent took the root's CPUs and memory nodes; the sandbox its CPU.
    assert read(cpuset / "cpuset.cpus") == "0-1"
    assert read(cpuset / "cpuset.mems") == "0"
    assert read(cpuset / "abc-scope" / "cpuset.cpus") == "0"
    assert read(cpuset / "abc-scope" / "cpuset.mems") == "0"
    group.attach(99)
    for controller in cgroups.V1_CONTROLLERS:
        assert read(v1 / controller / "mlstorlets" / "abc-scope" / "cgroup.procs") == "99"
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n")
    (v1 / "cpuacct" / "mlstorlets" / "abc-scope" / "cpuacct.usage").write_text("2500000000\n")
    assert group.oom_kills() == 4 and group.cpu_seconds() == 2.5


def test_the_gateway_names_a_cgroup_per_server_and_scope(v2):
    conf = {"cgroup_root": str(v2), "cgroup_parent": "mlstorlets/x"}
    one = sandbox_cgroup(conf, "/srv/a/pipes", "acme-1", logging.getLogger())
    two = sandbox_cgroup(conf, "/srv/b/pipes", "acme-1", logging.getLogger())
    assert one.parent == "mlstorlets/x" and one.name.endswith("-acme-1")
    assert one.name != two.name


def test_the_gateway_says_why_it_has_no_cgroups(tmp_path, caplog):
    from mlstorlets.server.gateway import sandbox

    sandbox._cgroups_said.clear()
    with caplog.at_level(logging.WARNING):
        got = sandbox_cgroup({"cgroup_root": str(tmp_path)}, "/p", "s", logging.getLogger("t"))
    assert got is None
    assert "get no cgroup" in caplog.text and "rlimits only" in caplog.text
    assert sandbox_cgroup({"sandbox_cgroups": "off"}, "/p", "s", logging.getLogger("t")) is None
    with pytest.raises(ValueError, match="auto or off"):
        sandbox_cgroup({"sandbox_cgroups": "yes"}, "/p", "s", logging.getLogger("t"))


def test_remove_tree_leaves_nothing(v2):
    group = cgroups.SandboxCgroup("mlstorlets/aio-1", "s", "v2", str(v2))
    os.makedirs(group.directories()[0])
    assert cgroups.remove_tree("mlstorlets/aio-1", str(v2)) == []
    assert not (v2 / "mlstorlets" / "aio-1").exists()


def test_the_oom_count_is_read_again_through_one_descriptor(v2):
    group = cgroups.SandboxCgroup("mlstorlets", "kept", "v2", str(v2))
    group.create(BUDGET)
    events = v2 / "mlstorlets" / "kept" / "memory.events"
    assert group.oom_kills() == 0  # no file yet
    events.write_text("oom 0\noom_kill 1\n")
    assert group.oom_kills() == 1
    kept = dict(cgroups._kept_open)
    events.write_text("oom 2\noom_kill 3\n")  # the kernel's counter moved
    assert group.oom_kills() == 3 and cgroups._kept_open == kept
    # Removing the cgroup lets go of its files.
    assert group.remove(timeout=0.1) in (True, False)
    assert str(events) not in cgroups._kept_open


def test_only_the_counters_read_last_are_kept_open(tmp_path, monkeypatch):
    monkeypatch.setattr(cgroups, "KEEP_OPEN", 2)
    monkeypatch.setattr(cgroups, "_kept_open", cgroups.collections.OrderedDict())
    paths = []
    for name in ("a", "b", "c"):
        path = tmp_path / name
        path.write_text("oom_kill 1\n")
        paths.append(str(path))
        assert cgroups._read_again(str(path)) == "oom_kill 1"
    # Read again, "b" is the most recent; "a" was let go for "c".
    assert cgroups._read_again(paths[1]) == "oom_kill 1"
    assert list(cgroups._kept_open) == [paths[2], paths[1]]
    for fd in cgroups._kept_open.values():
        os.close(fd)
