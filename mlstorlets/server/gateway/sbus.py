"""The host's end of SBus, bounded and without following links.

Upstream waits on SBus without a timeout for the daemon factory's and the
daemon's answers, and sends its commands with a blocking ``sendmsg`` that,
once the socket's queue is full, stops the whole server worker.  Here every
command is sent without blocking and answered within a bound
(:class:`BoundedSBusClient`), and the host connects to a sandbox's socket
through a descriptor of its directory opened without following links,
refusing anything but a socket there (:func:`send_without_following_links`):
the directory is the sandbox's to write.
"""

import array
import json
import os
import select
import stat
import struct
import time

import eventlet
from eventlet import patcher
from storlets.sbus import SBus
from storlets.sbus import command as sbus_cmd
from storlets.sbus.client import SBusClient
from storlets.sbus.client.exceptions import (
    SBusClientIOError,
    SBusClientMalformedResponse,
    SBusClientSendError,
)
from storlets.sbus.datagram import SBusFileDescriptor, build_datagram
from storlets.sbus.file_description import SBUS_FD_SERVICE_OUT

from mlstorlets.sandbox.protocol import SBUS_DATAGRAM_LIMIT

# Not eventlet's green socket: a send that never blocks, and retries.
_socket = patcher.original("socket")
# Nor its green read, which waits for what a non-blocking read finds missing.
_read = patcher.original("os").read
_upstream_send = SBus.__dict__["send"].__func__


class DatagramTooLong(SBusClientSendError):
    """A command longer than the sandbox's receive buffer: libsbus would
    read past what it received, and the daemon, given garbage, dies."""


def _message(datagram, limit=SBUS_DATAGRAM_LIMIT):
    """libsbus's message for ``datagram``: three native ints (number of
    file descriptors, lengths of the metadata and of the parameters), the
    two JSON strings and a NUL; never longer than the sandbox receives
    (``limit``)."""
    fds = datagram.fds
    metadata = (_serialized_metadata(datagram) if fds else "").encode("utf8")
    params = datagram.serialized_cmd_params.encode("utf8")
    message = struct.pack("iii", len(fds), len(metadata), len(params)) + metadata + params + b"\0"
    if len(message) > limit:
        raise DatagramTooLong(
            "the inputs' metadata and the parameters take %d bytes, over the %d bytes "
            "a sandbox receives: fewer inputs in one request, or less metadata on them"
            % (len(message), limit)
        )
    return message


def _serialized_metadata(datagram):
    """Upstream's ``serialized_metadata``, without its deep copy of every
    descriptor's metadata on the way to JSON."""
    return json.dumps(
        [
            {"storlets": dict(s.storlets_metadata, type=s.fdtype), "storage": s.storage_metadata}
            for s in datagram.sfds
        ]
    )


class NotDelivered(SBusClientSendError):
    """A command nobody received: no socket at the path, or none bound to
    it (its daemon is gone).  Nothing was sent, so it may be sent again."""


class _Socket:
    """A socket path a tenant can write into, opened without following links.

    The channel directory is writable inside the sandbox: a storlet can
    replace a socket by a symlink to another account's socket or to any
    host path.  The last component is opened with ``O_PATH | O_NOFOLLOW``
    (its directories belong to the host), must be a socket, and is reached
    through ``/proc/self/fd``, which names that very inode.  ``path`` is
    None when the name is not such a socket.
    """

    def __init__(self, name):
        self.fd, self.path = None, None
        if ".." in name.split(os.sep):
            return
        try:
            self.fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        if stat.S_ISSOCK(os.fstat(self.fd).st_mode):
            self.path = "/proc/self/fd/%d" % self.fd

    def __enter__(self):
        return self.path

    def __exit__(self, *exc_info):
        if self.fd is not None:
            os.close(self.fd)


def send_without_following_links(sbus_name, datagram):
    """``SBus.send`` through :class:`_Socket`; anything but a socket is a
    failure to send (-1), which upstream's SBus client reports as such."""
    _message(datagram)
    with _Socket(sbus_name) as path:
        return _upstream_send(path, datagram) if path else -1


