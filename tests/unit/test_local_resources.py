"""What an object server accepts as the extra resources to open itself
(the cluster's side is tests/functional/test_local_resources.py)."""

import json

import pytest

from mlstorlets.sandbox import protocol
from mlstorlets.server.middleware.local_resources import parse_resources
from mlstorlets.server.middleware.storlet_handler import handler_for


def test_resources_are_container_object_and_policy():
    value = json.dumps([["c", "o/with/slashes", 0], ["ç", "ö", 2]])
    assert parse_resources(value) == [("c", "o/with/slashes", 0), ("ç", "ö", 2)]


@pytest.mark.parametrize(
    "value",
    [
        "[]",
        "{}",
        '[["c", "o"]]',
        '[["c", "", 0]]',
        '[["c", "o", -1]]',
        '[["c", "o", true]]',
        '[["c", "o", "0"]]',
        '[["c", 1, 0]]',
        json.dumps([["c", "o", 0]] * (protocol.MAX_INPUTS + 1)),
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
    with pytest.raises(ValueError, match="max_body_input_bytes"):
        handler_for({"execution_server": "proxy", "max_body_input_bytes": "-1"})
