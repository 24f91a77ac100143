"""The storlet daemon of the sandbox: a supervisor over persistent workers.

Speaks upstream's SBus protocol with the host on the storlet's socket
(``EXECUTE``, ``CANCEL``, ``PING``, ``HALT``) like
``storlets.agent.daemon``, but instead of forking a child per request it
keeps a pool of :mod:`~mlstorlets.server.agent.worker` processes:

* ``EXECUTE`` answers the task id at once and queues the request; an idle
  worker gets the inputs' and the logger's descriptors.  The output
  descriptors stay here.
* When the worker answers ``done``, the daemon sends the output metadata
  with the exact length of the spool as ``Storlet-Output-Length``, then
  copies the spool to the host: at once what the host's pipe takes (most
  outputs), the rest from a thread (the worker is free for the next
  request meanwhile, however slowly the host reads).  Otherwise it
  closes the outputs unwritten: the host sees a storlet that failed before
  producing output.
* ``CANCEL`` (the host's timeout) kills the task's worker; a worker that
  dies for any reason is replaced.
* A command's answer is logged at ``DEBUG`` (upstream: ``INFO``, a line
  per request through the sandbox's log channel), a refused one at
  ``INFO``.

Started by :mod:`mlstorlets.server.agent.factory`::

    python -m mlstorlets.server.agent.daemon STORLET SBUS_PATH LOG_LEVEL \\
        WORKERS CONTAINER_ID STORLET_DIR
"""

import argparse
import array
import collections
import json
import logging
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import uuid

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
from storlets.sbus.datagram import build_datagram_from_raw_message

from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.protocol import AGENT_DATAGRAM_LIMIT, LENGTH_KEY
from mlstorlets.server.agent import channel, descendants

# How long the first worker may take to import the storlet before the
# daemon gives up (the factory waits for the daemon's socket meanwhile).
START_TIMEOUT = 60.0
# How many task ids sent whole the daemon remembers, for late cancels.
FINISHED_KEPT = 256
# How long a killed worker is waited for before it is left to be reaped.
KILL_WAIT = 2.0
# What the host reads of an output's metadata in one read (upstream's
# MAX_METADATA_SIZE): a failure's metadata must fit whole.
METADATA_LIMIT = 4096


def default_workers():
    """The number of cores this sandbox may use."""
    return len(os.sched_getaffinity(0))


class Task(object):
    """One EXECUTE request: its descriptors until they are handed on."""

    def __init__(self, dtg):
        self.task_id = str(uuid.uuid4())[:8]
        self.params = dtg.params
        self.in_md = dtg.object_in_metadata
        self.storlet_md = dtg.object_in_storlet_metadata
        self.in_fds = dtg.object_in_fds
        self.logger_fd = dtg.logger_out_fd
        self.md_fds = dtg.object_metadata_out_fds
        self.out_fds = dtg.object_out_fds

    @property
    def request(self):
        return {
            "task_id": self.task_id,
            "params": self.params,
            "in_md": self.in_md,
            "storlet_md": self.storlet_md,
            "outputs": len(self.out_fds),
        }

    @property
    def worker_fds(self):
        return self.in_fds + [self.logger_fd]

    def handed_over(self):
        """The worker has its own copies of the input and logger fds."""
        channel.close_all(self.worker_fds)
        self.in_fds, self.logger_fd = [], None

    def fail(self):
        """Close every descriptor unwritten: the host sees a failure."""
        channel.close_all(
            self.md_fds + self.out_fds + self.in_fds + ([self.logger_fd] if self.logger_fd else [])
        )
        self.md_fds = self.out_fds = self.in_fds = []
        self.logger_fd = None