def sbus_send(path, datagram, timeout, limit=SBUS_DATAGRAM_LIMIT):
    """Send an SBus datagram as libsbus does, but never block past timeout.

    libsbus's ``sbus_send_msg`` is a blocking ``sendmsg`` called through
    ctypes: when the receiver's queue is full it stops the whole (green)
    server worker.  The message is libsbus's: three native ints (number of
    file descriptors, lengths of the metadata and of the parameters), the
    two JSON strings, a NUL, and the descriptors as ``SCM_RIGHTS``.
    """
    message = _message(datagram, limit)
    rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", datagram.fds))]
    deadline = time.monotonic() + timeout
    with _Socket(path) as target, _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM) as sock:
        if target is None:
            raise NotDelivered("SBus %s: not a socket" % path)
        while True:
            try:
                sock.sendmsg([message], rights, _socket.MSG_DONTWAIT, target)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise SBusClientSendError(
                        "SBus %s: nobody read the command in %g s" % (path, timeout)
                    )
                eventlet.sleep(0.01)
            except ConnectionRefusedError as err:
                raise NotDelivered("SBus %s: %s" % (path, err))
            except OSError as err:
                raise SBusClientSendError("SBus %s: %s" % (path, err))


class BoundedSBusClient(SBusClient):
    """An SBus client whose every command is answered within ``timeout``
    seconds, or raises :class:`SBusClientException`."""

    def __init__(self, socket_path, timeout, limit=SBUS_DATAGRAM_LIMIT):
        super().__init__(socket_path)
        self.timeout = timeout
        self.limit = limit

    def hand_over(self, params, fds, task_id):
        """Send ``EXECUTE`` with the host's ``task_id`` and return, without
        waiting, the read end of its answer pipe: the worker that takes
        the task answers there before it runs it, and runs nothing if the
        read end is closed by then (the host gave up)."""
        return self._send(sbus_cmd.SBUS_CMD_EXECUTE, params, task_id, fds)

    def answer(self, read_fd):
        """The answer a worker wrote to ``read_fd``, an answer pipe of
        :meth:`hand_over`, read without waiting; None if there is none, or
        none upstream's client would parse.  The pipe is closed: a worker
        that answers later finds it so."""
        try:
            os.set_blocking(read_fd, False)
            reply = _read(read_fd, 4096)
        except BlockingIOError:
            return None
        finally:
            os.close(read_fd)
        try:
            return self._parsed(reply)
        except SBusClientMalformedResponse:
            return None

    def _parsed(self, reply):
        """Upstream's parsing of an answer, any bytes a sandbox wrote that
        it does not take (not UTF-8, not an object, JSON nested past the
        parser's recursion) malformed too."""
        try:
            return self._parse_response(reply.decode("utf-8"))
        except (UnicodeDecodeError, TypeError, RecursionError) as err:
            raise SBusClientMalformedResponse(
                "SBus %s: malformed answer (%s)" % (self.socket_path, type(err).__name__)
            )

    def _send(self, command, params, task_id, extra_fds):
        read_fd, write_fd = os.pipe()
        try:
            datagram = build_datagram(
                command,
                [SBusFileDescriptor(SBUS_FD_SERVICE_OUT, write_fd)] + (extra_fds or []),
                params,
                task_id,
            )
            sbus_send(self.socket_path, datagram, self.timeout, self.limit)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            # The other side holds its copy; ours would keep the
            # reply from ever ending.
            os.close(write_fd)
        return read_fd

    def _request(self, command, params=None, task_id=None, extra_fds=None):
        deadline = time.monotonic() + self.timeout
        read_fd = self._send(command, params, task_id, extra_fds)
        try:
            reply = b""
            while True:
                left = deadline - time.monotonic()
                ready = left > 0 and select.select([read_fd], [], [], left)[0]
                if not ready:
                    raise SBusClientIOError(
                        "SBus %s: no answer to %s in %g s"
                        % (self.socket_path, command, self.timeout)
                    )
                chunk = os.read(read_fd, 4096)
                if not chunk:
                    break
                reply += chunk
        finally:
            os.close(read_fd)
        return self._parsed(reply)
