"""The log of one storlet invocation, stored for the user who asked for it.

Upstream hands every invocation of a storlet the same host file
(``<log_dir>/<scope>/<storlet>/storlet_invoke.log``), opened for appending:
the lines of all invocations, and of all users the storlet is shared with,
run together in a file that grows without bound (up to the sandbox's file
size limit, past which every storlet that logs fails), and that no user
can read.  With ``X-Storlet-Generate-Log: True`` it then uploads that whole
file, under the same name each time, and the upload fails (upstream's file
manager leaves out the object's name).

Here each invocation gets a log of its own:

* without ``X-Storlet-Generate-Log: True`` the storlet's logger writes to
  ``/dev/null`` (:class:`DiscardedLog`): nothing is kept on the host;
* with it, the logger is a pipe the server reads from a green thread
  (:class:`InvocationLog`), keeping the first and the last bytes of what
  the storlet and the sandbox's agent (the traceback of what the storlet
  raised) wrote, at most :data:`~mlstorlets.sandbox.protocol.MAX_LOG` in
  all, and saying inside what was left out.  Once the storlet answered, the
  gateway stores it (:func:`store`) as one object of the request's account's
  log container, named after the storlet, the time and the transaction
  (:func:`object_name`), through upstream's file manager (the account and
  the ``storlet_logcontainer`` of the storlet middleware).  A missing
  container or a failed write does not fail the request: the answer says
  why in :data:`~mlstorlets.sandbox.protocol.LOG_ERROR_HEADER`.
"""

import io
import os
import time
import uuid

import eventlet
from eventlet.event import Event
from eventlet.hubs import trampoline
from swift.common.internal_client import UnexpectedResponse

from mlstorlets.sandbox import protocol

# How long the log is waited for once the storlet answered: the project's
# agent closes it before answering; upstream's daemon lets its child write
# on while the output streams.
LOG_WAIT = 1.0
# What the log keeps of its end (the traceback comes last), and the room
# left for the object's header lines and the note of a cut.
TAIL = 64 * 1024
HEAD_ROOM = 8192
READ_SIZE = 65536


class TimedOut(Exception):
    pass


class DiscardedLog(object):
    """The storlet's logger when no log was asked for: ``/dev/null``.

    Same interface as upstream's ``StorletLogger`` (the invocation
    protocol opens it around the execute command and sends its
    descriptor).
    """

    wanted = False
    # One descriptor of /dev/null for every invocation of this process: the
    # sandbox gets its own copy with each command.
    _devnull = None

    def __init__(self):
        self._fd = None

    def open(self):
        if DiscardedLog._devnull is None:
            DiscardedLog._devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        self._fd = DiscardedLog._devnull

    def getfd(self):
        return self._fd

    def close(self):
        self._fd = None

    def activate(self):
        return _Activated(self)


class _Activated(object):
    """Open a log for the execute command only: the sandbox holds its own
    copy of the descriptor once the command is sent."""

    def __init__(self, log):
        self.log = log

    def __enter__(self):
        self.log.open()

    def __exit__(self, *exc_info):
        self.log.close()


