"""The sandbox the bubblewrap gateway builds (argument level): the
runtime of mlstorlets.server.gateway.sandbox.

The functional tests show the isolation from inside a running sandbox;
these pin down the command line that gives it.
"""

import logging
import os
import resource
import socket
import subprocess
import sys
import types

import pytest

from mlstorlets.server.gateway import runtime_view, sbus
from mlstorlets.server.gateway import sandbox as bubblewrap
from mlstorlets.server.gateway.sandbox import (
    BubblewrapRunTimeSandbox,
    _parse_cpuset,
    sandbox_uid,
)
from mlstorlets.server.gateway.sbus import send_without_following_links
from mlstorlets.server.node import SANDBOX_LIMITS


@pytest.fixture
def sandbox(tmp_path):
    conf = {
        "host_root": str(tmp_path),
        "native_lib_dir": str(tmp_path),
        "sandbox_hostname": "object-server-7",
        "container_mem_limit": str(2**31),
        "container_cpuset_cpus": "0",
        "sandbox_file_size_limit": "1000",
        # The host's real cgroups are the functional tests' (test_budgets).
        "sandbox_cgroups": "off",
    }
    sbox = BubblewrapRunTimeSandbox("AUTH_x", conf, logging.getLogger())
    sbox.paths.create_host_pipe_dir()
    return sbox


def command(sbox):
    return sbox._command("image_AUTH_x", {p: 100 + i for i, p in enumerate(sorted(sbox._data()))})


def test_isolation_flags(sandbox):
    argv = command(sandbox)
    for flag in (
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
    ):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--hostname") + 1] == "object-server-7"
    # The root is a tmpfs made read-only once everything is mounted.
    assert argv[argv.index("--tmpfs") + 1] == "/"
    assert argv[argv.index("--remount-ro") + 1] == "/"
    assert argv.index("--remount-ro") > argv.index("/mnt/channels")
    assert argv[argv.index("--proc") + 1] == "/proc"
    # /tmp: the host's bounded tmpfs of this sandbox's (gateway.mounts).
    assert argv[argv.index("/tmp") - 2 : argv.index("/tmp")] == ["--bind", sandbox.host_tmp_dir]


def test_only_what_storlets_need_is_visible(sandbox):
    argv = command(sandbox)
    sources = [argv[i + 1] for i, a in enumerate(argv) if a in ("--ro-bind", "--bind")]
    writable = [argv[i + 1] for i, a in enumerate(argv) if a == "--bind"]
    assert "/" not in sources and "/root" not in sources
    assert "/var" not in sources and "/srv" not in sources
    # Only the sandbox's own /tmp and pipes (bounded tmpfs) and its own log
    # channel are writable.
    assert writable == [sandbox.host_tmp_dir, sandbox.paths.host_pipe_dir, sandbox.log_channel_path]
    # The storlet code is mounted read-only.
    storlets = argv.index(sandbox.paths.sandbox_storlet_base_dir)
    assert argv[storlets - 2] == "--ro-bind"


