"""A daemon seen running is not asked about again within
``daemon_check_time``; a command it cannot receive is told apart from one it
did not answer (no cluster: the engine's half in
tests/functional/test_agent.py)."""

import logging
import socket
import types

import pytest
from storlets.gateway.gateways.container.runtime import RunTimeSandbox
from storlets.sbus.client.exceptions import SBusClientSendError

from mlstorlets.server.gateway import sandbox as sandbox_module
from mlstorlets.server.gateway.sandbox import BoundedSandbox
from mlstorlets.server.gateway.sbus import BoundedSBusClient, NotDelivered


@pytest.fixture
def asked(monkeypatch):
    """The storlets each upstream activation was for."""
    calls = []
    monkeypatch.setattr(
        RunTimeSandbox,
        "activate_storlet_daemon",
        lambda self, sreq, cache_updated=True: calls.append(sreq.storlet_main),
    )
    monkeypatch.setattr(sandbox_module, "_seen_running", {})
    return calls


def sandbox(tmp_path, scope="AUTH_x", **conf):
    conf = dict({"host_root": str(tmp_path), "native_lib_dir": str(tmp_path)}, **conf)
    return BoundedSandbox(scope, conf, logging.getLogger())


def request(main="probe.Probe"):
    return types.SimpleNamespace(storlet_main=main)


def test_a_daemon_seen_running_is_not_asked_about_again(tmp_path, asked, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(sandbox_module.time, "monotonic", lambda: clock[0])
    sbox = sandbox(tmp_path)
    for _ in range(3):
        sbox.activate_storlet_daemon(request(), cache_updated=False)
    assert asked == ["probe.Probe"]
    # Another storlet, another account: asked.
    sbox.activate_storlet_daemon(request("other.Other"), cache_updated=False)
    sandbox(tmp_path, "AUTH_y").activate_storlet_daemon(request(), cache_updated=False)
    assert asked == ["probe.Probe", "other.Other", "probe.Probe"]
    # A storlet whose code changed: asked (upstream restarts its daemon).
    sbox.activate_storlet_daemon(request(), cache_updated=True)
    assert len(asked) == 4
    # After daemon_check_time: asked.
    clock[0] += sbox.daemon_check_time + 0.1
    sbox.activate_storlet_daemon(request(), cache_updated=False)
    assert len(asked) == 5
    # Forgotten (a daemon gone, a sandbox restarted): asked.
    sbox.activate_storlet_daemon(request("other.Other"), cache_updated=False)
    assert len(asked) == 6
    sbox.forget_daemons("probe.Probe")
    sbox.activate_storlet_daemon(request(), cache_updated=False)
    sbox.activate_storlet_daemon(request("other.Other"), cache_updated=False)
    assert asked[6:] == ["probe.Probe"]
    sbox.forget_daemons()
    sbox.activate_storlet_daemon(request("other.Other"), cache_updated=False)
    assert asked[7:] == ["other.Other"]


def test_zero_asks_every_time(tmp_path, asked):
    sbox = sandbox(tmp_path, daemon_check_time="0")
    for _ in range(3):
        sbox.activate_storlet_daemon(request(), cache_updated=False)
    assert len(asked) == 3


def test_a_command_to_a_gone_daemon_is_not_delivered(tmp_path):
    with pytest.raises(NotDelivered, match="not a socket"):
        BoundedSBusClient(str(tmp_path / "none"), 5).ping()
    # A socket file whose daemon died: bound once, nobody behind it.
    path = str(tmp_path / "dead")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(path)
    dead.close()
    with pytest.raises(NotDelivered, match="refused"):
        BoundedSBusClient(path, 5).ping()


def test_a_command_a_busy_daemon_did_not_read_may_have_been_received(tmp_path):
    path = str(tmp_path / "busy")
    busy = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    busy.bind(path)
    try:
        with pytest.raises(SBusClientSendError) as caught:
            for _ in range(1000):
                try:
                    BoundedSBusClient(path, 0.05).ping()
                except SBusClientSendError:
                    raise
                except Exception:
                    pass  # queued, unanswered
        assert not isinstance(caught.value, NotDelivered)
    finally:
        busy.close()


def versioned(main="probe.Probe", length="100", timestamp="1.0", dependencies=()):
    return types.SimpleNamespace(
        storlet_main=main,
        storlet_id="probe.py",
        options={"storlet_content_length": length, "storlet_x_timestamp": timestamp},
        dependencies=list(dependencies),
    )


def test_a_storlet_brought_up_is_ready_for_its_version_only(tmp_path, asked, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(sandbox_module.time, "monotonic", lambda: clock[0])
    sbox = sandbox(tmp_path)
    assert not sbox.ready(versioned())
    sbox.activate_storlet_daemon(versioned(), cache_updated=False)
    assert sbox.ready(versioned())
    # Another version (as the proxy read it), other dependencies, another
    # account: brought up again first.
    assert not sbox.ready(versioned(length="101"))
    assert not sbox.ready(versioned(timestamp="2.0"))
    assert not sbox.ready(versioned(dependencies=["lib.so"]))
    assert not sandbox(tmp_path, "AUTH_y").ready(versioned())
    clock[0] += sbox.daemon_check_time + 0.1
    assert not sbox.ready(versioned())
    sbox.activate_storlet_daemon(versioned(), cache_updated=False)
    sbox.forget_daemons("probe.Probe")
    assert not sbox.ready(versioned())


def test_a_version_another_worker_brought_becomes_this_ones(tmp_path, asked):
    sbox = sandbox(tmp_path)
    sbox.activate_storlet_daemon(versioned(), cache_updated=False)
    # Another worker brought in version 2 (and restarted the daemon): the
    # files here are already current, the daemon is not asked again.
    sbox.activate_storlet_daemon(versioned(timestamp="2.0"), cache_updated=False)
    assert asked == ["probe.Probe"]
    assert sbox.ready(versioned(timestamp="2.0")) and not sbox.ready(versioned())


def test_with_zero_nothing_is_ever_ready(tmp_path, asked):
    sbox = sandbox(tmp_path, daemon_check_time="0")
    sbox.activate_storlet_daemon(versioned(), cache_updated=False)
    assert not sbox.ready(versioned())