class InvocationLog(DiscardedLog):
    """The storlet's logger as a pipe, read into a bounded buffer.

    Parameters
    ----------
    limit : int
        Bytes kept: the first ``limit - TAIL - HEAD_ROOM`` and the last
        :data:`TAIL`.
    lifetime : float
        Seconds the reader lives at most: a storlet that keeps the
        descriptor (a process it left behind) cannot keep it forever.
    """

    wanted = True

    def __init__(self, limit=protocol.MAX_LOG, lifetime=60.0):
        super().__init__()
        self.head_limit = max(limit - TAIL - HEAD_ROOM, 0)
        self.tail_limit = min(TAIL, limit)
        self.lifetime = lifetime
        self.head = bytearray()
        self.tail = bytearray()
        self.left_out = 0
        self.opened = False
        self.ended = Event()

    def open(self):
        read_fd, self._fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(read_fd, False)
        self.opened = True
        eventlet.spawn_n(self._read, read_fd, time.monotonic() + self.lifetime)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _read(self, fd, deadline):
        try:
            while True:
                try:
                    chunk = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    try:
                        trampoline(fd, read=True, timeout=left, timeout_exc=TimedOut)
                    except TimedOut:
                        return
                    continue
                if not chunk:
                    return
                self.keep(chunk)
        except OSError:
            return
        finally:
            # The storlet's writes past this fail (EPIPE) instead of
            # blocking.
            os.close(fd)
            self.ended.send()

    def keep(self, chunk):
        """Add ``chunk`` to the head until it is full, then to the tail."""
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        over = len(self.tail) - self.tail_limit
        if over > 0:
            del self.tail[:over]
            self.left_out += over

    def collect(self, wait=LOG_WAIT):
        """What was read, once the log ended or after ``wait`` seconds:
        ``(bytes, ended)``."""
        if self.opened and not self.ended.ready():
            self.ended.wait(wait)
        text = bytes(self.head)
        if self.left_out:
            text += b"\n[mlstorlets: %d bytes of the log left out here: " % self.left_out
            text += b"a log object holds at most %d]\n" % protocol.MAX_LOG
        return text + bytes(self.tail), self.ended.ready()


def object_name(storlet_id, txn_id=None, now=None):
    """The name of an invocation's log object: the storlet's, then the
    time (UTC, to the microsecond) and the transaction, so that the logs of
    one storlet list together and in order."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + ".%06dZ" % (now % 1 * 1e6)
    return "%s/%s-%s.log" % (storlet_id, stamp, txn_id or "tx" + uuid.uuid4().hex)


def log_body(storlet_id, txn_id, outcome, text, ended):
    """The log object's body: who ran, how it ended, then the log.

    ``outcome`` is the engine's word (``done``, or the kind and reason of a
    failure), made one line; the log is the storlet's bytes as written.
    """
    lines = [
        "storlet: %s" % protocol.one_line(storlet_id),
        "transaction: %s" % protocol.one_line(txn_id or "-"),
        "outcome: %s" % protocol.one_line(outcome),
    ]
    if not ended:
        lines.append(
            "note: the storlet still held its log when it was stored: "
            "what it wrote later is not here"
        )
    head = ("\n".join(lines) + "\n--- log ---\n").encode("utf-8")
    return head + text[: protocol.MAX_LOG - len(head)]


def store(sreq, log, outcome, txn_id=None, logger=None):
    """Store the invocation's ``log`` in the account's log container.

    Parameters
    ----------
    sreq : storlets request
        Its ``file_manager`` (upstream's ``SwiftFileManager``) names the
        account and the log container.
    log : InvocationLog
    outcome : str
        How the invocation ended, for the object's header.

    Returns
    -------
    dict
        The header to add to the answer: the object's ``container/object``
        (:data:`~mlstorlets.sandbox.protocol.LOG_OBJECT_HEADER`), or why
        there is none (:data:`~mlstorlets.sandbox.protocol.LOG_ERROR_HEADER`).
    """
    manager = sreq.file_manager
    name = object_name(sreq.storlet_id, txn_id)
    text, ended = log.collect()
    body = log_body(sreq.storlet_id, txn_id, outcome, text, ended)
    container = manager.log_container
    try:
        # Upstream's put_log leaves the object's name out of the upload.
        manager.client.upload_object(
            io.BytesIO(body),
            manager.account,
            container,
            name,
            {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body))},
        )
    except UnexpectedResponse as err:
        status = err.resp.status_int if err.resp is not None else 0
        if status == 404:
            reason = "the account has no log container %s: the log was not stored" % container
        else:
            reason = "the log could not be stored in %s: %s" % (container, err.resp.status)
        if logger:
            logger.warning("storlet %s: %s" % (sreq.storlet_id, reason))
        return {protocol.LOG_ERROR_HEADER: protocol.quote_reason(reason)}
    except Exception as err:
        if logger:
            logger.exception("storlet %s: the log could not be stored" % sreq.storlet_id)
        reason = "the log could not be stored in %s: %s" % (container, type(err).__name__)
        return {protocol.LOG_ERROR_HEADER: protocol.quote_reason(reason)}
    return {protocol.LOG_OBJECT_HEADER: protocol.quote_reason("%s/%s" % (container, name))}
