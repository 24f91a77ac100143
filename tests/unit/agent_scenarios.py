"""Scenarios of the sandbox agent's daemon over real worker processes.

Run by tests/unit/test_sandbox_agent.py in a process of their own: the test
process is eventlet-patched (the server code it imports patches it), the
sandbox is not.  ``python agent_scenarios.py NAME`` runs one; it fails with
an AssertionError.
"""

import json
import logging
import os
import select
import sys
import textwrap
import threading
import time
import types

from storlets.sbus import file_description as sbus_fd
from storlets.sbus.client.exceptions import (
    SBusClientException,
    SBusClientIOError,
    SBusClientMalformedResponse,
)
from storlets.sbus.datagram import SBusFileDescriptor

from mlstorlets.sandbox import protocol
from mlstorlets.server.agent import channel, daemon, slots
from mlstorlets.server.gateway.sbus import BoundedSBusClient

LOG = logging.getLogger("agent-scenarios")
STORLETS = textwrap.dedent("""
    import _thread, ctypes, os, signal, sys, threading, time
    CALLS = 0
    SPIN = ctypes.c_int(0)

    class EchoStorlet(object):
        def __init__(self, logger):
            self.logger = logger

        def __call__(self, in_files, out_files, params):
            global CALLS
            CALLS += 1
            time.sleep(float(params.get('sleep', 0)))
            body = b''.join(f.read() for f in in_files)
            out = out_files[0]
            md = {'Pid': str(os.getpid()), 'Calls': str(CALLS),
                  'Engine-Loaded': str('mlstorlets' in sys.modules)}
            if params.get('declare'):
                md['Storlet-Output-Length'] = params['declare']
            out.set_metadata(md)
            out.write(body[:len(body) // 2])
            if params.get('die') == 'exit':
                os._exit(1)
            if params.get('die') == 'raise':
                raise ValueError('asked to')
            out.write(body[len(body) // 2:])
            out.close()
            leave = params.get('leave')
            if leave == 'thread':
                threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
            elif leave == 'raw-thread':
                _thread.start_new_thread(time.sleep, (600,))
            elif leave == 'timer':
                signal.setitimer(signal.ITIMER_REAL, 600)
            elif leave == 'native-spin':
                # A thread of native code only, spinning on a held lock:
                # no thread state of Python's.
                import ctypes
                libc = ctypes.CDLL(None)
                libc.pthread_spin_init(ctypes.byref(SPIN), 0)
                libc.pthread_spin_lock(ctypes.byref(SPIN))
                libc.pthread_create(ctypes.byref(ctypes.c_ulong()), None,
                                    ctypes.cast(libc.pthread_spin_lock, ctypes.c_void_p),
                                    ctypes.byref(SPIN))
            elif leave == 'joined-thread':
                done = threading.Thread(target=time.sleep, args=(0.01,))
                done.start()
                done.join()

    class SilentStorlet(object):
        def __init__(self, logger):
            pass

        def __call__(self, in_files, out_files, params):
            pass
""")


def storlet_dir(tmp):
    path = os.path.join(tmp, "echo.EchoStorlet")
    os.mkdir(path)
    with open(os.path.join(path, "echo.py"), "w") as f:
        f.write(STORLETS)
    return path


def pipe_with(data):
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    return r


