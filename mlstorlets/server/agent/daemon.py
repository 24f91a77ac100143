"""The storlet daemon of the sandbox: a supervisor over persistent workers.

Speaks upstream's SBus protocol with the host on the storlet's socket
(``EXECUTE``, ``CANCEL``, ``PING``, ``HALT``) like
``storlets.agent.daemon``, but instead of forking a child per request it
keeps a pool of :mod:`~mlstorlets.server.agent.worker` processes, which
take the host's ``EXECUTE`` commands themselves from the storlet's door
socket (:func:`mlstorlets.sandbox.protocol.door_path`, bound here, shared
by the workers) and answer the host directly: a request costs no hop
through this process.  An ``EXECUTE`` sent here all the same is passed on
to the door as it came.

* An output that does not fit the host's pipe at once is handed here by
  its worker, and sent on from a thread: it outlives whatever the
  worker's next task does (a cancel, a crash).
* While the first worker is missing or not ready, the daemon passes the
  door's commands on to the others.
* ``CANCEL`` (the host's timeout) kills the worker whose record
  (:mod:`~mlstorlets.server.agent.slots`) says it runs the task, stopped
  first and the record read again, so that it is never the next task's;
  any other task is answered "finished" (nothing is queued here: a task
  the host knows is one a worker took).  A worker that dies for any
  reason is replaced; the kernel closes the host's descriptors it held,
  unwritten or short of the declared length, which the host takes for a
  failure.
* A command's answer is logged at ``DEBUG`` (upstream: ``INFO``, a line
  per request through the sandbox's log channel), a refused one at
  ``INFO``.
* A worker that burns CPU while it has no task (a native thread its
  storlet left, which the worker's own look after each task cannot see)
  is ended and replaced (:meth:`PersistentStorletDaemon.watch_idle_workers`).
* It exits when no worker ran anything for ``idle_time`` (upstream's
  ``listen_timeout`` unless given; the gateway's ``daemon_idle_time``), never
  ending a worker between its accepting a task and the end of its answer
  (:func:`~mlstorlets.server.agent.slots.close_if_idle`): a command it
  drops on the way out is one nobody took, which the host sends again.

Started by :mod:`mlstorlets.server.agent.factory`::

    python -m mlstorlets.server.agent.daemon STORLET SBUS_PATH LOG_LEVEL \\
        WORKERS CONTAINER_ID STORLET_DIR [--idle-time SECONDS]
"""

import argparse
import logging
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

from storlets.agent.common.server import (
    EXIT_FAILURE,
    EXIT_SUCCESS,
    CommandFailure,
    CommandResponse,
    CommandSuccess,
    SBusServer,
    command_handler,
)
from storlets.agent.common.utils import get_logger
from storlets.sbus import SBus

from mlstorlets.sandbox import protocol
from mlstorlets.server.agent import channel, descendants, host_io, slots

# How long the first worker may take to import the storlet before the
# daemon gives up (the factory waits for the daemon's socket meanwhile).
START_TIMEOUT = 60.0
# How long a killed worker is waited for before it is left to be reaped.
KILL_WAIT = 2.0
# A worker that takes no task between two looks at least WATCH_INTERVAL
# seconds apart, yet uses more than IDLE_CPU_SHARE of a core meanwhile, runs
# what its storlet left behind (a thread of native code): it is ended.  A
# numerical library's pool spins for a moment after a task, never that long.
WATCH_INTERVAL = 2.0
IDLE_CPU_SHARE = 0.5


def default_workers():
    """The number of cores this sandbox may use."""
    return len(os.sched_getaffinity(0))


class WorkerProcess(object):
    """The daemon's end of one worker."""

    def __init__(self, proc, sock, index):
        self.proc = proc
        self.sock = sock
        self.index = index
        self.ready = False

    def fileno(self):
        return self.sock.fileno()

    def kill(self):
        try:
            self.proc.kill()
            self.proc.wait(KILL_WAIT)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.sock.close()


