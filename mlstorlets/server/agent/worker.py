"""A worker process of a storlet daemon: the storlet imported once.

Started by :mod:`mlstorlets.server.agent.daemon` with one end of a socket
pair, the socket it takes commands from and the daemon's record file
(:mod:`~mlstorlets.server.agent.slots`).  It imports the storlet's class,
says it is ready, then takes the host's ``EXECUTE`` commands one at a
time, for as long as it lives, and answers the host itself.  The first
worker takes them from the storlet's door, and passes on those that come
while it is busy to the others (:class:`Overflow`):

* it records the task in its slot, then answers the host the task id: the
  host's own when it named the task (a request whose inputs are all files,
  which the host does not wait to see taken), else a new one.  A host
  that stopped waiting gets nothing run;
* the storlet runs over upstream's input files and a :class:`SpoolOutputFile`
  per output, which keeps the metadata in memory and the body in an
  unlinked file of the private ``/tmp`` (on disk, whatever its size);
* only once the storlet returned does the worker write the output
  metadata, with the exact length of the spool as ``Storlet-Output-Length``,
  then the spool: at once what the host's pipe takes (most outputs); the
  rest is handed to the daemon, which sends it from a thread, so the
  worker is free for the next request however slowly the host reads.
  A storlet that raised answers its failure; one that exits or is killed
  leaves the metadata unwritten;
* a storlet that leaves a thread of Python's running past its request
  (one it did not join, a pool it did not shut down), or an interval
  timer armed, ends its worker once the answer is out: they go with it,
  and the daemon starts another worker.  One whose import leaves them
  cannot be loaded.  Threads of native libraries (OpenCV's, a BLAS pool)
  hold no thread state and are left alone; a worker that burns CPU
  between its tasks all the same is the daemon's to end.  The processes
  a storlet starts are killed before the answer
  (:mod:`~mlstorlets.server.agent.descendants`).

It dies with the daemon (``PR_SET_PDEATHSIG``): nobody would cancel its
tasks any more.
"""

import argparse
import ctypes
import errno
import importlib
import json
import logging
import os
import select
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback

from storlets.agent.common.server import CommandFailure
from storlets.agent.common.utils import get_logger
from storlets.agent.daemon.files import (
    StorletFile,
    StorletInputFile,
    StorletLogger,
    StorletRangeInputFile,
)

from mlstorlets.sandbox import protocol
from mlstorlets.server.agent import channel, descendants, host_io, slots

ENGINE_PACKAGE = "mlstorlets"
# Seconds a task runs before the commands that come meanwhile go on to the
# other workers, rather than wait for it.
OVERFLOW_DELAY = 0.002
# prctl(2)'s option: the signal this process gets when its parent ends.
PR_SET_PDEATHSIG = 1


class SpoolOutputFile(StorletFile):
    """A storlet's output file that spools to an unlinked temporary file.

    Same interface as upstream's ``StorletOutputFile``: metadata first, at
    most once, then the body.  Nothing reaches the host from here.
    """

    mode = "wb"

    def __init__(self, directory=None):
        fd = _unnamed_file(directory or tempfile.gettempdir())
        # The storlet may close its file; the spool stays open for the
        # answer.
        self.spool_fd = fd
        super().__init__(os.dup(fd))
        self._metadata = None

    def get_metadata(self):
        if self._metadata is None:
            raise IOError("Metadata is not set yet")
        return dict(self._metadata)

    def set_metadata(self, md):
        if self._metadata is not None:
            raise IOError("Sending metadata twice is not allowed")
        self._metadata = {str(k): str(v) for k, v in dict(md).items()}

    @property
    def metadata_set(self):
        return self._metadata is not None

    def write(self, buf):
        if self._metadata is None:
            raise IOError("Body should be sent after metadata is sent")
        self.obj_file.write(buf)

    def writelines(self, seq):
        if self._metadata is None:
            raise IOError("Body should be sent after metadata is sent")
        self.obj_file.writelines(seq)

    def flush(self):
        self.obj_file.flush()

    def discard(self):
        """Close everything of this file, spool included."""
        channel.close_all([self.release()])

    def release(self):
        """Close the storlet's file; the spool's descriptor, the caller's
        to close."""
        self.close()
        return self.spool_fd