class WorkerProcess(object):
    """The daemon's end of one worker."""

    def __init__(self, proc, sock):
        self.proc = proc
        self.sock = sock
        self.ready = False
        self.task = None

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
    ):
        super().__init__(sbus_path, logger)
        self.storlet_name = storlet_name
        self.n_workers = workers or default_workers()
        self.storlet_dir = storlet_dir
        self.log_level = log_level
        self.container_id = container_id
        self.workers = []
        self.queue = collections.deque()
        # Tasks whose output is being copied to the host, by task id, and
        # the last ones sent whole: a host's late cancel of one of those is
        # answered "finished", not "not found" (which it takes for a
        # stuck sandbox).
        self.sending = {}
        self.sending_lock = threading.Lock()
        self.finished = collections.deque(maxlen=FINISHED_KEPT)
        self.load_failed = False

    # -- workers -----------------------------------------------------------
    def _worker_command(self, fd):
        return [
            sys.executable,
            "-m",
            "mlstorlets.server.agent.worker",
            self.storlet_name,
            self.storlet_dir,
            str(fd),
            self.log_level,
            self.container_id,
        ]

    def _spawn(self):
        ours, theirs = channel.pair()
        try:
            proc = subprocess.Popen(
                self._worker_command(theirs.fileno()),
                pass_fds=[theirs.fileno()],
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
        worker = WorkerProcess(proc, ours)
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
        if worker.task is not None:
            worker.task.fail()
            worker.task = None
        if replace and not self.load_failed:
            self._spawn()

    def _dispatch(self):
        for worker in self.workers:
            if not self.queue:
                return
            if not worker.ready or worker.task is not None:
                continue
            task = self.queue.popleft()
            try:
                channel.send(worker.sock, task.request, task.worker_fds)
            except OSError:
                self.logger.exception("Worker %d is gone" % worker.proc.pid)
                self.queue.appendleft(task)
                self._drop(worker)
                return self._dispatch()
            task.handed_over()
            worker.task = task

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
            self._drop(worker, replace=False)
        elif worker.task is not None:
            task, worker.task = worker.task, None
            # The worker that served last goes first: back-to-back
            # requests find the state it keeps warm.
            self.workers.remove(worker)
            self.workers.insert(0, worker)
            self._answer(task, message, fds)
        else:
            channel.close_all(fds)
        self._dispatch()

    # -- answers -----------------------------------------------------------
    def _answer(self, task, message, fds):
        """Send a finished task's output to the host, or nothing."""
        if message.get("status") != "done":
            reason = protocol.one_line(message.get("reason"))
            self.logger.info("Task %s of %s failed: %s" % (task.task_id, self.storlet_name, reason))
            channel.close_all(fds)
            # The host answers the client with what the storlet raised.
            data = failure_metadata(reason)
            for md_fd in task.md_fds:
                try:
                    os.write(md_fd, data)
                except OSError:
                    pass
            return task.fail()
        try:
            outputs = _checked_outputs(message.get("metadata"), fds, len(task.out_fds))
        except ValueError as err:
            self.logger.error("Task %s of %s: %s" % (task.task_id, self.storlet_name, err))
            channel.close_all(fds)
            return task.fail()
        for md_fd, (metadata, _, _) in zip(task.md_fds, outputs):
            try:
                os.write(md_fd, json.dumps(metadata).encode("utf-8"))
            except OSError:
                channel.close_all(fds)
                return task.fail()
        channel.close_all(task.md_fds)
        task.md_fds = []
        # Most outputs fit the host's empty pipe: written here, they cost
        # no thread.  What would block goes on from a thread.
        try:
            sent = []
            for fd, (_, spool, size) in zip(task.out_fds, outputs):
                os.set_blocking(fd, False)
                sent.append(_send(fd, spool, 0, size))
        except OSError as err:
            return self._sent(task, outputs, err)
        if all(n == size for n, (_, _, size) in zip(sent, outputs)):
            return self._sent(task, outputs)
        with self.sending_lock:
            self.sending[task.task_id] = task
        threading.Thread(target=self._send_bodies, daemon=True, args=(task, outputs, sent)).start()

    def _send_bodies(self, task, outputs, sent):
        err = None
        try:
            for out_fd, (_, spool, size), done in zip(task.out_fds, outputs, sent):
                os.set_blocking(out_fd, True)
                _send(out_fd, spool, done, size)
        except OSError as exc:
            err = exc
        finally:
            with self.sending_lock:
                self.sending.pop(task.task_id, None)
            self._sent(task, outputs, err)

    def _sent(self, task, outputs, err=None):
        if err is not None:
            # The host stopped reading (it timed out, or its client left);
            # what it got is shorter than declared and is not stored.
            self.logger.info("Task %s: output not sent in full: %s" % (task.task_id, err))
        channel.close_all([spool for _, spool, _ in outputs])
        task.fail()
        with self.sending_lock:
            self.finished.append(task.task_id)

    # -- SBus commands -----------------------------------------------------
    @command_handler
    def execute(self, dtg):
        task = Task(dtg)
        self.queue.append(task)
        self._dispatch()
        return CommandSuccess("OK", task_id=task.task_id)

    @command_handler
    def cancel(self, dtg):
        task_id = dtg.task_id
        for task in list(self.queue):
            if task.task_id == task_id:
                self.queue.remove(task)
                task.fail()
                return CommandSuccess("Cancelled task %s" % task_id)
        for worker in list(self.workers):
            if worker.task is not None and worker.task.task_id == task_id:
                self.logger.info("Cancel task %s: kill worker %d" % (task_id, worker.proc.pid))
                self._drop(worker)
                return CommandSuccess("Cancelled task %s" % task_id)
        with self.sending_lock:
            if task_id in self.sending or task_id in self.finished:
                return CommandSuccess("Task %s has finished" % task_id)
        return CommandFailure("Task id %s is not found" % task_id)

    def dispatch_command(self, dtg):
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
        for worker in list(self.workers):
            self._drop(worker, replace=False)
        for task in self.queue:
            task.fail()
        self.queue.clear()

    def _force_terminate(self):
        self._terminate()

    # -- main loop ---------------------------------------------------------
    def _busy(self):
        return bool(self.queue or self.sending or any(w.task for w in self.workers))

    def _wait_workers(self, timeout):
        ready, _, _ = select.select(self.workers, [], [], timeout)
        for worker in ready:
            if worker in self.workers:
                self._on_worker_message(worker)

    def start_workers(self):
        """Start the pool; True once one worker has loaded the storlet."""
        for _ in range(self.n_workers):
            self._spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while not any(w.ready for w in self.workers):
            if self.load_failed or not self.workers or time.monotonic() > deadline:
                return False
            self._wait_workers(self.loop_timeout)
        return True

    def main_loop(self):
        if not self.start_workers():
            self.logger.error("No worker could load %s" % self.storlet_name)
            self._terminate()
            return EXIT_FAILURE
        sbus = SBus()
        fd = sbus.create(self.sbus_path)
        if fd < 0:
            self.logger.error("Failed to create SBus. exiting.")
            self._terminate()
            return EXIT_FAILURE
        host = socket.socket(fileno=fd)
        signal.signal(signal.SIGHUP, self._graceful_shutdown)
        signal.signal(signal.SIGTERM, self._force_shutdown)
        status = EXIT_SUCCESS
        idle_since = time.monotonic()
        while self.running:
            if self.load_failed and not self.workers:
                status = EXIT_FAILURE
                break
            readable, _, _ = select.select([fd] + self.workers, [], [], self.loop_timeout)
            for worker in readable:
                if worker is not fd and worker in self.workers:
                    self._on_worker_message(worker)
            if fd in readable:
                try:
                    dtg = receive(host)
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
            if self._busy() or readable:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= self.listen_timeout:
                self.logger.debug("Idle for %ds. exiting." % self.listen_timeout)
                break
        self._terminate()
        return status


def receive(sock):
    """The next SBus command on ``sock``, in libsbus's format (three native
    ints: descriptors, lengths of the metadata and of the parameters; the
    two JSON strings; the descriptors as ``SCM_RIGHTS``), received into
    :data:`~mlstorlets.sandbox.protocol.AGENT_DATAGRAM_LIMIT` bytes where
    libsbus has 4096.

    Raises
    ------
    ValueError
        A command cut short, or not of that format; its descriptors are
        closed.
    """
    data, ancdata, flags, _ = sock.recvmsg(
        AGENT_DATAGRAM_LIMIT, socket.CMSG_SPACE(channel.MAX_FDS * _INT.itemsize)
    )
    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    fds = list(fds)
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ValueError(
                "a command over %d bytes or with too many descriptors" % AGENT_DATAGRAM_LIMIT
            )
        head = struct.calcsize("iii")
        if len(data) < head:
            raise ValueError("a command of %d bytes" % len(data))
        count, md_length, params_length = struct.unpack_from("iii", data)
        if count != len(fds) or min(md_length, params_length) < 0:
            raise ValueError("%d descriptors announced, %d received" % (count, len(fds)))
        if head + md_length + params_length > len(data):
            raise ValueError("a command cut short")
        metadata = data[head : head + md_length].decode("utf-8") or "[]"
        params = data[head + md_length : head + md_length + params_length].decode("utf-8")
        return build_datagram_from_raw_message(fds, metadata, params)
    except (ValueError, TypeError, KeyError) as err:
        channel.close_all(fds)
        raise ValueError(str(err)) from None


_INT = array.array("i")


def _checked_outputs(metadata, fds, expected):
    """``[(metadata, spool fd, size)]`` of a worker's answer, or ValueError.

    Every output gets ``Storlet-Output-Length``: the spool's size.  A
    storlet that declared another length wrote something else than it
    meant, and its output is not sent.
    """
    if not isinstance(metadata, list) or len(metadata) != expected or len(fds) != expected:
        raise ValueError(
            "answer for %d outputs, %d metadata, %d files"
            % (expected, len(metadata or ()), len(fds))
        )
    outputs = []
    for md, spool in zip(metadata, fds):
        if not isinstance(md, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in md.items()
        ):
            raise ValueError("output metadata must map str to str")
        info = os.fstat(spool)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("the output spool is not a regular file")
        size = info.st_size
        declared = [v for k, v in md.items() if k.lower() == LENGTH_KEY.lower()]
        if declared and declared[0].strip() != str(size):
            raise ValueError(
                "the storlet declared %s bytes and wrote %d" % (declared[0][:40], size)
            )
        md = {k: v for k, v in md.items() if k.lower() != LENGTH_KEY.lower()}
        md[LENGTH_KEY] = str(size)
        outputs.append((md, spool, size))
    return outputs


def _send(out_fd, spool, sent, size):
    """Copy ``spool`` from byte ``sent`` to ``size`` into the pipe
    ``out_fd``, until done or, when it does not block, full; where it got."""
    while sent < size:
        try:
            n = os.sendfile(out_fd, spool, sent, size - sent)
        except BlockingIOError:
            break
        if n == 0:
            raise OSError("the spool shrank")
        sent += n
    return sent


def failure_metadata(reason):
    """The output metadata, as the host reads it, of a storlet that failed
    with ``reason``: JSON of :data:`~mlstorlets.sandbox.protocol.FAILURE_KEY`,
    the reason one line and cut until the whole fits one read of the host
    (:data:`METADATA_LIMIT` bytes)."""
    line = protocol.one_line(reason)
    while True:
        data = json.dumps({protocol.FAILURE_KEY: line}, ensure_ascii=False).encode("utf-8")
        if len(data) <= METADATA_LIMIT:
            return data
        line = protocol.one_line(line, len(line) // 2)


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
        ),
    )


if __name__ == "__main__":
    main()