class PersistentStorletDaemon(SBusServer):
    """SBus server for one storlet, over a pool of persistent workers.

    Parameters
    ----------
    storlet_name : str
        ``module.Class``.
    sbus_path : str
        The storlet's SBus socket.
    logger : logging.Logger
    workers : int
        Worker processes (0: the cores available to the sandbox).
    storlet_dir : str
        Directory of the storlet and its dependencies.
    log_level, container_id : str
        Passed to the workers for their logs.
    report_fd : int, optional
        Where to tell the factory why the storlet did not load.
    idle_time : float, optional
        Seconds with nothing run before the daemon exits (upstream's
        ``listen_timeout`` if None).
    """

    def __init__(
        self,
        storlet_name,
        sbus_path,
        logger,
        workers,
        storlet_dir,
        log_level="INFO",
        container_id="",
        report_fd=None,
        idle_time=None,
    ):
        super().__init__(sbus_path, logger)
        if idle_time is not None:
            self.listen_timeout = idle_time
        self.report_fd = report_fd
        # What the storlet raised as it was loaded, one line.
        self.load_reason = None
        self.storlet_name = storlet_name
        self.n_workers = workers or default_workers()
        self.storlet_dir = storlet_dir
        self.log_level = log_level
        self.container_id = container_id
        self.workers = []
        # Outputs being sent from here, by task id.
        self.sending = {}
        self.sending_lock = threading.Lock()
        self.load_failed = False
        self.door = None
        self.others = None
        self.slots = None
        self.seen = None
        self.watch_interval = WATCH_INTERVAL
        self.watched_at = time.monotonic()
        self.watched = {}

    # -- workers -----------------------------------------------------------
    def _doors(self, index):
        """``(door, others)`` of worker ``index``: the socket it takes
        commands from, and the other workers' pair (the first worker's
        only, when it has others: :class:`~mlstorlets.server.agent.worker.
        Overflow`)."""
        take, send = self.others
        if index:
            return take, None
        return self.door, (self.others if self.n_workers > 1 else None)

    def _worker_command(self, fd, index):
        door, others = self._doors(index)
        return [
            sys.executable,
            "-m",
            "mlstorlets.server.agent.worker",
            self.storlet_name,
            self.storlet_dir,
            str(fd),
            str(door.fileno()),
            ",".join(str(s.fileno()) for s in others) if others else "-",
            str(self.slots),
            str(index),
            str(os.getpid()),
            self.log_level,
            self.container_id,
        ]

    def _open_door(self):
        """Bind the storlet's door and create the workers' records."""
        path = protocol.door_path(self.sbus_path)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        door = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        door.bind(path)
        # As libsbus makes the storlet's socket: the host sends to it.
        os.chmod(path, 0o777)
        self.door = door
        self.others = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.slots = slots.create(self.n_workers)

    def _close_door(self):
        if self.door is not None:
            try:
                os.unlink(protocol.door_path(self.sbus_path))
            except OSError:
                pass
            self.door.close()
            self.door = None
            for sock in self.others:
                sock.close()

    def _spawn(self, index):
        ours, theirs = channel.pair()
        slots.clear(self.slots, index)
        door, others = self._doors(index)
        try:
            proc = subprocess.Popen(
                self._worker_command(theirs.fileno(), index),
                pass_fds=[theirs.fileno(), door.fileno(), self.slots]
                + [s.fileno() for s in others or ()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError:
            self.logger.exception("Cannot start a worker for %s" % self.storlet_name)
            ours.close()
            return None
        finally:
            theirs.close()
        worker = WorkerProcess(proc, ours, index)
        self.workers.append(worker)
        self.logger.debug("Started worker %d for %s" % (proc.pid, self.storlet_name))
        return worker

    def _drop(self, worker, replace=True):
        """End ``worker`` (its task fails) and start another in its place."""
        if worker in self.workers:
            self.workers.remove(worker)
        worker.kill()
        # What the worker started came back to this daemon as it died.
        killed = descendants.kill_descendants(keep={w.proc.pid for w in self.workers})
        if killed:
            self.logger.info(
                "Killed %d processes left by a worker of %s" % (killed, self.storlet_name)
            )
        # Its descriptors closed as it died: the host saw its task fail.
        if replace and not self.load_failed:
            self._spawn(worker.index)

    def _on_worker_message(self, worker):
        try:
            message, fds = channel.receive(worker.sock)
        except (OSError, channel.ChannelError) as err:
            self.logger.error("Worker %d broke the protocol: %s" % (worker.proc.pid, err))
            return self._drop(worker)
        if message is None:
            self.logger.info("Worker %d of %s exited" % (worker.proc.pid, self.storlet_name))
            return self._drop(worker)
        if "ready" in message and not worker.ready:
            worker.ready = True
        elif "load_error" in message:
            self.logger.error(
                "Storlet %s cannot be loaded: %s" % (self.storlet_name, message["load_error"])
            )
            self.load_failed = True
            self.load_reason = protocol.one_line(str(message.get("reason", "")))
            self._drop(worker, replace=False)
        elif "sending" in message:
            self._send_on(worker, message, fds)
        else:
            self.logger.error("Worker %d sent %s" % (worker.proc.pid, sorted(message)[:4]))
            channel.close_all(fds)

    # -- outputs -----------------------------------------------------------
    def _send_on(self, worker, message, fds):
        """Send the rest of a task's outputs, handed over by its worker:
        ``sent`` of ``sizes`` bytes of each spool, then the host's pipes."""
        task_id = str(message["sending"])[: slots.ID_BYTES]
        sent, sizes = message.get("sent"), message.get("sizes")
        try:
            if not (
                isinstance(sent, list)
                and isinstance(sizes, list)
                and len(sent) == len(sizes)
                and len(fds) == 2 * len(sizes)
                and all(isinstance(n, int) and 0 <= n <= m for n, m in zip(sent, sizes))
            ):
                raise ValueError("not an output's rest: %s" % sorted(message)[:4])
            spools, out_fds = fds[: len(sizes)], fds[len(sizes) :]
            if not all(stat.S_ISREG(os.fstat(fd).st_mode) for fd in spools):
                raise ValueError("the output spool is not a regular file")
        except (ValueError, OSError) as err:
            self.logger.error("Worker %d: %s" % (worker.proc.pid, err))
            return channel.close_all(fds)
        with self.sending_lock:
            self.sending[task_id] = fds
        threading.Thread(
            target=self._send_bodies, daemon=True, args=(task_id, spools, out_fds, sent, sizes)
        ).start()

    def _send_bodies(self, task_id, spools, out_fds, sent, sizes):
        try:
            for out_fd, spool, done, size in zip(out_fds, spools, sent, sizes):
                os.set_blocking(out_fd, True)
                host_io.send(out_fd, spool, done, size)
        except OSError as err:
            # The host stopped reading (it timed out, or its client left);
            # what it got is shorter than declared and is not stored.
            self.logger.info("Task %s: output not sent in full: %s" % (task_id, err))
        finally:
            channel.close_all(spools + out_fds)
            with self.sending_lock:
                self.sending.pop(task_id, None)

    # -- SBus commands -----------------------------------------------------
    def forward(self, dtg):
        """Pass an ``EXECUTE`` on to the door, as it came: a worker answers
        it.  Refused, without blocking, when the door's queue is full."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                host_io.send_command(
                    sock, dtg.raw, dtg.fds, socket.MSG_DONTWAIT, protocol.door_path(self.sbus_path)
                )
        except OSError as err:
            self.logger.info("Could not pass a task on to the workers: %s" % err)
            host_io.reply(dtg.service_out_fd, CommandFailure("No worker takes tasks: %s" % err))
            dtg.sfds = [sfd for sfd in dtg.sfds if sfd.fileno != dtg.service_out_fd]
        channel.close_all(dtg.fds)
        return True

    @command_handler
    def cancel(self, dtg):
        task_id = dtg.task_id
        for worker in list(self.workers):
            if slots.read(self.slots, worker.index) != task_id:
                continue
            # Stopped, then read again: a worker that finished the task
            # since may have taken the next one, which is not killed.
            try:
                worker.proc.send_signal(signal.SIGSTOP)
            except OSError:
                pass
            if slots.read(self.slots, worker.index) != task_id:
                worker.proc.send_signal(signal.SIGCONT)
                break
            self.logger.info("Cancel task %s: kill worker %d" % (task_id, worker.proc.pid))
            self._drop(worker)
            return CommandSuccess("Cancelled task %s" % task_id)
        # The host knows the id from the worker that took the task.
        return CommandSuccess("Task %s has finished" % task_id)

    def dispatch_command(self, dtg):
        if dtg.command == "SBUS_CMD_EXECUTE":
            return self.forward(dtg)
        # Upstream logs every command's answer at INFO: a line per request
        # through the sandbox's log channel into the server's log.  Here
        # only what failed is told there.
        try:
            resp = self.get_handler(dtg.command)(dtg)
        except CommandResponse as answer:
            resp = answer
        except ValueError as err:
            resp = CommandFailure(str(err))
        except Exception:
            self.logger.exception("Failed to handle %s" % dtg.command)
            resp = CommandFailure("Internal error")
        message = resp.report_message
        level = logging.DEBUG if resp.status else logging.INFO
        self.logger.log(level, "Command:%s Response:%s", dtg.command, message)
        with os.fdopen(dtg.service_out_fd, "wb") as answer:
            try:
                answer.write(message.encode("utf-8"))
            except OSError:
                self.logger.exception("Unable to answer %s" % dtg.command)
        return resp.iterable

    @command_handler
    def halt(self, dtg):
        return CommandSuccess("OK", False)

    def _terminate(self):
        # Closed first, and every worker killed before any is waited for:
        # a command still at the door closes unanswered, which its host
        # runs again, rather than taken by a worker about to die.
        self._close_door()
        for worker in self.workers:
            try:
                worker.proc.kill()
            except OSError:
                pass
        for worker in list(self.workers):
            self._drop(worker, replace=False)

    def _force_terminate(self):
        self._terminate()

    # -- main loop ---------------------------------------------------------
    def _busy(self):
        """Whether a worker runs a task, ran one since the last look, or
        an output is being sent from here."""
        seen, self.seen = self.seen, slots.snapshot(self.slots, self.n_workers)
        return seen != self.seen or bool(self.sending) or bool(slots.running(self.seen))

    def _may_exit(self):
        """Whether the workers are idle still, their records locked so
        that none accepts a task any more (see
        :func:`~mlstorlets.server.agent.slots.close_if_idle`); when not,
        nothing is kept locked.  A task may have run whole between the
        last look and the locks: it changed its record, and what it left
        for the daemon to send on waits on its worker's socket."""
        if not slots.close_if_idle(self.slots, self.n_workers):
            return False
        if self._busy() or select.select(self.workers, [], [], 0)[0]:
            slots.open_again(self.slots, self.n_workers)
            return False
        return True

    def watch_idle_workers(self):
        """End the workers that used more than ``IDLE_CPU_SHARE`` of a
        core since the last look without taking a task: their record did
        not change, and reads idle.  A worker is ended with its record
        locked (see :func:`~mlstorlets.server.agent.slots.lock_if_idle`):
        a command it received meanwhile is dropped untaken, which the host
        sends again."""
        now = time.monotonic()
        elapsed = now - self.watched_at
        if elapsed < self.watch_interval:
            return
        self.watched_at = now
        records = slots.snapshot(self.slots, self.n_workers)
        last, self.watched = self.watched, {}
        for worker in list(self.workers):
            if not worker.ready:
                continue
            pid = worker.proc.pid
            cpu = descendants.cpu_seconds(pid)
            if cpu is None:
                continue
            record = slots.record_of(records, worker.index)
            self.watched[pid] = (record, cpu)
            if pid not in last or last[pid][0] != record or slots.running(record):
                continue
            share = (cpu - last[pid][1]) / elapsed
            if share <= IDLE_CPU_SHARE or not slots.lock_if_idle(self.slots, worker.index, record):
                continue
            try:
                self.logger.warning(
                    "Worker %d of %s used %d%% of a core with no task: its storlet left something "
                    "running; ended" % (pid, self.storlet_name, 100 * share)
                )
                self._drop(worker)
            finally:
                slots.open_again(self.slots, 1, worker.index)

    def _report(self, reason):
        """Tell the factory why the storlet could not be loaded (``reason``),
        or nothing: the report pipe is closed either way, once."""
        fd, self.report_fd = self.report_fd, None
        if fd is None:
            return
        try:
            if reason:
                os.write(fd, reason.encode("utf-8", "replace"))
        except OSError:
            pass
        finally:
            os.close(fd)

    def _start_missing(self):
        """Start again the workers that died and could not be replaced."""
        present = {w.index for w in self.workers}
        if not self.load_failed:
            for index in range(self.n_workers):
                if index not in present:
                    self._spawn(index)

    def _first_ready(self):
        """Whether the first worker, which takes from the door, is there
        and ready (else the daemon passes the door's commands on to the
        others)."""
        return any(w.index == 0 and w.ready for w in self.workers)

    def _wait_workers(self, timeout):
        ready, _, _ = select.select(self.workers, [], [], timeout)
        for worker in ready:
            if worker in self.workers:
                self._on_worker_message(worker)

    def start_workers(self):
        """Start the pool; True once the first worker (the one that takes
        from the door) has loaded the storlet."""
        self._open_door()
        for index in range(self.n_workers):
            self._spawn(index)
        deadline = time.monotonic() + START_TIMEOUT
        while not any(w.ready for w in self.workers if w.index == 0):
            if self.load_failed or not self.workers or time.monotonic() > deadline:
                return False
            self._wait_workers(self.loop_timeout)
        return True

    def main_loop(self):
        if not self.start_workers():
            self.logger.error("No worker could load %s" % self.storlet_name)
            self._report(self.load_reason)
            self._terminate()
            return EXIT_FAILURE
        sbus = SBus()
        fd = sbus.create(self.sbus_path)
        if fd < 0:
            self.logger.error("Failed to create SBus. exiting.")
            self._terminate()
            return EXIT_FAILURE
        self._report(None)
        host = socket.socket(fileno=fd)
        signal.signal(signal.SIGHUP, self._graceful_shutdown)
        signal.signal(signal.SIGTERM, self._force_shutdown)
        status = EXIT_SUCCESS
        idle_since = time.monotonic()
        while self.running:
            if self.load_failed and not self.workers:
                status = EXIT_FAILURE
                break
            self._start_missing()
            door = [self.door] if self.n_workers > 1 and not self._first_ready() else []
            readable, _, _ = select.select([fd] + self.workers + door, [], [], self.loop_timeout)
            if door and self.door in readable:
                host_io.pass_on(self.door, self.others[1], self.logger)
            for worker in readable:
                if worker in self.workers:
                    self._on_worker_message(worker)
            if fd in readable:
                try:
                    dtg = host_io.receive(host)
                except OSError as err:
                    self.logger.error("Failed to receive message (%s). exiting" % err)
                    status = EXIT_FAILURE
                    break
                except ValueError as err:
                    # Never from the host's gateway, which checks what it
                    # sends: dropped, the daemon goes on.
                    self.logger.error("Dropped a malformed command: %s" % err)
                    continue
                if not self.dispatch_command(dtg):
                    break
            self.watch_idle_workers()
            if self._busy() or readable:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= self.listen_timeout:
                if self._may_exit():
                    self.logger.info("Idle for %g s: exiting" % self.listen_timeout)
                    break
                idle_since = time.monotonic()
        # Refused from here on: a host that finds the door closed sends its
        # command here, and would wait for an answer while the workers end.
        host.close()
        self._terminate()
        return status


def run_server(role, log_level, container_id, build):
    """Run the SBus server ``build(logger)`` returns; exit with its status.

    As upstream's agents do, logging to the sandbox's syslog socket; a
    line that cannot be sent is lost, never printed to a stream.
    """
    logging.raiseExceptions = False
    logger = get_logger(role, log_level, container_id)
    try:
        SBus.start_logger(log_level.upper(), container_id=container_id)
        code = build(logger).main_loop()
    except Exception:
        logger.exception("Unhandled exception")
        code = EXIT_FAILURE
    sys.exit(code)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Storlet daemon over persistent worker processes")
    parser.add_argument("storlet_name")
    parser.add_argument("sbus_path")
    parser.add_argument("log_level")
    parser.add_argument("workers", type=int)
    parser.add_argument("container_id")
    parser.add_argument("storlet_dir")
    parser.add_argument(
        "--report-fd", type=int, help="a pipe to tell the factory why the storlet did not load"
    )
    parser.add_argument(
        "--idle-time", type=float, help="seconds with nothing run before the daemon exits"
    )
    opts = parser.parse_args(argv)
    descendants.become_subreaper()
    run_server(
        "storlets-daemon",
        opts.log_level,
        opts.container_id,
        lambda logger: PersistentStorletDaemon(
            opts.storlet_name,
            opts.sbus_path,
            logger,
            opts.workers,
            opts.storlet_dir,
            opts.log_level,
            opts.container_id,
            opts.report_fd,
            opts.idle_time,
        ),
    )


if __name__ == "__main__":
    main()
