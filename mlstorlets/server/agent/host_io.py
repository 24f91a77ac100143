"""The sandbox's end of the host's protocol: the commands the host sends
(upstream's SBus datagrams, received whole), the task id a worker answers
an ``EXECUTE`` with, and the output metadata and bodies it then writes to
the host's descriptors.

The host checks all of it again: whatever runs in the sandbox, a hostile
storlet included, may write to the descriptors it was handed
(:mod:`mlstorlets.server.gateway.invocation`,
:mod:`mlstorlets.server.middleware.output_length`).
"""

import array
import json
import os
import socket
import stat
import struct

from storlets.agent.common.server import CommandSuccess
from storlets.sbus.datagram import SBusFileDescriptor, build_datagram

from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.protocol import AGENT_DATAGRAM_LIMIT, LENGTH_KEY
from mlstorlets.server.agent import channel

# What the host reads of an output's metadata in one read (upstream's
# MAX_METADATA_SIZE): a failure's metadata must fit whole.
METADATA_LIMIT = 4096

_INT = array.array("i")


def receive(sock, how=0):
    """The next SBus command on ``sock``, in libsbus's format (three native
    ints: descriptors, lengths of the metadata and of the parameters; the
    two JSON strings; the descriptors as ``SCM_RIGHTS``), received into
    :data:`~mlstorlets.sandbox.protocol.AGENT_DATAGRAM_LIMIT` bytes where
    libsbus has 4096.  The datagram keeps its bytes as ``raw``, to be sent
    on as they came.  ``how``: ``recvmsg``'s flags.

    Raises
    ------
    ValueError
        A command cut short, or not of that format; its descriptors are
        closed.
    """
    data, fds, flags = _receive(sock, how)
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
        dtg = _datagram(fds, json.loads(metadata), json.loads(params))
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        channel.close_all(fds)
        raise ValueError(str(err)) from None
    dtg.raw = data
    return dtg


def _datagram(fds, metadata, cmd_params):
    """Upstream's ``build_datagram_from_raw_message``, given the JSON
    parsed, without its deep copy of what was just parsed: on the path of
    every invocation."""
    if len(fds) != len(metadata):
        raise ValueError("Length mismatch fds: %d != md %d" % (len(fds), len(metadata)))
    sfds = []
    for fd, md in zip(fds, metadata):
        storlets_md = md["storlets"]
        fdtype = storlets_md.pop("type")
        sfds.append(SBusFileDescriptor(fdtype, fd, storlets_md, md["storage"]))
    return build_datagram(
        cmd_params.get("command"), sfds, cmd_params.get("params"), cmd_params.get("task_id")
    )


def _receive(sock, how=0):
    # Descriptors that a storlet's child processes never inherit (recv_fds
    # takes no flags).
    data, ancdata, flags, _ = sock.recvmsg(
        AGENT_DATAGRAM_LIMIT,
        socket.CMSG_SPACE(channel.MAX_FDS * _INT.itemsize),
        how | socket.MSG_CMSG_CLOEXEC,
    )
    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds), flags


def send_command(sock, data, fds, flags=0, address=None):
    """Send a command's bytes ``data`` with its descriptors ``fds`` on
    ``sock`` (to ``address``, when it is not connected)."""
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
    if address is None:
        sock.sendmsg([data], rights, flags)
    else:
        sock.sendmsg([data], rights, flags, address)


def pass_on(door, to, logger):
    """Pass the next command on ``door``, if any, on to ``to`` as it
    came.  A command that cannot be passed on is dropped: its host sees
    its answer pipe close unanswered, and runs the request again."""
    try:
        data, fds, flags = _receive(door, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise OSError("a command over the agent's bounds")
        send_command(to, data, fds)
    except OSError as err:
        logger.error("Dropped a command for the other workers: %s" % err)
    finally:
        channel.close_all(fds)


def reply(fd, response):
    """Write a command's ``response`` (upstream's ``CommandResponse``) to
    the host's answer descriptor ``fd`` and close it; False when nobody
    reads it any more (the host gave up waiting)."""
    try:
        os.write(fd, response.report_message.encode("utf-8"))
        return True
    except OSError:
        return False
    finally:
        channel.close_all([fd])


def accepted(task_id):
    """The answer to an ``EXECUTE`` a worker took."""
    return CommandSuccess("OK", task_id=task_id)


def checked_outputs(metadata, fds, expected):
    """``[(metadata, spool fd, size)]`` of a storlet's outputs, or ValueError.

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


def send(out_fd, spool, sent, size):
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