class Host(object):
    """The host's end of one EXECUTE: the pipes it passes and reads."""

    def __init__(self, data, params=None):
        self.in_fd = pipe_with(data)
        self.params = dict(params or {})
        self.md_r, self.md_w = os.pipe()
        self.out_r, self.out_w = os.pipe()
        self.log_r, self.log_w = os.pipe()

    def sfds(self):
        return [
            SBusFileDescriptor(
                sbus_fd.SBUS_FD_INPUT_OBJECT, self.in_fd, storage_metadata={"Name": "x"}
            ),
            SBusFileDescriptor(sbus_fd.SBUS_FD_OUTPUT_OBJECT, self.out_w),
            SBusFileDescriptor(sbus_fd.SBUS_FD_OUTPUT_OBJECT_METADATA, self.md_w),
            SBusFileDescriptor(sbus_fd.SBUS_FD_LOGGER, self.log_w),
        ]

    def execute(self, path, timeout=60):
        """Send the command to ``path`` (the door, or the daemon's socket
        for :meth:`daemon.PersistentStorletDaemon.forward`); the answer.
        The sandbox has its copies: the host closes its own, as the
        gateway does."""
        client = BoundedSBusClient(path, timeout, protocol.AGENT_DATAGRAM_LIMIT)
        try:
            return client.execute(self.params, self.sfds())
        finally:
            channel.close_all([self.in_fd, self.md_w, self.out_w, self.log_w])

    def metadata(self):
        data = os.read(self.md_r, 4096)
        return json.loads(data) if data else None

    def body(self):
        chunks = []
        while True:
            chunk = os.read(self.out_r, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def close(self):
        channel.close_all([self.md_r, self.out_r, self.log_r])


def door(sup):
    return protocol.door_path(sup.sbus_path)


def run(sup, host):
    """Submit ``host``'s request at the door and read the answer."""
    answer = host.execute(door(sup))
    assert answer.status, answer.message
    return answer.task_id, host.metadata(), host.body()


# Held by the thread that plays the daemon's main loop (pump) while it
# reads the workers' messages, and by a scenario while it calls the daemon.
LOCK = threading.Lock()


def pump(sup, stop):
    """The daemon's main loop, as far as the workers are concerned: their
    messages read, a dead one replaced, the rest of an output sent."""
    while not stop.is_set():
        with LOCK:
            sup._wait_workers(0.02)
        time.sleep(0.001)


def wait_ready(sup, n):
    deadline = time.monotonic() + 60
    while sum(w.ready for w in list(sup.workers)) < n:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def consecutive_requests_share_one_worker(pool):
    answers = []
    for _ in range(3):
        host = Host(b"data")
        _, md, body = run(pool, host)
        host.close()
        assert body == b"data"
        assert md["Storlet-Output-Length"] == "4"
        answers.append((md["Pid"], int(md["Calls"])))
    assert len({pid for pid, _ in answers}) == 1
    assert [c for _, c in answers] == [answers[0][1] + i for i in range(3)]
    # The storlet did not get the engine's package: it imports its own.
    assert md["Engine-Loaded"] == "False"


def a_storlet_that_dies_sends_no_metadata_and_no_body(pool):
    for die in ("raise", "exit"):
        dies(pool, die)


def dies(pool, die):
    pids = {w.proc.pid for w in pool.workers}
    host = Host(b"x" * 60000, {"die": die})
    _, md, body = run(pool, host)
    host.close()
    if die == "raise":
        # What it raised, for the host to answer with; never an output.
        assert list(md) == [protocol.FAILURE_KEY] and md[protocol.FAILURE_KEY].startswith(
            "ValueError: asked to"
        )
    else:
        assert md is None
        # The daemon replaces the worker that died (as its main loop
        # does, pumped here).
        deadline = time.monotonic() + 60
        while {w.proc.pid for w in list(pool.workers) if w.ready} >= pids:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert body == b""
    wait_ready(pool, 2)
    host = Host(b"next")
    assert run(pool, host)[2] == b"next"
    host.close()


def what_a_storlet_leaves_running_ends_its_worker_after_the_answer(pool):
    wait_ready(pool, 2)
    host = Host(b"data", {"leave": "joined-thread"})
    first = run(pool, host)[1]["Pid"]
    host.close()
    for leave in ("thread", "raw-thread", "timer"):
        host = Host(b"data", {"leave": leave})
        _, md, body = run(pool, host)
        host.close()
        # Answered in full all the same.
        assert body == b"data" and md["Pid"] == first
        deadline = time.monotonic() + 10
        while os.path.exists("/proc/%s" % first) and _state(first) != "Z":
            assert time.monotonic() < deadline, "the worker runs on with its storlet's " + leave
            time.sleep(0.01)
        # Replaced by a worker that imported the storlet afresh.
        wait_ready(pool, 2)
        host = Host(b"next")
        _, md, body = run(pool, host)
        host.close()
        assert body == b"next" and md["Pid"] != first and md["Calls"] == "1"
        first = md["Pid"]


def a_worker_that_burns_cpu_with_no_task_is_ended(pool):
    wait_ready(pool, 2)
    pool.watch_interval = 0.3
    others = {w.proc.pid for w in pool.workers}
    host = Host(b"data", {"leave": "native-spin"})
    _, md, body = run(pool, host)
    host.close()
    spinning = int(md["Pid"])
    assert body == b"data"
    # The worker's own look cannot see a thread that never entered
    # Python: it serves on, spinning, until the daemon looks.
    assert _state(spinning) not in ("Z", "gone")
    deadline = time.monotonic() + 20
    while _state(spinning) not in ("Z", "gone"):
        assert time.monotonic() < deadline, "the daemon left a spinning worker"
        with LOCK:
            pool.watch_idle_workers()
        time.sleep(0.05)
    # The worker that was idle indeed is left alone.
    assert others - {spinning} <= {w.proc.pid for w in pool.workers}
    wait_ready(pool, 2)
    host = Host(b"next")
    assert run(pool, host)[2] == b"next"
    host.close()


def a_storlet_whose_import_leaves_a_thread_cannot_load(tmp):
    with open(os.path.join(tmp, "lingering.py"), "w") as f:
        f.write(
            "import threading, time\n"
            "threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
            "class LingeringStorlet(object):\n"
            "    pass\n"
        )
    report, write = os.pipe()
    sup = daemon.PersistentStorletDaemon(
        "lingering.LingeringStorlet", os.path.join(tmp, "sbus-l"), LOG, 2, tmp, report_fd=write
    )
    assert not sup.start_workers()
    sup._report(sup.load_reason)
    sup._terminate()
    assert os.read(report, 4096) == b"RuntimeError: its import left 1 thread running"
    os.close(report)


def _state(pid):
    try:
        with open("/proc/%s/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def a_thread_the_storlet_joined_keeps_its_worker(pool):
    pids = set()
    for _ in range(3):
        host = Host(b"data", {"leave": "joined-thread"})
        pids.add(run(pool, host)[1]["Pid"])
        host.close()
    assert len(pids) == 1


def a_declared_length_that_is_wrong_sends_nothing(pool):
    host = Host(b"1234", {"declare": "3"})
    _, md, body = run(pool, host)
    host.close()
    assert md is None and body == b""


def cancel_kills_the_worker_and_a_new_one_serves(pool):
    wait_ready(pool, 2)
    pids = {w.proc.pid for w in pool.workers}
    host = Host(b"slow", {"sleep": "30"})
    cancelled = host.execute(door(pool)).task_id
    assert pool._busy()
    time.sleep(0.2)
    with LOCK:
        assert pool.cancel(types.SimpleNamespace(task_id=cancelled)).status
    assert len(pids - {w.proc.pid for w in pool.workers}) == 1
    # The host sees its output closed, unwritten.
    assert host.metadata() is None and host.body() == b""
    host.close()
    wait_ready(pool, 2)
    assert len(pids & {w.proc.pid for w in pool.workers}) == 1
    host = Host(b"after")
    task_id, _, body = run(pool, host)
    assert body == b"after"
    host.close()
    # A late cancel of a task sent whole, or of the killed worker's: finished,
    # not unknown (which the host would take for a stuck sandbox).
    for late in (task_id, cancelled):
        with LOCK:
            answer = pool.cancel(types.SimpleNamespace(task_id=late))
        assert answer.status and "finished" in answer.message
    # Nothing waits in the daemon: a task the host knows of, and that no
    # worker runs, has finished.
    with LOCK:
        assert pool.cancel(types.SimpleNamespace(task_id="nope")).status
    assert {w.proc.pid for w in pool.workers} & pids


def requests_beyond_the_pool_wait_their_turn(pool):
    wait_ready(pool, 2)
    hosts = [Host(b"%d" % i, {"sleep": "0.2"}) for i in range(5)]
    answers = []
    threads = [
        threading.Thread(target=lambda h=h: answers.append(h.execute(door(pool)))) for h in hosts
    ]
    for thread in threads:
        thread.start()
    bodies = []
    for host in hosts:
        host.metadata()
        bodies.append(host.body())
        host.close()
    for thread in threads:
        thread.join()
    assert bodies == [b"%d" % i for i in range(5)]
    assert len({a.task_id for a in answers}) == 5


def a_host_that_stopped_waiting_gets_nothing_run(pool):
    wait_ready(pool, 2)
    busy = [Host(b"", {"sleep": "1"}) for _ in range(2)]
    threads = [threading.Thread(target=h.execute, args=(door(pool),)) for h in busy]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    late = Host(b"late", {"sleep": "0"})
    try:
        late.execute(door(pool), timeout=0.2)
    except SBusClientIOError:
        pass
    else:
        raise AssertionError("a worker answered while both were busy")
    for host in busy:
        assert host.metadata() is not None
        host.body()
        host.close()
    for thread in threads:
        thread.join()
    # Taken once a worker was free, and dropped: nobody waits for it.
    assert late.metadata() is None and late.body() == b""
    late.close()
    host = Host(b"next")
    assert run(pool, host)[2] == b"next"
    host.close()


def ended_unaccepted(pool):
    """A command sent once the daemon locked the records: received by a
    worker that waits for its record, never accepted; the workers ended,
    it was dropped untaken (which the host sends again), not accepted and
    then cut off with its worker."""
    late = Host(b"late")
    outcome = []

    def send():
        try:
            outcome.append(late.execute(door(pool), timeout=30))
        except SBusClientException as err:
            outcome.append(err)

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.3)
    assert not outcome
    with LOCK:
        pool._terminate()
    sender.join()
    assert isinstance(outcome[0], SBusClientMalformedResponse), outcome
    assert late.metadata() is None and late.body() == b""
    late.close()


def an_idle_exit_never_ends_a_task_a_worker_accepted(pool):
    wait_ready(pool, 2)
    host = Host(b"slow", {"sleep": "0.5"})
    host.execute(door(pool))
    # A task runs: the daemon does not go, and keeps no record locked.
    assert not slots.close_if_idle(pool.slots, pool.n_workers)
    assert host.metadata() is not None and host.body() == b"slow"
    host.close()
    # Its worker lets its record go once the answer is out.
    deadline = time.monotonic() + 10
    while not slots.close_if_idle(pool.slots, pool.n_workers):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    ended_unaccepted(pool)


def released(pool):
    """Wait for every worker to let its record go (its answer sent)."""
    deadline = time.monotonic() + 10
    while not slots.close_if_idle(pool.slots, pool.n_workers):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    slots.open_again(pool.slots, pool.n_workers)


def a_task_run_whole_since_the_last_look_keeps_the_daemon(pool):
    wait_ready(pool, 2)
    with LOCK:
        pool._busy()  # the main loop's last look
    host = Host(b"between")
    assert run(pool, host)[2] == b"between"
    host.close()
    released(pool)
    with LOCK:
        assert not pool._may_exit()
    # Nothing kept locked: the next command is taken and answered.
    host = Host(b"after")
    assert run(pool, host)[2] == b"after"
    host.close()
    released(pool)
    with LOCK:
        pool._busy()
        # Nothing since the last look: it may go, no task can begin.
        assert pool._may_exit()
    ended_unaccepted(pool)


def the_daemon_passes_a_command_on_to_the_door(pool, tmp):
    import socket

    path = os.path.join(tmp, "sbus")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        host = Host(b"forwarded")
        reader = threading.Thread(target=lambda: pool.dispatch_command(daemon_receive(sock)))
        reader.start()
        answer = host.execute(path)
        reader.join()
    assert answer.status and answer.task_id
    assert host.metadata()["Storlet-Output-Length"] == "9"
    assert host.body() == b"forwarded"
    host.close()


def daemon_receive(sock):
    from mlstorlets.server.agent import host_io

    return host_io.receive(sock)


def without_the_first_worker_the_daemon_passes_the_door_on(pool):
    from mlstorlets.server.agent import host_io

    wait_ready(pool, 2)
    with LOCK:
        pool.load_failed = True  # not started again, for now
        pool._drop(next(w for w in pool.workers if w.index == 0))
        pool._start_missing()
        assert not pool._first_ready()
    answers = []
    host = Host(b"passed on")
    thread = threading.Thread(target=lambda: answers.append(host.execute(door(pool))))
    thread.start()
    assert select.select([pool.door], [], [], 10)[0]
    host_io.pass_on(pool.door, pool.others[1], LOG)
    thread.join()
    assert answers[0].status
    assert host.metadata()["Storlet-Output-Length"] == "9" and host.body() == b"passed on"
    host.close()
    with LOCK:
        pool.load_failed = False
        pool._start_missing()
        assert not pool._first_ready()  # started again: not ready yet
    wait_ready(pool, 2)
    with LOCK:
        assert pool._first_ready()


def a_late_output_outlives_its_worker(pool):
    # The rest of an output past the host's pipe is sent by the daemon: a
    # cancel of the worker's next task does not cut it.
    wait_ready(pool, 2)
    data = os.urandom(4 * 1024 * 1024)
    big = host_of_file(data)
    answer = big.execute(door(pool))
    assert big.metadata()["Storlet-Output-Length"] == str(len(data))
    deadline = time.monotonic() + 30
    while not pool.sending:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    slow = Host(b"", {"sleep": "30"})
    threading.Thread(target=slow.execute, args=(door(pool),), daemon=True).start()
    while not any(slots_running(pool)):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with LOCK:
        for task_id in slots_running(pool):
            assert pool.cancel(types.SimpleNamespace(task_id=task_id)).status
    assert big.body() == data
    big.close()
    slow.close()
    assert answer.status


def slots_running(pool):
    return slots.running(slots.snapshot(pool.slots, pool.n_workers))


def an_idle_daemon_stays_while_a_worker_holds_its_record(tmp):
    import fcntl

    from storlets.sbus import SBus

    # Where `make setup` builds it for the host (the sandbox has its own).
    SBus.SBUS_SO_NAME = os.path.join(sys.prefix, "lib", "storlets", "libsbus.so")
    sup = daemon.PersistentStorletDaemon(
        "echo.EchoStorlet", os.path.join(tmp, "sbus-echo"), LOG, 2, storlet_dir(tmp)
    )
    sup.listen_timeout = 0.3
    sup.loop_timeout = 0.05
    held_r, held_w = os.pipe()
    go_r, go_w = os.pipe()
    seen = {}

    def hold_a_record():
        # A worker between a command's receipt and its answer, in a
        # process of its own: record locks are a process's.
        while getattr(sup, "slots", None) is None or sup.sbus_path is None:
            time.sleep(0.01)
        pid = os.fork()
        if pid == 0:
            fcntl.lockf(sup.slots, fcntl.LOCK_EX, slots.RECORD, slots.RECORD)
            os.write(held_w, b"x")
            os.read(go_r, 1)
            os._exit(0)
        os.read(held_r, 1)
        time.sleep(1.5)
        seen["ended while held"] = ended.is_set()
        os.write(go_w, b"x")
        os.waitpid(pid, 0)

    ended = threading.Event()
    holder = threading.Thread(target=hold_a_record)
    sup.slots = None
    holder.start()
    assert sup.main_loop() == 0
    ended.set()
    holder.join()
    assert seen == {"ended while held": False}
    # Gone: nothing waits for an answer at its door or at its socket.
    assert not os.path.exists(door(sup))
    started = time.monotonic()
    try:
        BoundedSBusClient(sup.sbus_path, 10).ping()
    except SBusClientException:
        pass
    else:
        raise AssertionError("a daemon that exited answered")
    assert time.monotonic() - started < 5


def a_storlet_that_cannot_load_fails_the_start(tmp):
    with open(os.path.join(tmp, "broken.py"), "w") as f:
        f.write('raise ImportError("no\\r\\nSet-Cookie: x")\n')
    report, write = os.pipe()
    sup = daemon.PersistentStorletDaemon(
        "broken.BrokenStorlet", os.path.join(tmp, "sbus-broken"), LOG, 2, tmp, report_fd=write
    )
    # What main_loop does when no worker loads the storlet.
    assert not sup.start_workers()
    assert sup.load_failed
    sup._report(sup.load_reason)
    sup._terminate()
    # The factory reads why, one line: what the storlet raised.
    assert os.read(report, 4096) == b"ImportError: no\\r\\nSet-Cookie: x"
    assert os.read(report, 4096) == b""
    os.close(report)


def host_of_file(data):
    """A host whose input is a file (as an object server's), of ``data``."""
    import tempfile

    with tempfile.TemporaryFile() as source:
        source.write(data)
        source.flush()
        source.seek(0)
        host = Host(b"")
        os.close(host.in_fd)
        host.in_fd = os.dup(source.fileno())
    return host


def an_output_larger_than_the_hosts_pipe_is_sent_whole(pool):
    data = os.urandom(4 * 1024 * 1024 + 1)
    host = host_of_file(data)
    _, md, body = run(pool, host)
    host.close()
    assert md["Storlet-Output-Length"] == str(len(data))
    assert body == data


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def commands_are_answered_and_only_failures_logged_as_info(pool):
    lines = Lines()
    LOG.addHandler(lines)
    LOG.setLevel(logging.DEBUG)
    answers = []
    for command in ("SBUS_CMD_PING", "SBUS_CMD_NOPE"):
        r, w = os.pipe()
        with LOCK:
            assert pool.dispatch_command(types.SimpleNamespace(command=command, service_out_fd=w))
        answers.append(json.loads(os.read(r, 4096)))
        os.close(r)
    assert [a["status"] for a in answers] == [True, False]
    assert "NOPE" in answers[1]["message"]
    said = [(r.levelno, r.getMessage()) for r in lines.records if "Command:" in r.getMessage()]
    assert [level for level, _ in said] == [logging.DEBUG, logging.INFO], said


def _overflow(delay):
    """An Overflow between socket pairs: (it, the door's sending end, the
    other workers' receiving end)."""
    import socket

    from mlstorlets.server.agent import worker

    door, door_send = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    to_others, others_send = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    return worker.Overflow(door, to_others, others_send, LOG, delay=delay), door_send, to_others


def _arrives(sock, timeout):
    return bool(select.select([sock], [], [], timeout)[0])


def _idle_takes_what_comes(overflow, door, others):
    """Once the thread stopped watching, a command is the first worker's."""
    deadline = time.monotonic() + 10
    while overflow.watching and time.monotonic() < deadline:
        time.sleep(0.01)
    door.send(b"after")
    assert not _arrives(others, 0.2)
    assert overflow.door.recv(100) == b"after"


def overflow_leaves_a_short_tasks_commands_to_the_first_worker(tmp):
    overflow, door, others = _overflow(delay=60)
    for _ in range(3):
        with overflow:
            door.send(b"during")
            assert not _arrives(others, 0.2)
        assert overflow.door.recv(100) == b"during"
    assert not overflow.watching


def overflow_passes_on_what_comes_during_a_long_task(tmp):
    overflow, door, others = _overflow(delay=0.05)
    with overflow:
        door.send(b"first")
        assert _arrives(others, 10) and others.recv(100) == b"first"
        door.send(b"second")
        assert _arrives(others, 10) and others.recv(100) == b"second"
    _idle_takes_what_comes(overflow, door, others)
    # And the next long task is watched again.
    with overflow:
        door.send(b"again")
        assert _arrives(others, 10) and others.recv(100) == b"again"


def overflow_without_a_timerfd_watches_every_task_from_its_start(tmp):
    from mlstorlets.server.agent import worker

    def refused():
        raise PermissionError(1, "timerfd_create")

    worker.OneShotTimer = refused
    overflow, door, others = _overflow(delay=60)
    assert isinstance(overflow.timer, worker.WakeAtOnce)
    with overflow:
        door.send(b"during")
        assert _arrives(others, 10) and others.recv(100) == b"during"
    _idle_takes_what_comes(overflow, door, others)


def overflow_goes_on_watching_a_long_task_after_an_error(tmp):
    from mlstorlets.server.agent import host_io

    overflow, door, others = _overflow(delay=0.05)
    pass_on, failed = host_io.pass_on, []

    def fails_once(*args):
        if not failed:
            failed.append(1)
            raise OSError("once")
        return pass_on(*args)

    host_io.pass_on = fails_once
    with overflow:
        door.send(b"first")
        assert _arrives(others, 10) and others.recv(100) == b"first"
    assert failed


def overflow_passes_on_commands_waiting_when_a_task_begins(tmp):
    overflow, door, others = _overflow(delay=60)
    door.send(b"waiting")
    with overflow:
        assert _arrives(others, 10) and others.recv(100) == b"waiting"


WITH_POOL = (
    "consecutive_requests_share_one_worker",
    "without_the_first_worker_the_daemon_passes_the_door_on",
    "a_late_output_outlives_its_worker",
    "a_host_that_stopped_waiting_gets_nothing_run",
    "the_daemon_passes_a_command_on_to_the_door",
    "an_output_larger_than_the_hosts_pipe_is_sent_whole",
    "commands_are_answered_and_only_failures_logged_as_info",
    "a_storlet_that_dies_sends_no_metadata_and_no_body",
    "a_declared_length_that_is_wrong_sends_nothing",
    "what_a_storlet_leaves_running_ends_its_worker_after_the_answer",
    "a_worker_that_burns_cpu_with_no_task_is_ended",
    "a_thread_the_storlet_joined_keeps_its_worker",
    "cancel_kills_the_worker_and_a_new_one_serves",
    "requests_beyond_the_pool_wait_their_turn",
    "an_idle_exit_never_ends_a_task_a_worker_accepted",
    "a_task_run_whole_since_the_last_look_keeps_the_daemon",
)
SCENARIOS = WITH_POOL + (
    "an_idle_daemon_stays_while_a_worker_holds_its_record",
    "a_storlet_that_cannot_load_fails_the_start",
    "a_storlet_whose_import_leaves_a_thread_cannot_load",
    "overflow_leaves_a_short_tasks_commands_to_the_first_worker",
    "overflow_passes_on_what_comes_during_a_long_task",
    "overflow_passes_on_commands_waiting_when_a_task_begins",
    "overflow_without_a_timerfd_watches_every_task_from_its_start",
    "overflow_goes_on_watching_a_long_task_after_an_error",
)


def main(name):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if name not in WITH_POOL:
            return globals()[name](tmp)
        sup = daemon.PersistentStorletDaemon(
            "echo.EchoStorlet", os.path.join(tmp, "sbus-echo"), LOG, 2, storlet_dir(tmp)
        )
        assert sup.start_workers()
        stop = threading.Event()
        pumping = threading.Thread(target=pump, args=(sup, stop), daemon=True)
        pumping.start()
        try:
            if name == "the_daemon_passes_a_command_on_to_the_door":
                globals()[name](sup, tmp)
            else:
                globals()[name](sup)
        finally:
            stop.set()
            pumping.join()
            sup._terminate()


if __name__ == "__main__":
    main(sys.argv[1])
