"""One invocation of a storlet: the execute and cancel commands within
bounds, the output metadata checked before it becomes headers, what the
storlet raised told apart from a broken protocol, a log of its own
(:mod:`mlstorlets.server.gateway.invocation_log`), inputs fed through
bigger pipes (:mod:`mlstorlets.server.gateway.pipes`) until the storlet
stops reading them, and an output that fails, instead of ending, when the
storlet stalls."""

import os
import select

import eventlet
import eventlet.hubs
from eventlet import patcher
from storlets.gateway.common.exceptions import StorletRuntimeException, StorletTimeout
from storlets.gateway.common.stob import FileDescriptorIterator
from storlets.gateway.gateways.container.runtime import (
    MAX_METADATA_SIZE,
    StorletInvocationProtocol,
)
from storlets.sbus.client.exceptions import (
    SBusClientException,
    SBusClientMalformedResponse,
)
from swift.common import constraints
from swift.common.swob import str_to_wsgi, wsgi_to_str
from swift.common.utils import close_if_possible

from mlstorlets.sandbox import protocol
from mlstorlets.server.gateway.invocation_log import LOG_WAIT, DiscardedLog, InvocationLog
from mlstorlets.server.gateway.pipes import PIPE_BYTES, EnlargedPipes
from mlstorlets.server.gateway.sbus import BoundedSBusClient, DatagramTooLong, NotDelivered

# The system calls themselves: eventlet's green ``os.write`` retries a pipe
# whose reader is gone (EPIPE) as if it were only full, and its green
# ``os.read`` goes through the hub before every read of a pipe, even one
# that holds data; its green ``select`` always does.
_write = patcher.original("os").write
_read = patcher.original("os").read
_poll = patcher.original("select").poll


class InputsTooLong(StorletRuntimeException):
    """The request's inputs and parameters do not fit the one datagram that
    hands them to the sandbox: the caller's to split, nothing was sent."""


class UnsafeMetadata(StorletRuntimeException):
    """A storlet's output metadata breaks a rule of the protocol's
    (:func:`mlstorlets.sandbox.protocol.output_metadata_problem`)."""


class StorletFailed(StorletRuntimeException):
    """The storlet raised: the sandbox's agent sent its exception's type and
    message (:data:`mlstorlets.sandbox.protocol.FAILURE_KEY`), made one
    bounded line here again, as :attr:`reason`."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class InputCut(StorletRuntimeException):
    """An input reached the storlet only in part (:attr:`reason` says
    why): whatever it made of it is not the answer."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class OutputEnded(Exception):
    """Thrown into an input's writer when the invocation's output is
    closed: nothing reads that input any more."""


class DaemonGone(StorletRuntimeException):
    """No worker took the command: the storlet's daemon is not running (any
    more), or dropped the command unanswered.  The request's inputs are
    untouched, so it may be run again."""


