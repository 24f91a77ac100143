"""The gateway's SBus client never waits without bound (no cluster)."""

import os
import socket
import time

import pytest
from eventlet import patcher
from storlets.sbus.client.exceptions import (
    SBusClientIOError,
    SBusClientMalformedResponse,
    SBusClientSendError,
)

from mlstorlets.server.gateway.sbus import BoundedSBusClient


@pytest.fixture
def deaf(tmp_path):
    """A bound SBus socket whose owner never reads (a busy daemon)."""
    path = str(tmp_path / "sbus")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield path
    sock.close()


def test_a_command_nobody_answers_fails_within_its_timeout(deaf):
    started = time.monotonic()
    with pytest.raises(SBusClientIOError, match="no answer"):
        BoundedSBusClient(deaf, 0.3).ping()
    # Bounded, with a margin for a loaded machine (not a speed figure).
    assert time.monotonic() - started < 5


def test_a_full_queue_does_not_block_the_sender(deaf):
    """Upstream's blocking sendmsg stops the whole worker here."""
    with pytest.raises(SBusClientSendError, match="nobody read"):
        for _ in range(1000):
            try:
                BoundedSBusClient(deaf, 0.05).ping()
            except SBusClientIOError:
                pass  # queued, unanswered: the next fills the queue


def test_nobody_listening_fails_at_once(tmp_path):
    with pytest.raises(SBusClientSendError):
        BoundedSBusClient(str(tmp_path / "none"), 5).ping()


def test_a_command_longer_than_the_sandbox_receives_is_never_sent():
    from storlets.sbus.datagram import SBusFileDescriptor, build_datagram
    from storlets.sbus.file_description import SBUS_FD_SERVICE_OUT

    from mlstorlets.server.gateway import sbus

    def datagram(pad):
        sfd = SBusFileDescriptor(SBUS_FD_SERVICE_OUT, 0, storage_metadata={"Pad": "p" * pad})
        return build_datagram("SBUS_CMD_PING", [sfd], {"a": "b"}, None)

    assert len(sbus._message(datagram(1000))) < 4096
    with pytest.raises(sbus.DatagramTooLong, match="over the 4096 bytes a sandbox receives"):
        sbus._message(datagram(5000))
    with pytest.raises(sbus.DatagramTooLong):
        sbus.send_without_following_links("/nonexistent", datagram(5000))


def test_a_command_is_the_bytes_libsbus_sends():
    """The message the host builds without upstream's deep copies is the
    one upstream's serialization gives: three native ints, the two JSON
    texts and a NUL."""
    import struct

    from storlets.sbus import file_description as sbus_fd
    from storlets.sbus.datagram import SBusFileDescriptor, build_datagram

    from mlstorlets.server.gateway import sbus

    sfds = [
        SBusFileDescriptor(sbus_fd.SBUS_FD_SERVICE_OUT, 3),
        SBusFileDescriptor(
            sbus_fd.SBUS_FD_INPUT_OBJECT,
            4,
            storlets_metadata={"storlet_name": "probe.py"},
            storage_metadata={"Content-Length": "7", "X-Object-Meta-\u00e9": "\u00e9"},
        ),
        SBusFileDescriptor(sbus_fd.SBUS_FD_OUTPUT_OBJECT, 5),
        SBusFileDescriptor(sbus_fd.SBUS_FD_OUTPUT_OBJECT_METADATA, 6),
        SBusFileDescriptor(sbus_fd.SBUS_FD_LOGGER, 7),
    ]
    dtg = build_datagram("SBUS_CMD_EXECUTE", sfds, {"k": "v"}, "0123abcd")
    metadata = dtg.serialized_metadata.encode("utf8")
    params = dtg.serialized_cmd_params.encode("utf8")
    expected = struct.pack("iii", 5, len(metadata), len(params)) + metadata + params + b"\0"
    assert sbus._message(dtg) == expected
    # Nothing of the descriptors' metadata was changed on the way.
    assert sfds[1].storlets_metadata == {"storlet_name": "probe.py"}


@pytest.mark.parametrize(
    "reply",
    [b"\xff\xfe", b'["status", "message"]', b"[" * 3000 + b"]" * 3000, b'{"status": true}'],
)
def test_whatever_a_sandbox_answers_is_an_answer_or_malformed(tmp_path, reply):
    """A storlet runs inside the sandbox: any bytes may come back."""
    path = str(tmp_path / "sbus")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    # A process of its own, which blocks as a daemon does: this one is
    # eventlet's, whose hub a child shares.
    pid = os.fork()
    if pid == 0:
        try:
            daemon = patcher.original("socket").socket(fileno=os.dup(sock.fileno()))
            daemon.setblocking(True)
            # libsbus's message: the descriptors come as SCM_RIGHTS, the
            # first one the answer pipe.
            _msg, ancdata, _flags, _addr = daemon.recvmsg(65536, socket.CMSG_SPACE(64))
            fds = [fd for _l, _t, data in ancdata for fd in memoryview(data).cast("i")]
            os.write(fds[0], reply)
        finally:
            os._exit(0)
    try:
        with pytest.raises(SBusClientMalformedResponse):
            BoundedSBusClient(path, 5).ping()
    finally:
        os.waitpid(pid, 0)
        sock.close()