def _unnamed_file(directory):
    """A new file in ``directory`` that no name reaches: ``O_TMPFILE``
    where the file system has it (one call), else a temporary file
    unlinked at once."""
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    fd, path = tempfile.mkstemp(prefix="storlet-output-", dir=directory)
    os.unlink(path)
    return fd


class LineLogger(StorletLogger):
    """Upstream's storlet logger, each message a line of its own.

    Upstream writes messages one after the other with no separator: the
    log of an invocation (:data:`mlstorlets.sandbox.protocol.MAX_LOG`) would
    be one run-on line.
    """

    def _emit_log(self, level, msg):
        msg = str(msg)
        super()._emit_log(level, msg if msg.endswith("\n") else msg + "\n")


def write_traceback(fd, err):
    """Append what ``err`` raised through the storlet to the invocation's
    log ``fd``, from the storlet's first frame (the worker's own are not
    the user's business).  A log nobody reads any more is let go."""
    tb = err.__traceback__.tb_next if err.__traceback__ else None
    text = "".join(traceback.format_exception(type(err), err, tb))
    try:
        with open(fd, "wb", closefd=False) as f:
            f.write(text.encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def input_file(storlet_md, md, fd):
    """Upstream's input file for one input, ranged when asked."""
    storlet_md = storlet_md or {}
    start, end = storlet_md.get("start"), storlet_md.get("end")
    if start is not None and end is not None:
        return StorletRangeInputFile(md, fd, int(start), int(end))
    return StorletInputFile(md, fd)


def _thread_states():
    # A library of the interpreter's own, not ctypes.pythonapi, whose
    # functions' types any module in the process may change.
    api = ctypes.PyDLL(None)
    for name in ("PyInterpreterState_Head", "PyInterpreterState_Next"):
        getattr(api, name).restype = ctypes.c_void_p
    api.PyInterpreterState_Next.argtypes = [ctypes.c_void_p]
    api.PyInterpreterState_ThreadHead.restype = ctypes.c_void_p
    api.PyInterpreterState_ThreadHead.argtypes = [ctypes.c_void_p]
    api.PyThreadState_Next.restype = ctypes.c_void_p
    api.PyThreadState_Next.argtypes = [ctypes.c_void_p]
    return (
        api.PyInterpreterState_Head,
        api.PyInterpreterState_Next,
        api.PyInterpreterState_ThreadHead,
        api.PyThreadState_Next,
    )


_HEAD, _NEXT_INTERPRETER, _THREAD_HEAD, _NEXT_THREAD = _thread_states()


def python_threads():
    """The threads of this process's interpreters, from their lists of
    thread states.

    Every thread that Python started, or that entered Python, is there,
    whether it runs Python code now, a builtin (``sys._current_frames``
    misses those) or waits, whichever module started it
    (``threading.enumerate`` misses ``_thread``'s), in a sub-interpreter
    too.  Called with the GIL, which a thread holds as it leaves a list.
    A thread that never entered Python (a native library's pool, or one
    a storlet started through ``ctypes``) is not there: the daemon ends a
    worker that burns CPU between its tasks
    (:meth:`~mlstorlets.server.agent.daemon.PersistentStorletDaemon.watch_idle_workers`).
    """
    count = 0
    interpreter = _HEAD()
    while interpreter:
        state = _THREAD_HEAD(interpreter)
        while state:
            count += 1
            state = _NEXT_THREAD(state)
        interpreter = _NEXT_INTERPRETER(interpreter)
    return count


# The interval timers a storlet may arm (signal.alarm arms the first).
ITIMERS = (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)


def armed_timers():
    """How many of this process's interval timers are armed: each would
    deliver its signal, and run its handler, after the request."""
    return sum(1 for which in ITIMERS if signal.getitimer(which)[0] > 0)


def left_running(own_threads):
    """What the storlet left running past its request, in words, or None."""
    left = [
        "%d %s%s" % (n, what, "s" if n > 1 else "")
        for n, what in (
            (python_threads() - own_threads, "thread"),
            (armed_timers(), "interval timer"),
        )
        if n > 0
    ]
    return " and ".join(left) or None


def load_storlet(storlet_name):
    """The storlet class named ``module.Class``."""
    try:
        module_name, cls_name = storlet_name.split(".")
    except ValueError:
        raise ValueError("Invalid storlet name %s" % storlet_name)
    return getattr(importlib.import_module(module_name), cls_name)


def forget_engine():
    """Drop the engine's package from this process's imports.

    The storlet imports ``mlstorlets`` from the library zip it was deployed
    with (see :mod:`mlstorlets.client.deploy`), not the engine's copy; the
    worker's own code keeps working from the modules it already holds.
    """
    here = os.path.dirname(os.path.abspath(sys.modules[ENGINE_PACKAGE].__file__))
    root = os.path.dirname(here)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != root]
    for name in list(sys.modules):
        if name == ENGINE_PACKAGE or name.startswith(ENGINE_PACKAGE + "."):
            del sys.modules[name]