class StorletOutputIterator(FileDescriptorIterator):
    """A storlet's output that fails, instead of ending, when the storlet
    sends nothing for ``timeout`` seconds or was given only part of an
    input (``cut()`` says why, or None).

    Upstream ends the iteration either way: a truncated object that looks
    whole.  ``on_close`` runs once its pipe is closed.
    """

    def __init__(self, fd, timeout, cancel_func, on_close=None, cut=lambda: None):
        super().__init__(fd, timeout, cancel_func)
        self.on_close = on_close
        self.cut = cut
        os.set_blocking(fd, False)

    def close(self):
        was_open = not self.closed
        try:
            super().close()
        finally:
            if was_open and self.on_close:
                self.on_close()

    def _fail(self, exc, running=True):
        # Cancelling a task that has ended would make the daemon answer
        # "not found", and the gateway take its sandbox for stuck.
        if running and self.cancel_func:
            self.cancel_func()
        self.close()
        raise exc

    def next(self, size=PIPE_BYTES):
        if self.closed:
            # Never read a number that may be another request's by now.
            raise StopIteration
        if len(self.buf) < size:
            chunk = self._more(size - len(self.buf))
            if not chunk and not self.buf:
                raise StopIteration
            self.buf += chunk
        else:
            self._check_cut(running=True)
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def readline(self, size=-1):
        # Upstream's goes through next(), which hands back what it holds at
        # the end of the pipe: a last line without a newline, or one longer
        # than a chunk, looped for ever (and, with reads that no longer
        # wait in the hub, froze the server).
        if self.closed:
            raise ValueError("I/O operation on closed file")
        while b"\n" not in self.buf and (size < 0 or len(self.buf) < size):
            chunk = self._more(PIPE_BYTES if size < 0 else size - len(self.buf))
            if not chunk:
                break
            self.buf += chunk
        end = self.buf.find(b"\n") + 1 or len(self.buf)
        if size >= 0:
            end = min(end, size)
        line, self.buf = self.buf[:end], self.buf[end:]
        return line

    def _more(self, size):
        """:meth:`_read`, failing when an input was cut meanwhile."""
        chunk = self._read(size)
        self._check_cut(running=bool(chunk))
        return chunk

    def _check_cut(self, running):
        cut = self.cut()
        if cut:
            self._fail(InputCut(cut), running=running)

    def _read(self, size):
        """What the pipe holds, up to ``size`` bytes; b"" at its end.

        The read comes first: the agent writes most outputs whole right
        after their metadata, so the pipe is seldom empty by now.  Only an
        empty one is waited for, in the hub, at most the timeout.
        """
        while True:
            try:
                return _read(self.fd, size)
            except BlockingIOError:
                pass
            except OSError:
                self.close()
                raise
            if not select.select([self.fd], [], [], self.timeout)[0]:
                self._fail(StorletTimeout())

    __next__ = next


