"""The host's end of the door (mlstorlets.sandbox.protocol.door_path): an
``EXECUTE`` goes to the storlet's door when its workers listen there, to
the daemon's socket otherwise (upstream's agents have no door), and a
door that closes unanswered, or stays silent, is told apart from a stuck
daemon (no cluster: a forked process plays the sandbox)."""

import json
import logging
import os
import select
import socket

import eventlet
import pytest
from eventlet import patcher
from storlets.gateway.common.exceptions import StorletRuntimeException, StorletTimeout
from storlets.gateway.common.stob import StorletData
from storlets.gateway.gateways.container.gateway import ContainerStorletRequest

from mlstorlets.sandbox import protocol
from mlstorlets.server.agent import channel, host_io
from mlstorlets.server.gateway.invocation import BoundedInvocationProtocol, DaemonGone

_write = patcher.original("os").write


def bound(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    return sock


def sandbox(socks, answer, hold=0.0):
    """Fork a process that takes one command from ``socks`` (name ->
    socket) and answers the task id ``answer(name)`` (None: closes it
    unanswered), after ``hold`` seconds."""
    pid = os.fork()
    if pid:
        for sock in socks.values():
            sock.close()
        return pid
    try:
        readable, _, _ = select.select(list(socks.values()), [], [], 10)
        name = next(n for n, s in socks.items() if s in readable)
        dtg = host_io.receive(socks[name])
        # Not eventlet's: nothing of the parent's hub runs in this process.
        patcher.original("time").sleep(hold)
        task_id = answer(name)
        if task_id is not None:
            # Not eventlet's write, which retries a pipe whose reader left.
            try:
                _write(dtg.service_out_fd, host_io.accepted(task_id).report_message.encode())
            except OSError:
                pass
        channel.close_all(dtg.fds)
    finally:
        os._exit(0)


def invocation(sbus_path, recovered, timeout=5):
    options = {"storlet_main": "s.Storlet", "storlet_language": "python", "file_manager": object()}
    request = ContainerStorletRequest(
        "s-1.0.py", {}, StorletData({}, data_iter=iter([])), options=options
    )
    proto = BoundedInvocationProtocol(
        request, str(sbus_path), None, timeout, logging.getLogger("t"), 1, recovered.append
    )
    return proto


@pytest.fixture
def paths(tmp_path):
    sbus = tmp_path / "s.Storlet"
    return sbus, protocol.door_path(str(sbus))


def run(proto, pid):
    try:
        # What communicate() starts with.
        proto._invoke()
    finally:
        proto._close_local_side_descriptors()
        os.waitpid(pid, 0)


def test_execute_goes_to_the_door_when_workers_listen_there(paths):
    sbus, door = paths
    recovered = []
    proto = invocation(sbus, recovered)
    pid = sandbox({"door": bound(door), "daemon": bound(sbus)}, lambda name: name)
    run(proto, pid)
    assert proto.task_id == "door"


@pytest.mark.parametrize("stale_door", [False, True])
def test_without_a_door_execute_goes_to_the_daemon(paths, stale_door):
    sbus, door = paths
    if stale_door:
        # A door nobody listens on any more (its daemon died).
        bound(door).close()
    proto = invocation(sbus, [])
    pid = sandbox({"daemon": bound(sbus)}, lambda name: name)
    run(proto, pid)
    assert proto.task_id == "daemon"


def test_a_door_closed_unanswered_is_a_daemon_gone(paths):
    sbus, door = paths
    proto = invocation(sbus, [])
    pid = sandbox({"door": bound(door)}, lambda name: None)
    with pytest.raises(DaemonGone) as err:
        run(proto, pid)
    # What the gateway logs as it starts the daemon again names SBus.
    assert str(err.value).startswith("SBus %s: " % door)


@pytest.mark.parametrize("listener, recovered", [("door", []), ("daemon", [False])])
def test_a_silent_door_times_out_and_only_a_silent_daemon_is_recovered(paths, listener, recovered):
    # At the door, every worker was busy all that time: their own tasks
    # time out.  A daemon queues and answers at once: silent, it is stuck.
    sbus, door = paths
    seen = []
    proto = invocation(sbus, seen, timeout=0.5)
    sock = bound(door if listener == "door" else sbus)
    pid = sandbox({listener: sock}, lambda name: "late", hold=1.5)
    with pytest.raises(StorletTimeout):
        run(proto, pid)
    # The recovery runs in a green thread of its own.
    eventlet.sleep(0.1)
    assert seen == recovered


def test_the_workers_answer_passes_as_a_task_id(paths):
    # host_io.accepted is upstream's CommandSuccess: what the gateway parses.
    sbus, door = paths
    proto = invocation(sbus, [])
    pid = sandbox({"door": bound(door)}, lambda name: "t1234567")
    run(proto, pid)
    assert proto.task_id == "t1234567"


# A request whose inputs are all files (an object server's own objects) is
# handed over: the host names the task and waits for its output only, and
# reads the worker's answer once that comes, or fails.


def worker(sock, ack=True, metadata=None, hold=0.0, linger=0.0, task_id=None):
    """Fork a worker that takes one command from ``sock``, answers it
    (``ack``, with ``task_id`` or the host's) after ``hold`` seconds, then
    writes ``metadata(dtg)`` (None: nothing) to the output's metadata, and
    closes all after ``linger`` seconds.  Exits 3 if its answer found the
    host gone."""
    pid = os.fork()
    if pid:
        sock.close()
        return pid
    status = 0
    try:
        select.select([sock], [], [], 10)
        dtg = host_io.receive(sock)
        patcher.original("time").sleep(hold)
        if ack:
            try:
                answer = host_io.accepted(task_id or dtg.task_id).report_message
                _write(dtg.service_out_fd, answer.encode())
            except OSError:
                status = 3
        if metadata is not None and not status:
            _write(dtg.object_metadata_out_fds[0], json.dumps(metadata(dtg)).encode())
        patcher.original("time").sleep(linger)
        channel.close_all(dtg.fds)
    finally:
        os._exit(status)


@pytest.fixture
def on_files(paths, tmp_path):
    """An invocation of the object in a file, and the door's socket."""
    sbus, door = paths
    data = tmp_path / "object"
    data.write_bytes(b"x" * 10)
    fd = os.open(str(data), os.O_RDONLY)
    recovered = []

    def make(timeout=5):
        options = {"storlet_main": "s.Storlet", "storlet_language": "python", "file_manager": 0}
        request = ContainerStorletRequest(
            "s-1.0.py", {}, StorletData({}, data_fd=fd), options=options
        )
        return BoundedInvocationProtocol(
            request, str(sbus), None, timeout, logging.getLogger("t"), 1, recovered.append
        )

    yield make, bound(door), recovered
    os.close(fd)


def handed_over(proto, pid):
    """What the host reads of the task, and the worker's exit status."""
    try:
        proto._invoke()
        # Sent, not waited for.
        assert proto.task_id is None and protocol.is_task_id(proto._handed_over)
        return proto._read_metadata()
    finally:
        proto._close_local_side_descriptors()
        _, status = os.waitpid(pid, 0)
        proto.worker_status = os.waitstatus_to_exitcode(status)


def test_a_task_on_files_is_handed_over_with_the_hosts_id(on_files):
    make, door, _ = on_files
    proto = make()
    pid = worker(door, metadata=lambda dtg: {"Task": dtg.task_id})
    metadata = handed_over(proto, pid)
    assert metadata == {"Task": proto._handed_over}
    assert proto.task_id == proto._handed_over


def test_a_task_dropped_untaken_is_a_daemon_gone(on_files):
    make, door, _ = on_files
    proto = make()
    with pytest.raises(DaemonGone) as err:
        handed_over(proto, worker(door, ack=False))
    assert proto.task_id is None
    assert str(err.value).startswith("SBus %s: " % protocol.door_path(proto.storlet_pipe_path))


def test_a_task_taken_and_never_answered_is_the_storlets_failure(on_files):
    make, door, _ = on_files
    proto = make()
    with pytest.raises(StorletRuntimeException) as err:
        handed_over(proto, worker(door))
    assert not isinstance(err.value, DaemonGone)
    assert proto.task_id == proto._handed_over


def cancels(daemon):
    """The task ids of the CANCEL commands that reached ``daemon``."""
    ids = []
    while True:
        try:
            dtg = host_io.receive(daemon, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return ids
        channel.close_all(dtg.fds)
        if dtg.command == "SBUS_CMD_CANCEL":
            ids.append(dtg.task_id)


@pytest.mark.parametrize("ack, recovered, status", [(False, [], 3), (True, [False], 0)])
def test_a_task_past_its_timeout_is_cancelled_by_the_hosts_id(
    on_files, paths, ack, recovered, status
):
    # Not seen taken: the answer pipe is closed, so a worker that takes the
    # task later finds the host gone and runs nothing; and one that took it
    # between the host's last look and the closing is cancelled all the
    # same.  Only a task known taken whose cancel goes unanswered (no
    # daemon answers here) has its sandbox recovered.
    make, door, seen = on_files
    daemon = bound(paths[0])
    proto = make(timeout=0.5)
    pid = worker(door, hold=0.0 if ack else 1.5, linger=1.5 if ack else 0.0)
    with pytest.raises(StorletTimeout):
        handed_over(proto, pid)
    eventlet.sleep(0.1)
    assert seen == recovered
    assert proto.worker_status == status
    assert cancels(daemon) == [proto._handed_over]


def test_a_worker_naming_its_own_task_is_taken(on_files):
    # A worker of an engine started before the host names tasks.
    make, door, _ = on_files
    proto = make()
    pid = worker(door, metadata=lambda dtg: {"a": "b"}, task_id="0123abcd")
    assert handed_over(proto, pid) == {"a": "b"}
    assert proto.task_id == "0123abcd"


def test_a_host_gone_while_waiting_has_nothing_run(on_files):
    # Swift ends a request's green thread (the client left, a timeout of
    # its own): the task handed over is not run by a worker taking it later.
    make, door, _ = on_files
    proto = make()
    pid = worker(door, hold=0.5)
    waiting = eventlet.spawn(proto.communicate)
    eventlet.sleep(0.1)
    waiting.kill()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3
    assert proto._answer_fd is None


def pipe_of(fd):
    """The pipe ``fd`` is an end of, or None when ``fd`` is closed."""
    try:
        info = os.fstat(fd)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def test_a_host_gone_after_the_task_was_taken_cancels_it_and_closes_all(on_files, paths):
    make, door, _ = on_files
    daemon = bound(paths[0])
    proto = make()
    pid = worker(door, linger=1.0)
    waiting = eventlet.spawn(proto.communicate)
    eventlet.sleep(0.3)
    host_ends = {fd: pipe_of(fd) for fd in (proto.data_read_fd, proto.metadata_read_fd)}
    waiting.kill()
    # The cancel runs in a green thread of its own.
    eventlet.sleep(0.2)
    assert cancels(daemon) == [proto._handed_over]
    # Closed: the number is free, or taken since by another pipe (the
    # cancel's own answer pipe, while it waits).
    for fd, pipe in host_ends.items():
        assert pipe_of(fd) != pipe
    os.waitpid(pid, 0)