class Worker(object):
    """Serve the host's requests for one storlet class.

    Parameters
    ----------
    storlet_name : str
    storlet_cls : type
    sock : socket.socket
        The worker's end of its pair with the daemon.
    logger : logging.Logger
    door : socket.socket
        Where this worker takes commands: the storlet's door for the
        first worker, the others' socket for the others.
    slot : slots.Slot
    overflow : Overflow, optional
        The first worker's, when it has others.
    spool_dir : str, optional
    """

    def __init__(
        self, storlet_name, storlet_cls, sock, logger, door, slot, overflow=None, spool_dir=None
    ):
        self.storlet_name = storlet_name
        self.storlet_cls = storlet_cls
        self.sock = sock
        self.logger = logger
        self.door = door
        self.slot = slot
        self.overflow = overflow
        self.spool_dir = spool_dir
        # This one and the overflow's: the storlet's import left none
        # (see main).
        self.own_threads = python_threads()

    def serve(self):
        channel.send(self.sock, {"ready": os.getpid()})
        doors = [self.door] + ([self.overflow.to_others] if self.overflow else [])
        while True:
            try:
                dtg = self._next(doors)
            except OSError as err:
                self.logger.error("The door is gone: %s" % err)
                return
            except ValueError as err:
                # Never from the host's gateway, which checks what it sends.
                self.logger.error("Dropped a malformed command: %s" % err)
                continue
            if dtg is None:
                continue
            self.slot.hold()
            try:
                # The answer goes out once the first worker is free again:
                # a host that has it sends its next request to a warm
                # worker.
                if self.overflow is None:
                    answer = self.take(dtg)
                else:
                    with self.overflow:
                        answer = self.take(dtg)
                if answer is not None:
                    self.answer(*answer)
            finally:
                self.slot.release()
            left = left_running(self.own_threads)
            if left:
                self.logger.warning(
                    "Storlet %s left %s running after its request: this worker ends"
                    % (self.storlet_name, left)
                )
                return

    def _next(self, doors):
        """The next command from ``doors``; None when another worker took
        it first.  Commands waiting for the other workers go first."""
        if len(doors) == 1:
            return host_io.receive(doors[0])
        readable, _, _ = select.select(doors, [], [])
        door = doors[1] if doors[1] in readable else doors[0]
        try:
            return host_io.receive(door, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None

    def take(self, dtg):
        """Run one command from the door: an ``EXECUTE``, or refused.
        The arguments of :meth:`answer`, or None when there is nothing to
        answer."""
        if dtg.command != "SBUS_CMD_EXECUTE":
            host_io.reply(dtg.service_out_fd, CommandFailure("%s is the daemon's" % dtg.command))
            channel.close_all([fd for fd in dtg.fds if fd != dtg.service_out_fd])
            return None
        # The host names the tasks it does not wait to see taken.
        task_id = dtg.task_id if protocol.is_task_id(dtg.task_id) else protocol.new_task_id()
        md_fds, out_fds = dtg.object_metadata_out_fds, dtg.object_out_fds
        self.slot.running(task_id)
        try:
            if not host_io.reply(dtg.service_out_fd, host_io.accepted(task_id)):
                # The host gave up waiting (every worker was busy).
                channel.close_all(dtg.object_in_fds + [dtg.logger_out_fd] + md_fds + out_fds)
                return None
            metadata, spools, reason = self.run(
                dtg.params or {},
                dtg.object_in_metadata,
                dtg.object_in_storlet_metadata,
                dtg.object_in_fds,
                dtg.logger_out_fd,
                len(out_fds),
            )
        finally:
            self.slot.done()
        return task_id, md_fds, out_fds, metadata, spools, reason

    def run(self, params, in_md, storlet_md, in_fds, logger_fd, n_outputs):
        """Run the storlet: ``(metadata, spool fds, None)``, or ``(None,
        [], reason)`` when it failed.  Every descriptor given is closed."""
        in_files = [input_file(smd, md, fd) for smd, md, fd in zip(storlet_md, in_md, in_fds)]
        outs = [SpoolOutputFile(self.spool_dir) for _ in range(n_outputs)]
        # The storlet may close its logger; the traceback goes to the same
        # log after it.
        log_fd = os.dup(logger_fd)
        try:
            with LineLogger(self.storlet_name, logger_fd) as slogger:
                self.storlet_cls(slogger)(in_files, outs, params)
            for out in outs:
                if not out.closed:
                    out.flush()
        except BaseException as err:
            # SystemExit too: the storlet asked to stop, it did not finish.
            self.logger.info(
                "Storlet %s failed: %s" % (self.storlet_name, traceback.format_exc(limit=5))
            )
            self._end_descendants()
            write_traceback(log_fd, err)
            # Closed before the answer: the host's copy of the log then ends
            # when the answer reaches it.
            channel.close_all([log_fd])
            return self._failed(protocol.one_line("%s: %s" % (type(err).__name__, err)), outs)
        else:
            channel.close_all([log_fd])
            self._end_descendants()
            if not all(o.metadata_set for o in outs):
                return self._failed("the storlet set no output metadata", outs)
            metadata = [o.get_metadata() for o in outs]
            return metadata, [o.release() for o in outs], None
        finally:
            for f in in_files:
                if not f.closed:
                    f.close()

    def answer(self, task_id, md_fds, out_fds, metadata, spools, reason):
        """Write what the storlet made to the host's descriptors, or its
        failure; close them all once done."""
        # A storlet may have let a write to a pipe nobody reads kill the
        # process (and every output still on its way from it).
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        if reason is None:
            try:
                outputs = host_io.checked_outputs(metadata, spools, len(out_fds))
            except ValueError as err:
                self.logger.error("Task %s of %s: %s" % (task_id, self.storlet_name, err))
                return channel.close_all(spools + md_fds + out_fds)
        else:
            self.logger.info("Task %s of %s failed: %s" % (task_id, self.storlet_name, reason))
            data = host_io.failure_metadata(reason)
            for md_fd in md_fds:
                try:
                    os.write(md_fd, data)
                except OSError:
                    pass
            return channel.close_all(md_fds + out_fds)
        try:
            for md_fd, (md, _, _) in zip(md_fds, outputs):
                os.write(md_fd, json.dumps(md).encode("utf-8"))
        except OSError:
            return channel.close_all(spools + md_fds + out_fds)
        channel.close_all(md_fds)
        # Most outputs fit the host's empty pipe: written here, they cost
        # nothing more.  The rest goes on from the daemon, which runs no
        # storlet: it outlives this worker's next task, whatever that does.
        try:
            sent = []
            for fd, (_, spool, size) in zip(out_fds, outputs):
                os.set_blocking(fd, False)
                sent.append(host_io.send(fd, spool, 0, size))
        except OSError as err:
            self.logger.info("Task %s: output not sent in full: %s" % (task_id, err))
            return channel.close_all(spools + out_fds)
        sizes = [size for _, _, size in outputs]
        if sent != sizes:
            try:
                channel.send(
                    self.sock, {"sending": task_id, "sent": sent, "sizes": sizes}, spools + out_fds
                )
            except (OSError, channel.ChannelError) as err:
                self.logger.error("Task %s: output not handed over: %s" % (task_id, err))
        channel.close_all(spools + out_fds)

    def _end_descendants(self):
        killed = descendants.kill_descendants()
        if killed:
            self.logger.info(
                "Storlet %s left %d processes behind: killed" % (self.storlet_name, killed)
            )

    def _failed(self, reason, outs):
        for out in outs:
            out.discard()
        return None, [], reason[:1024]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class OneShotTimer(object):
    """A ``timerfd`` (timerfd_create(2)): armed and disarmed by one thread
    without waking the one that waits on :attr:`fd`, readable once it
    expires.  (``os.timerfd_create`` only comes with Python 3.13.)"""

    CLOCK_MONOTONIC = 1
    TFD_NONBLOCK = os.O_NONBLOCK
    TFD_CLOEXEC = os.O_CLOEXEC

    def __init__(self):
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.timerfd_create(self.CLOCK_MONOTONIC, self.TFD_NONBLOCK | self.TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")
        self.fd = fd

    def arm(self, seconds):
        """Expire once, ``seconds`` from now (0 disarms)."""
        spec = _Itimerspec()
        spec.it_value.tv_sec = int(seconds)
        spec.it_value.tv_nsec = int((seconds - int(seconds)) * 1e9)
        if self._libc.timerfd_settime(self.fd, 0, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime")

    def disarm(self):
        self.arm(0)

    def consume(self):
        """Read the expirations, if any: the descriptor is not readable
        again until the next."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass


class Wakeup(object):
    """A pipe another thread selects on :attr:`fd`: readable once woken,
    until drained.  Neither blocks: wake-ups nobody drained never stop the
    waker."""

    def __init__(self):
        self.fd, self._w = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._w, False)

    def wake(self):
        try:
            os.write(self._w, b"x")
        except BlockingIOError:
            pass

    def drain(self):
        try:
            os.read(self.fd, 4096)
        except BlockingIOError:
            pass


class WakeAtOnce(Wakeup):
    """:class:`OneShotTimer`'s stand-in where ``timerfd`` is refused: every
    arming wakes the waiter at once, whatever the delay."""

    def arm(self, seconds):
        self.wake()

    disarm = consume = Wakeup.drain


class Overflow(object):
    """While the first worker runs a task, the commands that reach its
    door go on to the other workers, from a thread of its own.

    Idle workers waiting on one socket take its commands in turn (the
    kernel wakes the one that waited longest): every worker would load
    what a storlet keeps in memory, and a model would be held as many
    times as there are workers.  Here back-to-back requests find the first
    worker, warm; only concurrent ones reach the others, through a socket
    the first worker also takes from once idle.

    The thread is woken only when it has something to do: commands were
    already waiting when the task began, or the task ran past ``delay``
    seconds (a timer the first worker arms and disarms without waking
    it).  A short task, most requests, costs no thread wake-up; a command
    that comes during one waits for it, at most ``delay``.

    Parameters
    ----------
    door : socket.socket
        The storlet's door.
    to_others, others_send : socket.socket
        The two ends of the other workers' socket pair: the first worker
        takes from ``to_others`` and passes commands on through
        ``others_send``.
    logger : logging.Logger
    delay : float, default=OVERFLOW_DELAY
    """

    def __init__(self, door, to_others, others_send, logger, delay=None):
        self.door = door
        self.to_others = to_others
        self.others_send = others_send
        self.logger = logger
        self.delay = OVERFLOW_DELAY if delay is None else delay
        try:
            self.timer = OneShotTimer()
        except OSError as err:
            logger.warning("No timerfd (%s): every task is watched from its start" % err)
            self.timer = WakeAtOnce()
        # Plain flags: each is written by one thread and read by the
        # other, which the GIL orders.
        self.running = False
        self.watching = False
        # Woken at a watched task's end; a wake-up the thread never read
        # (it saw the task end first) is drained at its next watch.
        self.stop = Wakeup()
        threading.Thread(target=self._run, daemon=True).start()

    def __enter__(self):
        self.running = True
        waiting = select.select([self.door], [], [], 0)[0]
        # 1 ns: at once, without a wake-up of this thread's own.
        self.timer.arm(1e-9 if waiting else self.delay)
        return self

    def __exit__(self, *exc_info):
        self.running = False
        self.timer.disarm()
        if self.watching:
            self.stop.wake()

    def _run(self):
        while True:
            try:
                select.select([self.timer.fd], [], [])
                self.timer.consume()
                self.watching = True
                # Set before this look: a task that ended since, seeing
                # it, wakes the select below.
                while self.running:
                    readable, _, _ = select.select([self.door, self.stop.fd], [], [])
                    if self.stop.fd in readable:
                        self.stop.drain()
                    elif self.running:
                        host_io.pass_on(self.door, self.others_send, self.logger)
                self.watching = False
            except Exception:
                # Never silently: a dead thread would leave the others idle.
                self.logger.exception("Passing commands on to the other workers")
                self.watching = False
                time.sleep(0.1)
                if self.running:
                    # The task's timer is spent: watch the rest of it.
                    self.timer.arm(1e-9)


def die_with(parent):
    """Be killed when the process ``parent`` ends (``PR_SET_PDEATHSIG``);
    exit at once if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:
        os._exit(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description="A worker process of a storlet daemon")
    parser.add_argument("storlet_name")
    parser.add_argument("storlet_dir")
    parser.add_argument("sock_fd", type=int)
    parser.add_argument("door_fd", type=int)
    parser.add_argument("others_fds", help="FROM,TO: the other workers' socket pair, or -")
    parser.add_argument("slots_fd", type=int)
    parser.add_argument("slot", type=int)
    parser.add_argument("daemon_pid", type=int)
    parser.add_argument("log_level")
    parser.add_argument("container_id")
    opts = parser.parse_args(argv)
    logging.raiseExceptions = False
    logger = get_logger("storlets-worker", opts.log_level, opts.container_id)
    die_with(opts.daemon_pid)
    others = [int(fd) for fd in opts.others_fds.split(",")] if opts.others_fds != "-" else []
    # What a storlet starts inherits none of them.
    for fd in [opts.sock_fd, opts.door_fd, opts.slots_fd] + others:
        os.set_inheritable(fd, False)
    sock = socket.socket(fileno=opts.sock_fd)
    door = socket.socket(fileno=opts.door_fd)
    overflow = None
    if others:
        to_others, others_send = (socket.socket(fileno=fd) for fd in others)
        overflow = Overflow(door, to_others, others_send, logger)
    slot = slots.Slot(opts.slots_fd, opts.slot)
    descendants.become_subreaper()
    forget_engine()
    # Where upstream's daemon finds the storlet and its dependencies.
    sys.path.insert(0, opts.storlet_dir)
    own_threads = python_threads()
    try:
        storlet_cls = load_storlet(opts.storlet_name)
        # Nothing a storlet starts outlives a request, and its import is
        # none: what it left would run in every worker, between requests.
        left = left_running(own_threads)
        if left:
            raise RuntimeError("its import left %s running" % left)
    except Exception as err:
        logger.exception("Failed to load storlet %s" % opts.storlet_name)
        channel.send(
            sock,
            {
                "load_error": traceback.format_exc(limit=3)[-1024:],
                "reason": protocol.one_line("%s: %s" % (type(err).__name__, err)),
            },
        )
        os._exit(1)
    Worker(opts.storlet_name, storlet_cls, sock, logger, door, slot, overflow).serve()
    # Without the interpreter's teardown: nothing here needs it, and with
    # the numerical libraries loaded it is the slow part.
    logger.handlers[0].flush()
    os._exit(0)


if __name__ == "__main__":
    main()
