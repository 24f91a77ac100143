"""The sandbox agent's pieces without a cluster (mlstorlets.server.agent).

The daemon's scenarios (tests/unit/agent_scenarios.py) run real worker
processes over real storlet modules, in a process without eventlet; the
host's side of the SBus protocol is played with the pipes the host would
pass.
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import time

import agent_scenarios
import pytest
from agent_scenarios import STORLETS, pipe_with

from mlstorlets.server.agent import channel, host_io, slots, worker

LOG = logging.getLogger("test-agent")


@pytest.fixture
def storlet_dir(tmp_path):
    path = tmp_path / "echo.EchoStorlet"
    path.mkdir()
    (path / "echo.py").write_text(STORLETS)
    return str(path)


# -- channel ----------------------------------------------------------------
def test_channel_carries_messages_and_descriptors():
    a, b = channel.pair()
    r, w = os.pipe()
    channel.send(a, {"x": 1}, [w])
    os.close(w)
    message, fds = channel.receive(b)
    assert message == {"x": 1} and len(fds) == 1
    os.write(fds[0], b"through")
    os.close(fds[0])
    assert os.read(r, 10) == b"through"
    a.close()
    assert channel.receive(b) == (None, [])


def test_channel_refuses_what_is_not_a_message():
    a, b = channel.pair()
    r, w = os.pipe()
    socket.send_fds(a, [b"[not an object]"], [w])
    with pytest.raises(channel.ChannelError):
        channel.receive(b)
    os.close(w)
    # The descriptor that came with it was closed: the pipe has no writer.
    assert os.read(r, 1) == b""


# -- worker -------------------------------------------------------------------
def test_spool_keeps_the_output_after_the_storlet_closed_it(tmp_path):
    out = worker.SpoolOutputFile(str(tmp_path))
    with pytest.raises(IOError):
        out.write(b"body before metadata")
    out.set_metadata({"a": 1})
    with pytest.raises(IOError):
        out.set_metadata({"b": 2})
    out.write(b"hello")
    out.close()
    assert out.get_metadata() == {"a": "1"}
    assert os.pread(out.spool_fd, 100, 0) == b"hello"
    # Unlinked: nothing is left in the spool directory.
    assert os.listdir(tmp_path) == []
    out.discard()


def serve_one(storlet_cls, params, data=b"abcdef"):
    w = worker.Worker("echo", storlet_cls, None, LOG, door=None, slot=None)
    log_r, log_w = os.pipe()
    answer = w.run(params, [{}], [{}], [pipe_with(data)], log_w, 1)
    # Every descriptor it was given is closed: the log has no writer left.
    assert os.read(log_r, 65536) is not None and os.read(log_r, 1) == b""
    os.close(log_r)
    return answer


def load(storlet_dir, name):
    sys.path.insert(0, storlet_dir)
    try:
        return worker.load_storlet("echo." + name)
    finally:
        sys.path.remove(storlet_dir)
        sys.modules.pop("echo", None)


def test_worker_answers_done_with_the_spool(storlet_dir):
    metadata, spools, reason = serve_one(load(storlet_dir, "EchoStorlet"), {})
    assert reason is None
    assert metadata[0]["Calls"] == "1"
    assert os.pread(spools[0], 100, 0) == b"abcdef"
    channel.close_all(spools)


@pytest.mark.parametrize(
    "cls, params, reason",
    [
        ("EchoStorlet", {"die": "raise"}, "ValueError"),
        ("SilentStorlet", {}, "no output metadata"),
    ],
)
def test_worker_answers_failed_without_output(storlet_dir, cls, params, reason):
    metadata, spools, why = serve_one(load(storlet_dir, cls), params)
    assert metadata is None and spools == [] and reason in why


# -- what the daemon sends ----------------------------------------------------
def spool(data):
    out = worker.SpoolOutputFile()
    out.set_metadata({})
    out.write(data)
    out.close()
    fd = os.dup(out.spool_fd)
    out.discard()
    return fd


def test_every_output_gets_its_exact_length():
    fd = spool(b"12345")
    [(md, _, size)] = host_io.checked_outputs([{"a": "b"}], [fd], 1)
    assert md == {"a": "b", "Storlet-Output-Length": "5"} and size == 5
    os.close(fd)


def test_a_wrong_declared_length_or_a_pipe_is_refused():
    fd = spool(b"12345")
    with pytest.raises(ValueError, match="declared 9"):
        host_io.checked_outputs([{"storlet-output-length": "9"}], [fd], 1)
    r, w = os.pipe()
    with pytest.raises(ValueError, match="regular file"):
        host_io.checked_outputs([{}], [r], 1)
    with pytest.raises(ValueError):
        host_io.checked_outputs([{}, {}], [fd], 1)
    channel.close_all([fd, r, w])


# -- the workers' records -------------------------------------------------------
def test_a_slot_tells_the_running_task_and_every_change():
    fd = slots.create(2)
    try:
        slot = slots.Slot(fd, 1)
        assert slots.read(fd, 1) == ""
        seen = [slots.snapshot(fd, 2)]
        slot.running("t0")
        assert slots.read(fd, 1) == "t0" and slots.read(fd, 0) == ""
        assert slots.running(slots.snapshot(fd, 2)) == ["t0"]
        seen.append(slots.snapshot(fd, 2))
        slot.done()
        assert slots.read(fd, 1) == "" and slots.running(slots.snapshot(fd, 2)) == []
        seen.append(slots.snapshot(fd, 2))
        # A task taken and ended between two looks still changes the file.
        slot.running("t1")
        slot.done()
        seen.append(slots.snapshot(fd, 2))
        assert len(set(seen)) == len(seen)
        with pytest.raises(ValueError):
            slot.running("longer-than-eight")
        slots.clear(fd, 1)
        assert slots.read(fd, 1) == ""
    finally:
        os.close(fd)


def test_a_daemon_going_idle_locks_every_record_only_when_no_worker_holds_one():
    fd = slots.create(2)
    held, go_on = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:
        # A worker of its own process: record locks are a process's.
        try:
            slots.Slot(fd, 1).hold()
            os.write(held[1], b"x")
            os.read(go_on[0], 1)
        finally:
            os._exit(0)
    try:
        os.read(held[0], 1)
        assert not slots.close_if_idle(fd, 2)
        # Nothing kept: the worker whose record was free takes its next.
        probe = os.fork()
        if probe == 0:
            slots.Slot(fd, 0).hold()
            os._exit(0)
        assert os.waitpid(probe, 0)[1] == 0
        os.write(go_on[1], b"x")
        os.waitpid(pid, 0)
        assert slots.close_if_idle(fd, 2)
        # Kept: a worker that received a command waits, unanswered.
        waiter = os.fork()
        if waiter == 0:
            slots.Slot(fd, 0).hold()
            os._exit(0)
        time.sleep(0.2)
        assert os.waitpid(waiter, os.WNOHANG) == (0, 0)
        os.kill(waiter, signal.SIGKILL)
        os.waitpid(waiter, 0)
    finally:
        channel.close_all([fd, *held, *go_on])


def test_the_door_is_short_whatever_the_storlet_and_no_storlets_socket():
    from mlstorlets.sandbox import protocol

    long_name = "a" * 90 + ".B"
    door = protocol.door_path("/mnt/channels/" + long_name)
    assert door.startswith("/mnt/channels/@") and len(door) < 40
    assert door != protocol.door_path("/mnt/channels/other.Storlet")
    assert protocol.door_path("/x/probe.Probe") == protocol.door_path("/x/probe.Probe")


# -- the daemon over real workers ---------------------------------------------
@pytest.mark.parametrize("name", agent_scenarios.SCENARIOS)
def test_daemon(name):
    done = subprocess.run(
        [sys.executable, agent_scenarios.__file__, name],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]


# -- the host's commands, larger than libsbus takes ---------------------------
def _bound_socket(tmp_path):
    import socket

    path = str(tmp_path / "sbus")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    return path, sock


def test_the_agent_receives_a_command_past_libsbus_buffer(tmp_path):
    import os

    from storlets.sbus.datagram import SBusFileDescriptor, build_datagram
    from storlets.sbus.file_description import SBUS_FD_SERVICE_OUT

    from mlstorlets.sandbox import protocol
    from mlstorlets.server.agent.host_io import receive
    from mlstorlets.server.gateway.sbus import DatagramTooLong, sbus_send

    path, sock = _bound_socket(tmp_path)
    read_fd, write_fd = os.pipe()
    try:
        big = {"payload": "x" * 20000}
        fds = [SBusFileDescriptor(SBUS_FD_SERVICE_OUT, write_fd)]
        datagram = build_datagram("SBUS_CMD_PING", fds, big, None)
        with pytest.raises(DatagramTooLong):
            sbus_send(path, datagram, 1.0)
        sbus_send(path, datagram, 1.0, protocol.AGENT_DATAGRAM_LIMIT)
        got = receive(sock)
        assert (got.command, got.params) == ("SBUS_CMD_PING", big)
        fd = got.service_out_fd
        os.write(fd, b"through")
        os.close(fd)
        assert os.read(read_fd, 100) == b"through"
    finally:
        sock.close()
        os.close(read_fd)
        os.close(write_fd)


def test_the_agent_drops_a_malformed_command_and_closes_its_descriptors(tmp_path):
    import array
    import os
    import socket
    import struct

    from mlstorlets.server.agent.host_io import receive

    path, sock = _bound_socket(tmp_path)
    read_fd, write_fd = os.pipe()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            # Two descriptors announced, one sent.
            message = struct.pack("iii", 2, 2, 2) + b"[]{}\0"
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [write_fd]))]
            sender.sendmsg([message], rights, 0, path)
        os.close(write_fd)
        write_fd = None
        with pytest.raises(ValueError, match="2 descriptors announced, 1 received"):
            receive(sock)
        # The received copy was closed: the pipe has no writer left.
        assert os.read(read_fd, 10) == b""
    finally:
        sock.close()
        os.close(read_fd)
        if write_fd is not None:
            os.close(write_fd)


def _send_raw(path, metadata, params, fds):
    import array
    import socket
    import struct

    metadata, params = metadata.encode(), params.encode()
    message = struct.pack("iii", len(fds), len(metadata), len(params)) + metadata + params + b"\0"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        sender.sendmsg([message], rights, 0, path)


def test_a_command_is_received_as_upstream_builds_it(tmp_path):
    import json

    from storlets.sbus.datagram import build_datagram_from_raw_message

    path, sock = _bound_socket(tmp_path)
    metadata = json.dumps(
        [
            {"storlets": {"type": "SBUS_FD_SERVICE_OUT"}, "storage": {}},
            {
                "storlets": {"type": "SBUS_FD_INPUT_OBJECT", "storlet_name": "p.py"},
                "storage": {"Content-Length": "3", "X-Object-Meta-A": {"nested": ["x"]}},
            },
            {"storlets": {"type": "SBUS_FD_OUTPUT_OBJECT"}, "storage": {}},
            {"storlets": {"type": "SBUS_FD_OUTPUT_OBJECT_METADATA"}, "storage": {}},
            {"storlets": {"type": "SBUS_FD_LOGGER"}, "storage": {}},
        ]
    )
    params = json.dumps({"command": "SBUS_CMD_EXECUTE", "params": {"k": "v"}, "task_id": "ab"})
    r, w = os.pipe()
    try:
        _send_raw(path, metadata, params, [w] * 5)
        got = host_io.receive(sock)
        channel.close_all(got.fds)
        expected = build_datagram_from_raw_message(got.fds, metadata, params)
        assert (got.command, got.params, got.task_id) == ("SBUS_CMD_EXECUTE", {"k": "v"}, "ab")
        assert got.metadata == expected.metadata
        assert got.object_in_storlet_metadata == [{"storlet_name": "p.py"}]
        assert type(got) is type(expected)
    finally:
        sock.close()
        channel.close_all([r, w])


@pytest.mark.parametrize(
    "metadata",
    [
        '[{"storlets": "SBUS_FD_SERVICE_OUT", "storage": {}}]',
        '[{"storlets": ["type"], "storage": {}}]',
        '[{"storlets": {}, "storage": {}}]',
        '[["storlets"]]',
        '[{"storlets": {"type": "SBUS_FD_SERVICE_OUT"}}]',
    ],
)
def test_a_command_whose_descriptors_are_not_described_is_dropped(tmp_path, metadata):
    path, sock = _bound_socket(tmp_path)
    read_fd, write_fd = os.pipe()
    try:
        _send_raw(path, metadata, '{"command": "SBUS_CMD_PING"}', [write_fd])
        os.close(write_fd)
        write_fd = None
        with pytest.raises(ValueError):
            host_io.receive(sock)
        assert os.read(read_fd, 10) == b""
    finally:
        sock.close()
        channel.close_all([read_fd] + ([write_fd] if write_fd is not None else []))


def test_a_spool_without_o_tmpfile_is_unlinked_at_once(tmp_path, monkeypatch):
    import errno

    real_open = os.open

    def no_tmpfile(path, flags, *args):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "not here")
        return real_open(path, flags, *args)

    monkeypatch.setattr(worker.os, "open", no_tmpfile)
    out = worker.SpoolOutputFile(str(tmp_path))
    out.set_metadata({})
    out.write(b"spooled")
    out.close()
    assert os.pread(out.spool_fd, 100, 0) == b"spooled"
    assert os.listdir(tmp_path) == []
    out.discard()


def test_a_worker_dies_with_its_daemon(tmp_path):
    # A "daemon" that starts a worker-like child and exits at once: the
    # child, armed with die_with, must not outlive it.
    child = (
        "import os, sys, time\n"
        "from mlstorlets.server.agent.worker import die_with\n"
        "die_with(int(sys.argv[1]))\n"
        "print('armed', flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = (
        "import os, subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', %r, str(os.getpid())],"
        " stdout=subprocess.PIPE, text=True)\n"
        "assert p.stdout.readline() == 'armed\\n'\n"
        "print(p.pid, flush=True)\n" % child
    )
    done = subprocess.run(
        [sys.executable, "-c", parent], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout)
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, "the worker outlived its daemon"
        time.sleep(0.05)


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


# -- the factory --------------------------------------------------------------
@pytest.mark.parametrize("ends", [True, False])
def test_the_factory_takes_a_daemon_whose_door_closed_for_gone(tmp_path, monkeypatch, ends):
    from mlstorlets.sandbox import protocol
    from mlstorlets.server.agent import factory

    monkeypatch.setattr(factory, "DAEMON_END_WAIT", 2.0)
    made = factory.PersistentDaemonFactory(str(tmp_path / "factory"), LOG, "c")
    # Stand-ins for the daemon: ending within the wait, or running on.
    daemon = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(%g)" % (0.5 if ends else 60)]
    )
    made.storlet_name_to_pid["echo"] = daemon.pid
    made.doors["echo"] = protocol.door_path(str(tmp_path / "sbus-echo"))
    open(made.doors["echo"], "w").close()
    try:
        # Its door open: running (upstream's look).
        assert made.get_process_status_by_name("echo") is True
        os.unlink(made.doors["echo"])
        started = time.monotonic()
        assert made.get_process_status_by_name("echo") is False
        waited = time.monotonic() - started
        assert "echo" not in made.storlet_name_to_pid
        # Gone either way: waited for, or killed once the wait was over.
        with pytest.raises(ProcessLookupError):
            os.kill(daemon.pid, 0)
        assert (waited < 2.0) is ends
    finally:
        if daemon.poll() is None:
            daemon.kill()
    # An upstream daemon has no door: upstream's look alone.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        made.storlet_name_to_pid["java"] = other.pid
        assert made.get_process_status_by_name("java") is True
    finally:
        other.kill()
        other.wait()
