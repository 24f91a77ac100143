"""The gateway's SBus client never waits without bound (no cluster)."""

import socket
import time

import pytest
from storlets.sbus.client.exceptions import SBusClientIOError, SBusClientSendError

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
    import json
    import types

    from mlstorlets.server.gateway import sbus

    def datagram(pad):
        # What libsbus sends of a datagram: its descriptors and two JSON texts.
        return types.SimpleNamespace(
            fds=[0],
            serialized_metadata=json.dumps([{"storage": {"Pad": "p" * pad}}]),
            serialized_cmd_params=json.dumps({"a": "b"}),
        )

    assert len(sbus._message(datagram(1000))) < 4096
    with pytest.raises(sbus.DatagramTooLong, match="over the 4096 bytes a sandbox receives"):
        sbus._message(datagram(5000))
    with pytest.raises(sbus.DatagramTooLong):
        sbus.send_without_following_links("/nonexistent", datagram(5000))
