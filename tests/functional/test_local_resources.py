"""Extra resources read on an object server that holds them
(mlstorlets.server.middleware.local_resources), on the real 3-node cluster:
the storlet gets their files and the same inputs as on the proxy; a resource
a node lacks sends the call back to the proxy; nothing a client sends
chooses those files.
"""

import os
import urllib.parse

import pytest
from support import data_files

from mlstorlets.sandbox import protocol

PROBE = "probe.py"
RAN_ON = protocol.RAN_ON_HEADER.lower()


@pytest.fixture
def objects(conn, container):
    conn.put_object(container, "source.txt", b"hello", headers={"X-Object-Meta-Color": "blue"})
    for i in range(3):
        conn.put_object(container, "r%d.txt" % i, b" r%d" % i)
    return container


def probe(conn, container, resources, **params):
    headers = {
        "X-Run-Storlet": PROBE,
        "X-Storlet-Extra-Resources": ",".join("/%s/%s" % (container, r) for r in resources),
    }
    headers.update(
        ("X-Storlet-Parameter-%d" % i, "%s:%s" % kv) for i, kv in enumerate(params.items())
    )
    return conn.get_object(container, "source.txt", headers=headers)


def test_extra_resources_are_read_on_an_object_server(conn, objects):
    headers, body = probe(conn, objects, ["r0.txt", "r1.txt", "r2.txt"])
    assert body == b"hello r0 r1 r2"
    assert headers[RAN_ON] == protocol.RAN_ON_OBJECT_SERVER
    assert headers["x-object-meta-probe-inputs"] == "4"
    # The request's object's metadata, as on the proxy.
    assert headers["x-object-meta-color"] == "blue"


def test_a_resource_a_node_lacks_is_read_through_the_proxy(cluster, conn, objects):
    account = conn.url.rstrip("/").rsplit("/", 1)[1]
    files = data_files(cluster, account, objects, "r1.txt")
    assert len(files) == 3, files
    # Left on one node of three: a call sent to either of the two others
    # runs on the proxy, which reads it from the third.
    for path in files[1:]:
        os.unlink(path)
    where = []
    for _ in range(24):
        headers, body = probe(conn, objects, ["r0.txt", "r1.txt"])
        assert body == b"hello r0 r1"
        where.append(headers.get(RAN_ON, "proxy"))
    assert set(where) == {"proxy", protocol.RAN_ON_OBJECT_SERVER}, where
    # Whole again on every node, for the container's removal.
    conn.put_object(objects, "r1.txt", b" r1")


def test_a_resource_missing_everywhere_is_refused_by_name(conn, objects):
    with pytest.raises(Exception) as err:
        probe(conn, objects, ["r0.txt", "missing.txt"])
    assert err.value.http_status == 422
    reason = err.value.http_response_headers[protocol.REASON_HEADER]
    assert "missing.txt could not be read: 404" in reason


def test_a_client_cannot_name_the_files_an_object_server_opens(conn, objects, container):
    # Swift's gatekeeper drops the proxy's own header from a client.
    conn.put_container(container + "-secret")
    try:
        conn.put_object(container + "-secret", "s.txt", b" secret")
        headers, body = conn.get_object(
            objects,
            "source.txt",
            headers={
                "X-Run-Storlet": PROBE,
                "X-Backend-Storlet-Local-Resources": '[["%s-secret", "s.txt", 0]]' % container,
            },
        )
        assert body == b"hello" and headers["x-object-meta-probe-inputs"] == "1"
    finally:
        conn.delete_object(container + "-secret", "s.txt")
        conn.delete_container(container + "-secret")


def test_a_copy_with_extra_resources_runs_on_an_object_server(conn, objects):
    conn.put_object(
        objects,
        "out.txt",
        b"",
        headers={
            "X-Run-Storlet": PROBE,
            "X-Copy-From": "%s/source.txt" % objects,
            "X-Storlet-Extra-Resources": "/%s/r2.txt,/%s/r0.txt" % (objects, objects),
        },
    )
    assert conn.get_object(objects, "out.txt")[1] == b"hello r2 r0"


def test_names_are_read_as_the_client_quoted_them(conn, objects):
    conn.put_object(objects, "café 1%.txt", b" accent")
    headers, body = probe(conn, objects, [urllib.parse.quote("café 1%.txt")])
    assert body == b"hello accent"
    assert headers[RAN_ON] == protocol.RAN_ON_OBJECT_SERVER


def test_a_symlink_runs_on_the_proxy_where_its_target_was_not_authorized(conn, objects):
    # The proxy names the resources for the object it was asked for; the
    # symlink's target (which may be in another account) is another.
    conn.put_object(objects, "link", b"", headers={"X-Symlink-Target": "%s/source.txt" % objects})
    headers = {
        "X-Run-Storlet": PROBE,
        "X-Storlet-Extra-Resources": "/%s/r0.txt" % objects,
    }
    headers, body = conn.get_object(objects, "link", headers=headers)
    assert body == b"hello r0"
    assert RAN_ON not in headers
