"""What an object server accepts as the extra resources to open itself
(the cluster's side is tests/functional/test_local_resources.py)."""

import json

import pytest

from mlstorlets.sandbox import protocol
from mlstorlets.server.middleware.local_resources import parse_resources
from mlstorlets.server.middleware.storlet_handler import handler_for

TARGET = ["AUTH_a", "c", "o"]


def test_resources_are_container_object_and_policy_for_one_object():
    value = json.dumps([TARGET, [["c", "o/with/slashes", 0], ["ç", "ö", 2]]])
    assert parse_resources(value) == (
        ("AUTH_a", "c", "o"),
        [("c", "o/with/slashes", 0), ("ç", "ö", 2)],
    )


@pytest.mark.parametrize(
    "value",
    [
        "[]",
        "{}",
        json.dumps([["c", "o", 0]]),
        json.dumps([["AUTH_a", "c"], [["c", "o", 0]]]),
        json.dumps([TARGET, []]),
        json.dumps([TARGET, [["c", "o"]]]),
        json.dumps([TARGET, [["c", "", 0]]]),
        json.dumps([TARGET, [["c", "o", -1]]]),
        json.dumps([TARGET, [["c", "o", True]]]),
        json.dumps([TARGET, [["c", "o", "0"]]]),
        json.dumps([TARGET, [["c", 1, 0]]]),
        # With the request's object, a sandbox takes MAX_INPUTS inputs.
        json.dumps([TARGET, [["c", "o", 0]] * protocol.MAX_INPUTS]),
    ],
)
def test_anything_else_is_refused(value):
    with pytest.raises(ValueError):
        parse_resources(value)


def test_each_server_gets_its_handler_with_its_options():
    proxy = handler_for(
        {
            "execution_server": "proxy",
            "max_body_input_bytes": "1000",
            "extra_resources_on_object_server": "false",
        }
    )
    assert (proxy.max_body_input, proxy.on_object_server) == (1000, False)
    assert handler_for({"execution_server": "proxy"}).on_object_server is True
    obj = handler_for(
        {
            "execution_server": "object",
            "bind_ip": "127.0.0.1",
            "bind_port": "6210",
            "swift_dir": "/s",
        }
    )
    assert (obj.my_ips, obj.my_port, obj.swift_dir) == (("127.0.0.1",), 6210, "/s")
    # As Swift's replicator: the ring's address first; with a server per
    # port, any of this host's ports.
    obj = handler_for(
        {
            "execution_server": "object",
            "ring_ip": "10.0.0.5",
            "bind_ip": "0.0.0.0",
            "bind_port": "6210",
            "servers_per_port": "2",
        }
    )
    assert (obj.my_ips, obj.my_port) == (("10.0.0.5",), None)
    with pytest.raises(ValueError, match="max_body_input_bytes"):
        handler_for({"execution_server": "proxy", "max_body_input_bytes": "-1"})
