"""Messages between a storlet daemon and its workers.

One message is one JSON object in one datagram of a ``SOCK_SEQPACKET``
socket pair, with the file descriptors it hands over attached
(``SCM_RIGHTS``).  The daemon reads what a worker sends as it would read
anything from a tenant's process: bounded in size and in descriptors, and
checked before use.
"""

import json
import os
import socket

# A request carries the inputs' metadata (user metadata of Swift objects,
# bounded by Swift's header limits); an answer the output metadata, which
# the host reads in at most 4 KiB.
MAX_MESSAGE = 1 << 20
# Inputs of one request (the object and its extra resources) plus the
# logger; outputs of one answer.
MAX_FDS = 64


class ChannelError(Exception):
    """A peer sent something that is not a message of this protocol."""


def pair():
    """Two connected sockets: (daemon's end, worker's end)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock, message, fds=()):
    """Send ``message`` (a JSON-serialisable dict) with ``fds``."""
    data = json.dumps(message).encode("utf-8")
    if len(data) > MAX_MESSAGE:
        raise ChannelError("message of %d bytes over the %d bytes bound" % (len(data), MAX_MESSAGE))
    socket.send_fds(sock, [data], list(fds))


def receive(sock):
    """The next message and its descriptors; ``(None, [])`` at EOF.

    Raises
    ------
    ChannelError
        For a message that is not a JSON object, is cut short, or carries
        too many descriptors; the descriptors received are closed.
    """
    data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE + 1, MAX_FDS)
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) > MAX_MESSAGE:
        close_all(fds)
        raise ChannelError(
            "message over the bound of %d bytes or %d descriptors" % (MAX_MESSAGE, MAX_FDS)
        )
    if not data and not fds:
        return None, []
    try:
        message = json.loads(data)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        close_all(fds)
        raise ChannelError("not a JSON object")
    return message, fds


def close_all(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