class BoundedInvocationProtocol(StorletInvocationProtocol):
    """The invocation protocol with a bounded execute and cancel.

    ``recover(cancelled)`` runs after a cancel (``cancelled`` says whether
    the daemon cancelled the task) and when the daemon takes no task in
    time (``False``), in a green thread of its own: the client's answer
    does not wait for it (the proxy gives an object server only 5 s past
    the storlet timeout), the account's next activation does (it takes
    the account's lock first).
    """

    # A task handed over to the door (_send_execute_command): its id, the
    # answer pipe that says whether a worker took it, and the door.
    _handed_over = None
    _answer_fd = None
    _door = None

    def __init__(
        self,
        srequest,
        storlet_pipe_path,
        storlet_logger_path,
        timeout,
        logger,
        cancel_timeout,
        recover,
        datagram_limit=protocol.SBUS_DATAGRAM_LIMIT,
    ):
        # Upstream refuses an extra input given as a file; an object server
        # gives the objects it holds so (mlstorlets.server.middleware.
        # local_resources): the storlet reads them as it reads the
        # request's object, with no pipe and no writer.
        extras, srequest.extra_data_list = srequest.extra_data_list, []
        try:
            super().__init__(srequest, storlet_pipe_path, storlet_logger_path, timeout, logger)
        finally:
            srequest.extra_data_list = extras
        self.extra_data_sources = [
            {
                "read_fd": source.data_fd if source.has_fd else None,
                "write_fd": None,
                "user_metadata": source.user_metadata,
                "data_iter": None if source.has_fd else source.data_iter,
                "file": source.has_fd,
            }
            for source in extras
        ]
        # Not upstream's file shared by every invocation of the storlet.
        if getattr(srequest, "generate_log", False):
            self.storlet_logger = InvocationLog(lifetime=timeout + cancel_timeout + LOG_WAIT)
        else:
            self.storlet_logger = DiscardedLog()
        self.cancel_timeout = cancel_timeout
        self.recover = recover
        self.datagram_limit = datagram_limit
        self.pipes = EnlargedPipes()
        # Input pipes a writer was started for: it closes them, whatever
        # happens; the others are closed here if the invocation fails.
        self._fed = set()
        # Why an input reached the storlet only in part (None: whole).
        self.input_cut = None
        # The green threads writing inputs: ended with the output, however
        # slowly a storlet (or a descriptor it duplicated) goes on reading.
        self._writers = set()

    def _send_execute_command(self):
        # The project's agent has its workers take the command from the
        # storlet's door and answer it themselves: no hop through the
        # daemon.  Upstream's agents have no door.
        fds = self.remote_fds
        door = BoundedSBusClient(
            protocol.door_path(self.storlet_pipe_path), self.timeout, self.datagram_limit
        )
        daemon = BoundedSBusClient(self.storlet_pipe_path, self.timeout, self.datagram_limit)
        client = door
        try:
            try:
                if self._all_inputs_files():
                    # Nothing to feed: the host names the task and waits for
                    # its output only (see _read_metadata).
                    task_id = protocol.new_task_id()
                    self._answer_fd = door.hand_over(self.srequest.params, fds, task_id)
                    self._handed_over, self._door = task_id, door
                    return
                resp = door.execute(self.srequest.params, fds)
            except NotDelivered:
                client = daemon
                resp = daemon.execute(self.srequest.params, fds)
        except DatagramTooLong as err:
            # Never sent: the daemon is fine, the request is too big.
            raise InputsTooLong(str(err))
        except NotDelivered as err:
            # Never received: the daemon is gone, nothing was read.
            raise DaemonGone(str(err))
        except SBusClientMalformedResponse as err:
            # The command was dropped unanswered (its daemon ended): the
            # inputs, fed only once it is answered, are untouched.
            raise DaemonGone("SBus %s: dropped unanswered (%s)" % (client.socket_path, err))
        except SBusClientException as err:
            self.logger.warning(
                "storlet daemon %s took no task: %s" % (self.storlet_pipe_path, err)
            )
            # At the door, every worker was busy all that time: each of
            # their tasks has a timeout of its own.  A daemon that queues
            # answers at once: with no answer in time, it is stuck.
            if client is daemon:
                eventlet.spawn_n(self.recover, False)
            raise StorletTimeout()
        if not resp.status:
            raise StorletRuntimeException("Failed to send execute command")
        if not resp.task_id:
            raise StorletRuntimeException("Missing task id")
        self.task_id = resp.task_id

    def _all_inputs_files(self):
        """Whether the storlet reads every input itself (an object
        server's own objects): a task that nobody took then read nothing,
        and may be sent again."""
        return self.srequest.data.has_fd and all(s["file"] for s in self.extra_data_sources)

    def _taken(self):
        """Whether a worker took the task handed over to the door: its
        answer is read, without waiting, and the answer pipe closed (a
        worker that answers later finds it closed and runs nothing).  Sets
        :attr:`task_id` when taken: the worker's, which is the host's
        unless the worker's agent names its tasks itself (one started by
        an earlier version of the engine)."""
        fd, self._answer_fd = self._answer_fd, None
        if fd is None:
            return self.task_id is not None
        resp = self._door.answer(fd)
        if resp is not None and resp.status is True:
            task_id = resp.task_id
            self.task_id = task_id if isinstance(task_id, str) and task_id else self._handed_over
        return self.task_id is not None

    def _cancel(self, task_id=None):
        """Cancel the task; ``task_id``: one handed over and not seen taken
        (a worker may have taken it between the host's last look and its
        closing the answer pipe), whose daemon is not recovered if it does
        not answer: nothing says the sandbox is stuck."""
        client = BoundedSBusClient(self.storlet_pipe_path, self.cancel_timeout)
        try:
            cancelled = client.cancel(task_id or self.task_id).status
        except SBusClientException:
            cancelled = False
        if task_id:
            return
        if not cancelled:
            self.logger.warning(
                "task %s of %s could not be cancelled" % (self.task_id, self.storlet_pipe_path)
            )
        eventlet.spawn_n(self.recover, cancelled)

    def _give_up(self, later=False):
        """Stop waiting for the task: cancel it if taken, and if it was
        handed over and not seen taken, by the host's id all the same;
        ``later``, from a green thread of its own."""
        handed_over = self._answer_fd is not None
        if self._taken():
            args = ()
        elif handed_over:
            args = (self._handed_over,)
        else:
            return
        if later:
            eventlet.spawn_n(self._cancel, *args)
        else:
            self._cancel(*args)

    @property
    def remote_fds(self):
        # Swift hands the engine metadata as WSGI strings (UTF-8 bytes read
        # as Latin-1); a storlet reads and writes text, whatever the script.
        fds = super().remote_fds
        for fd in fds:
            fd.storage_metadata = {
                wsgi_to_str(k): wsgi_to_str(v) for k, v in fd.storage_metadata.items()
            }
        return fds

    def _wait_for_read_with_timeout(self, fd):
        """Upstream's wait for ``fd`` to be readable, cancelling a task
        that leaves it silent past the timeout, but with no trip through
        the hub for a pipe that holds data already (the output, mostly,
        once its metadata is read), and one listener, not a green select
        inside a timeout, for one that does not."""
        ready = _poll()
        ready.register(fd, select.POLLIN)
        if ready.poll(0):
            return
        try:
            eventlet.hubs.trampoline(
                fd, read=True, timeout=self.timeout, timeout_exc=StorletTimeout
            )
        except StorletTimeout:
            # A task the daemon named: a worker took it.
            if self.task_id:
                self._cancel()
            raise

    def _read_metadata(self):
        # Upstream's reading closes the descriptor and leaves its number
        # set, for the failure path to close again: by then it may be
        # another request's.
        try:
            self._wait_for_read_with_timeout(self.metadata_read_fd)
        except StorletTimeout:
            # Upstream's wait cancels a task it knows the id of; one handed
            # over is not known to be taken yet (every worker may have been
            # busy all that time).
            if self._answer_fd is not None:
                self._give_up()
            raise
        fd, self.metadata_read_fd = self.metadata_read_fd, None
        try:
            # Readable: data, or the end of a pipe its writer closed.
            flat = _read(fd, MAX_METADATA_SIZE)
        finally:
            os.close(fd)
        if self._answer_fd is not None and not self._taken():
            # The command was dropped with its descriptors, unanswered (its
            # daemon ended, or could not pass it on to a worker).  The
            # storlet reads its inputs itself: none was touched.
            raise DaemonGone("SBus %s: the task was dropped untaken" % self._door.socket_path)
        try:
            # The storlet runs in the worker's process: it may write this
            # pipe itself.
            metadata = protocol.storlet_json(flat)
        except ValueError:
            # Nothing at all when its process died: the gateway tells why.
            raise StorletRuntimeException("no output metadata from the storlet")
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise UnsafeMetadata("its output metadata is not text to text")
        failure = [v for k, v in metadata.items() if k.lower() == protocol.FAILURE_KEY.lower()]
        if failure:
            raise StorletFailed(protocol.one_line(failure[0]))
        # The engine's to set, after the storlet answered.
        engine = {key.lower() for key in protocol.LOG_KEYS.values()}
        metadata = {k: v for k, v in metadata.items() if k.lower() not in engine}
        # Before anything becomes a header: a CR/LF would write headers (or
        # a whole response) of the storlet's into another user's answer.
        problem = protocol.output_metadata_problem(
            metadata,
            constraints.MAX_META_NAME_LENGTH,
            constraints.MAX_META_VALUE_LENGTH,
            constraints.MAX_META_COUNT,
            constraints.MAX_META_OVERALL_SIZE,
        )
        if problem:
            raise UnsafeMetadata(problem)
        return {str_to_wsgi(k): str_to_wsgi(v) for k, v in metadata.items()}

    def _prepare_invocation_descriptors(self):
        # Upstream's, but a pipe only for an input that is not a file.
        if not self.srequest.data.has_fd:
            self._input_data_read_fd, self._input_data_write_fd = os.pipe()
        self.data_read_fd, self.data_write_fd = os.pipe()
        self.metadata_read_fd, self.metadata_write_fd = os.pipe()
        for source in self.extra_data_sources:
            if not source["file"]:
                source["read_fd"], source["write_fd"] = os.pipe()
        # The pipes that carry data, in the order they matter: the output,
        # the request's object, then the other inputs as the storlet reads
        # them (an object server hands its own object's file itself).
        self.pipes.enlarge(
            [self.data_read_fd, self._input_data_write_fd]
            + [source["write_fd"] for source in self.extra_data_sources]
        )

    def _close_local_side_descriptors(self):
        super()._close_local_side_descriptors()
        self._close_answer()

    def _close_answer(self):
        fd, self._answer_fd = self._answer_fd, None
        if fd is not None:
            os.close(fd)

    def _close_remote_side_descriptors(self):
        # Upstream's, but a file input is its server's to close.
        fds = [self.data_write_fd, self.metadata_write_fd, self._input_data_read_fd]
        fds += [s["read_fd"] for s in self.extra_data_sources if not s["file"]]
        for fd in fds:
            if fd is not None:
                os.close(fd)

    def _wait_for_write_with_timeout(self, fd):
        if fd is None:
            return  # a file input: nothing to write (see _write_input_data)
        super()._wait_for_write_with_timeout(fd)
        # Upstream starts the input's writer right after this wait.
        self._fed.add(fd)

    def _write_input_data(self, fd, data_iter):
        """Feed one input to the storlet until it ends or the storlet stops
        reading it.

        Upstream's writer retries a pipe whose reader is gone as if it were
        full: a storlet that stops reading (one refusing its first input of
        many, or a hostile one) kept a server's CPU busy until the timeout,
        then forever in the writer's final flush.  Here a gone reader ends
        the input.  An input that could not be given whole (the backend
        failed, the storlet stalled past its time) is recorded, so that
        the output fails instead of ending as if it were complete.
        """
        if fd is None:
            # A file input, which upstream's loop over the inputs starts a
            # writer for as for any other: the storlet reads it itself.
            return
        writer = eventlet.getcurrent()
        self._writers.add(writer)
        try:
            os.set_blocking(fd, False)
            for chunk in data_iter:
                view = memoryview(chunk)
                while view:
                    try:
                        view = view[_write(fd, view) :]
                    except BlockingIOError:
                        eventlet.hubs.trampoline(
                            fd, write=True, timeout=self.timeout, timeout_exc=StorletTimeout
                        )
                    except BrokenPipeError:
                        return  # the storlet read what it wanted of this input
        except OutputEnded:
            pass  # the storlet answered without reading all of this input
        except StorletTimeout:
            self._cut("an input was not read within the storlet timeout")
        except (Exception, eventlet.Timeout) as err:
            # Swift's own timeouts (reading the backend, the client's
            # watchdog) are eventlet Timeouts, not Exceptions.
            self._cut("an input could not be read: %s" % protocol.one_line(str(err), 200))
        finally:
            self._writers.discard(writer)
            try:
                self._safe_close([fd])
            finally:
                close_if_possible(data_iter)

    def _end_writers(self):
        for writer in list(self._writers):
            eventlet.kill(writer, OutputEnded)

    def _cut(self, reason):
        self.logger.warning("storlet %s: %s" % (self.srequest.storlet_id, reason))
        if self.input_cut is None:
            self.input_cut = reason

    def _safe_close(self, fds):
        fds = [fd for fd in fds if fd is not None]
        self.pipes.closed(fds)
        super()._safe_close(fds)

    def _close_unfed_inputs(self, retried):
        """Close the inputs no writer was started for; their requests too,
        unless the invocation is ``retried`` with them."""
        inputs = [(self._input_data_write_fd, self.srequest.data)]
        inputs += [(s["write_fd"], s["data_iter"]) for s in self.extra_data_sources]
        for fd, data in inputs:
            if fd is not None and fd not in self._fed:
                self._safe_close([fd])
                if not retried:
                    close_if_possible(getattr(data, "data_iter", data))

    def communicate(self):
        try:
            sresp = super().communicate()
        except BaseException as err:
            # Upstream closes its own ends only: the inputs it never began
            # to write would stay open, each with a backend request.  A
            # daemon gone before anything was read is sent the same
            # request again (BubblewrapStorletGateway.invocation_flow).
            self._close_unfed_inputs(retried=isinstance(err, DaemonGone))
            if not isinstance(err, Exception):
                # A GreenletExit, a Timeout of Swift's: upstream closes
                # nothing, and a storlet would run on for nobody, its
                # output held in pipes nobody reads.
                self._give_up(later=True)
                self._close_local_side_descriptors()
            raise
        data = sresp.data
        fd = data.data_fd

        def closed():
            self.pipes.closed([fd])
            self._end_writers()

        data._data_iter = StorletOutputIterator(
            fd,
            self.timeout,
            data.cancel,
            on_close=closed,
            cut=lambda: self.input_cut,
        )
        if self.input_cut:
            # Known before any byte of the output: a 502 of the protocol's,
            # not an answer that breaks off.  The agent sends the metadata
            # once the storlet has returned: nothing to cancel.
            data._data_iter.close()
            raise InputCut(self.input_cut)
        return sresp