def fake_environment(venv):
    """A virtual environment at ``venv`` holding a stand-in (metadata and a
    package) for each distribution storlets import."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    site = runtime_view.layout(venv + "/bin/python3")["site"][0]
    for name in runtime_view.SANDBOX_DISTRIBUTIONS:
        package = name.replace("-", "_")
        info = os.path.join(site, "%s-1.0.dist-info" % package)
        os.makedirs(info)
        os.makedirs(os.path.join(site, package))
        with open(os.path.join(info, "METADATA"), "w") as f:
            f.write("Metadata-Version: 2.1\nName: %s\nVersion: 1.0\n" % name)
        with open(os.path.join(info, "RECORD"), "w") as f:
            f.write("%s/__init__.py,,\n%s-1.0.dist-info/METADATA,,\n" % (package, package))
    return site


def test_an_environment_under_tmp_stays_visible(tmp_path):
    venv = str(tmp_path / "checkout" / ".venv")
    site = fake_environment(venv)
    conf = {
        "host_root": str(tmp_path),
        "native_lib_dir": str(tmp_path),
        "sandbox_python": venv + "/bin/python3",
    }
    sbox = BubblewrapRunTimeSandbox("AUTH_x", conf, logging.getLogger())
    sbox.paths.create_host_pipe_dir()
    argv = command(sbox)
    private_tmp = [i for i, a in enumerate(argv) if a == "--bind" and argv[i + 2] == "/tmp"]
    assert len(private_tmp) == 1
    # Mounted after the private /tmp, so not hidden by it; the environment
    # one entry at a time, never whole.
    assert argv.index(os.path.join(site, "numpy")) > private_tmp[0]
    bound = [argv[i + 1] for i, a in enumerate(argv) if a == "--ro-bind"]
    assert venv not in bound and site not in bound


def test_no_host_file_is_written_for_the_sandbox(sandbox):
    # The interpreter wrapper and passwd reach bwrap as data on pipes.
    argv = command(sandbox)
    data = {argv[i + 2]: argv[i + 1] for i, a in enumerate(argv) if a == "--ro-bind-data"}
    assert "/etc/passwd" in data and "/etc/group" in data
    assert any(p.startswith("/usr/bin/python3") for p in data)
    files = sandbox._data()
    wrapper = [text for path, (mode, text) in files.items() if path.startswith("/usr/bin/python3")][
        0
    ]
    assert wrapper.endswith('exec %s "$@"\n' % sandbox.sandbox_python)
    assert "storlets:x:%d:%d:" % (sandbox.uid, sandbox.uid) in files["/etc/passwd"][1]
    assert os.listdir(sandbox.paths.host_pipe_dir) == []


def test_only_the_loaders_etc_is_visible(sandbox):
    argv = command(sandbox)
    etc = {
        argv[i + 2]
        for i, a in enumerate(argv)
        if a in ("--ro-bind", "--symlink", "--ro-bind-data") and argv[i + 2].startswith("/etc")
    }
    assert etc <= {"/etc/" + n for n in bubblewrap.ETC_ENTRIES + ("passwd", "group")}
    assert "/etc/ld.so.cache" in etc
    assert "/etc" not in [argv[i + 1] for i, a in enumerate(argv) if a in ("--ro-bind", "--bind")]


def test_storlets_run_as_the_sandbox_uid(sandbox):
    argv = command(sandbox)
    setpriv = argv.index(bubblewrap.SETPRIV)
    assert argv[setpriv + 1 : setpriv + 5] == [
        "--reuid",
        str(sandbox.uid),
        "--regid",
        str(sandbox.uid),
    ]
    assert "--no-new-privs" in argv[setpriv:]
    assert argv[argv.index("--", setpriv) + 1] == "/usr/bin/python3"
    # bwrap keeps for setpriv only what changing uid needs.
    added = [argv[i + 1] for i, a in enumerate(argv) if a == "--cap-add"]
    assert sorted(added) == ["CAP_SETGID", "CAP_SETUID"]
    assert sandbox.uid >= bubblewrap.UID_BASE


def test_one_uid_per_server_and_account():
    conf = {}
    uids = {
        sandbox_uid(pipes, scope, conf)
        for pipes in ("/srv/p/1", "/srv/p/2")
        for scope in ("alice", "bob")
    }
    assert len(uids) == 4
    assert sandbox_uid("/srv/p/1", "alice", conf) == sandbox_uid("/srv/p/1", "alice", {})
    assert sandbox_uid("/p", "a", {"sandbox_uid_base": "5000", "sandbox_uid_range": "1"}) == 5000


def test_limits_are_on_by_default(tmp_path):
    conf = {"host_root": str(tmp_path), "native_lib_dir": str(tmp_path)}
    sbox = BubblewrapRunTimeSandbox("AUTH_x", conf, logging.getLogger())
    assert sbox.container_mem_limit == int(SANDBOX_LIMITS["container_mem_limit"])
    assert sbox.container_pids_limit == int(SANDBOX_LIMITS["container_pids_limit"])
    assert sbox.cpu_time_limit == int(SANDBOX_LIMITS["sandbox_cpu_time_limit"])
    assert (sbox.tmp_size, sbox.tmp_inodes) == (
        int(SANDBOX_LIMITS["sandbox_tmp_size"]),
        int(SANDBOX_LIMITS["sandbox_tmp_inodes"]),
    )


def test_channel_directory_belongs_to_the_sandbox_user(sandbox):
    sandbox._prepare_host_dirs()
    st = os.stat(sandbox.paths.host_pipe_dir)
    assert (st.st_uid, st.st_gid) == (sandbox.uid, sandbox.uid)
    assert st.st_mode & 0o777 == 0o700
    assert os.stat(sandbox.state_dir).st_mode & 0o777 == 0o700
    assert (
        not os.path.commonpath([sandbox.state_dir, sandbox.paths.host_pipe_dir])
        == sandbox.paths.host_pipe_dir
    )


@pytest.fixture
def sent(monkeypatch):
    calls = []

    def record(path, datagram):
        calls.append((path, os.readlink(path)))
        return 0

    monkeypatch.setattr(sbus, "_upstream_send", record)
    return calls


# What a send reads of a datagram (its length is checked before anything).
DATAGRAM = types.SimpleNamespace(fds=[], serialized_metadata="", serialized_cmd_params="{}")


def test_sbus_connects_to_the_socket_itself(tmp_path, sent):
    path = str(tmp_path / "storlet")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        assert send_without_following_links(path, DATAGRAM) == 0
    fd_path, target = sent[0]
    assert fd_path.startswith("/proc/self/fd/")
    assert target == path


def test_sbus_refuses_a_planted_link(tmp_path, sent):
    other = str(tmp_path / "other-account-socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(other)
        os.symlink(other, str(tmp_path / "storlet"))
        assert send_without_following_links(str(tmp_path / "storlet"), DATAGRAM) == -1
        (tmp_path / "file").write_text("")
        assert send_without_following_links(str(tmp_path / "file"), DATAGRAM) == -1
        assert (
            send_without_following_links(
                str(tmp_path / "x" / ".." / "other-account-socket"), DATAGRAM
            )
            == -1
        )
    assert sent == []


def test_limits_are_applied_in_the_child(sandbox):
    # Applied as the gateway applies them, between fork and exec; the child
    # answers by its exit status (the storlets engine monkey-patches this
    # process with eventlet, whose pipes do not mix with subprocess's).
    apply = sandbox._limits()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        ok = False
        try:
            apply()
            ok = (
                resource.getrlimit(resource.RLIMIT_AS)[0] == 2**31
                and resource.getrlimit(resource.RLIMIT_FSIZE)[0] == 1000
                and resource.getrlimit(resource.RLIMIT_NPROC)[0] == 256
                and resource.getrlimit(resource.RLIMIT_CPU) == (3600, 3610)
                and os.sched_getaffinity(0) == {0}
            )
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_cpuset_syntax():
    assert _parse_cpuset("0-2,5") == {0, 1, 2, 5}
    assert _parse_cpuset("3") == {3}


def test_the_persistent_agent_is_started_from_the_read_only_engine(sandbox):
    import mlstorlets
    from mlstorlets.server.gateway.sandbox import SANDBOX_ENGINE_DIR

    argv = command(sandbox)
    engine = os.path.dirname(os.path.abspath(mlstorlets.__file__))
    # The agent and the sandbox half of the package, never the client's.
    at = argv.index(os.path.join(engine, "server", "agent"))
    assert argv[at - 1] == "--ro-bind"
    assert argv[at + 1] == SANDBOX_ENGINE_DIR + "/mlstorlets/server/agent"
    assert engine not in argv
    assert os.path.join(engine, "client") not in argv
    # Found on the interpreter's path before anything of the storlets'.
    path = argv[argv.index("PYTHONPATH") + 1]
    assert path.split(":")[0] == SANDBOX_ENGINE_DIR
    tail = argv[len(argv) - argv[::-1].index("/usr/bin/python3") :]
    assert tail[:2] == ["-m", "mlstorlets.server.agent.factory"]
    assert tail[-4:] == ["--workers", "0", "--daemon-idle-time", "300.0"]


def test_workers_and_agent_are_configurable(tmp_path):
    conf = {"host_root": str(tmp_path), "native_lib_dir": str(tmp_path), "storlet_workers": "3"}
    sbox = BubblewrapRunTimeSandbox("AUTH_x", conf, logging.getLogger())
    assert sbox._get_container_command("c")[-4:-2] == ["--workers", "3"]
    conf["storlet_agent"] = "upstream"
    sbox = BubblewrapRunTimeSandbox("AUTH_x", conf, logging.getLogger())
    assert sbox._get_container_command("c")[:2] == ["-m", "storlets.agent.daemon_factory"]
    conf["storlet_agent"] = "fork"
    with pytest.raises(ValueError, match="storlet_agent"):
        BubblewrapRunTimeSandbox("AUTH_x", conf, logging.getLogger())


@pytest.mark.parametrize("value, passed", [("2", "2.0"), ("0.5", "0.5"), ("0", None), ("-1", None)])
def test_a_daemons_idle_time_goes_to_the_factory_and_must_be_positive(tmp_path, value, passed):
    conf = {"host_root": str(tmp_path), "native_lib_dir": str(tmp_path), "daemon_idle_time": value}
    if passed is None:
        with pytest.raises(
            ValueError, match="daemon_idle_time must be .* above 0, not '%s'" % value
        ):
            BubblewrapRunTimeSandbox("AUTH_x", conf, logging.getLogger())
        return
    sbox = BubblewrapRunTimeSandbox("AUTH_x", conf, logging.getLogger())
    assert sbox._get_container_command("c")[-2:] == ["--daemon-idle-time", passed]


def test_the_factory_starts_each_daemon_with_its_idle_time():
    from mlstorlets.server.agent import daemon, factory

    made = factory.PersistentDaemonFactory("/x/factory", logging.getLogger(), "c", 2, 2.5)
    argv, _ = made.get_python_args("python", "/s", "echo.EchoStorlet", 4, "/x/echo", "INFO", "3")
    assert argv[1:3] == ["-m", "mlstorlets.server.agent.daemon"]
    assert argv[-2:] == ["--idle-time", "2.5"]
    # Without one, upstream's.
    made = factory.PersistentDaemonFactory("/x/factory", logging.getLogger(), "c", 2)
    argv, _ = made.get_python_args("python", "/s", "echo.EchoStorlet", 4, "/x/echo", "INFO", "3")
    assert "--idle-time" not in argv
    upstream = daemon.PersistentStorletDaemon(
        "echo.EchoStorlet", "/x/echo", logging.getLogger(), 1, "/s"
    )
    given = daemon.PersistentStorletDaemon(
        "echo.EchoStorlet", "/x/echo", logging.getLogger(), 1, "/s", idle_time=2.5
    )
    assert (upstream.listen_timeout, given.listen_timeout) == (300, 2.5)


def test_a_scopes_paths_are_made_once_for_its_options(tmp_path, monkeypatch):
    from storlets.gateway.gateways.container.runtime import RunTimePaths
    from storlets.sbus import SBus

    from mlstorlets.server.gateway import bubblewrap as gateway

    # What a gateway sets on upstream's SBus class, put back afterwards.
    monkeypatch.setattr(SBus, "send", SBus.__dict__["send"])
    monkeypatch.setattr(SBus, "SBUS_SO_NAME", SBus.SBUS_SO_NAME)
    log = logging.getLogger("test")
    conf = {"host_root": str(tmp_path), "storlet_timeout": "12"}
    first = gateway.BubblewrapStorletGateway(conf, log, "AUTH_a")
    assert gateway.BubblewrapStorletGateway(conf, log, "AUTH_a").paths is first.paths
    # Upstream's paths and the scope's uid, as made on every invocation.
    assert vars(first.paths) == vars(RunTimePaths("AUTH_a", conf))
    assert first.sandbox_gid == bubblewrap.sandbox_uid(
        first.paths.host_pipe_root_dir, "AUTH_a", conf
    )
    assert first.storlet_timeout == 12.0
    assert SBus.SBUS_SO_NAME == os.path.join(bubblewrap.default_native_lib_dir(), "libsbus.so")
    # Other options, another account: paths of their own.
    other = dict(conf, pipes_dir=str(tmp_path / "pipes"))
    assert gateway.BubblewrapStorletGateway(other, log, "AUTH_a").paths.host_pipe_root_dir == (
        str(tmp_path / "pipes")
    )
    second = gateway.BubblewrapStorletGateway(conf, log, "AUTH_b")
    assert second.paths.scope == "AUTH_b" and second.paths is not first.paths


def test_what_is_made_for_options_is_made_once_and_bounded(monkeypatch):
    import collections

    from mlstorlets.server.gateway import bubblewrap as gateway

    made, calls = collections.OrderedDict(), []

    def make():
        calls.append(1)
        return object()

    conf = {}
    first = gateway._made_for(made, ("a",), conf, make)
    assert gateway._made_for(made, ("a",), conf, make) is first and len(calls) == 1
    # Other options, even equal ones: made again.
    assert gateway._made_for(made, ("a",), {}, make) is not first
    # Not kept: made on every call.
    for _ in range(2):
        gateway._made_for(made, ("b",), conf, make, kept=lambda value: False)
    assert len(calls) == 4 and ("b", id(conf)) not in made
    monkeypatch.setattr(gateway, "KEEP_SANDBOXES", 2)
    for name in "cde":
        gateway._made_for(made, (name,), conf, make)
    assert [key[0] for key in made] == ["d", "e"]


class Backend(object):
    """A proxy's backend response, as a storlet's input."""

    closed = False

    def __iter__(self):
        return iter([b"data"])

    def close(self):
        self.closed = True


def test_inputs_are_closed_when_the_sandbox_does_not_start(tmp_path, monkeypatch):
    from storlets.gateway.common.stob import StorletData
    from storlets.sbus import SBus

    from mlstorlets.server.gateway import bubblewrap as gateway
    from mlstorlets.server.gateway.sandbox import SandboxUnavailable

    monkeypatch.setattr(SBus, "send", SBus.__dict__["send"])
    monkeypatch.setattr(SBus, "SBUS_SO_NAME", SBus.SBUS_SO_NAME)
    conf = {"host_root": str(tmp_path)}
    made = gateway.BubblewrapStorletGateway(conf, logging.getLogger("test"), "AUTH_a")

    def fails(sreq, sandbox, deadline):
        raise SandboxUnavailable("no bubblewrap")

    monkeypatch.setattr(made, "_bring_up", fails)
    source, extra = Backend(), Backend()
    r, w = os.pipe()
    try:
        sreq = types.SimpleNamespace(
            data=StorletData({}, data_iter=source),
            extra_data_list=[StorletData({}, data_iter=extra), StorletData({}, data_fd=r)],
        )
        sandbox = types.SimpleNamespace(ready=lambda sreq: False)
        with pytest.raises(SandboxUnavailable):
            made._activated(sreq, sandbox, 0)
        assert source.closed and extra.closed
        # A file is its server's, untouched.
        os.fstat(r)
    finally:
        os.close(r)
        os.close(w)


def test_inputs_are_closed_when_no_daemon_takes_the_command_twice(tmp_path, monkeypatch):
    from storlets.gateway.common.stob import StorletData
    from storlets.sbus import SBus

    from mlstorlets.server.gateway import bubblewrap as gateway
    from mlstorlets.server.gateway.invocation import DaemonGone

    monkeypatch.setattr(SBus, "send", SBus.__dict__["send"])
    monkeypatch.setattr(SBus, "SBUS_SO_NAME", SBus.SBUS_SO_NAME)
    made = gateway.BubblewrapStorletGateway(
        {"host_root": str(tmp_path)}, logging.getLogger("test"), "AUTH_a"
    )
    tries = []

    class Untaken(object):
        task_id = None

        def communicate(self):
            tries.append(1)
            raise DaemonGone("nobody took it")

    sandbox = types.SimpleNamespace(
        oom_kills=lambda: 0,
        over_memory_since=lambda ooms: False,
        forget_daemons=lambda name: None,
    )
    monkeypatch.setattr(made, "_sandbox", lambda: sandbox)
    monkeypatch.setattr(made, "_activated", lambda sreq, sandbox, deadline: Untaken())
    source, extra = Backend(), Backend()
    sreq = types.SimpleNamespace(
        options={"scope": "AUTH_a"},
        storlet_id="s.py",
        storlet_main="s.S",
        data=StorletData({}, data_iter=source),
        extra_data_list=[StorletData({}, data_iter=extra)],
    )
    with pytest.raises(DaemonGone):
        made.invocation_flow(sreq)
    assert len(tries) == 2 and source.closed and extra.closed
