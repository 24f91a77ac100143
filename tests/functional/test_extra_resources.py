"""An extra resource that cannot be read fails the invocation, by name.

Upstream fed the storlet Swift's error page as the resource's data, and a
copy stored an object made from it with a 200.
"""

import time
import urllib.parse

import pytest
from support import children, cpu_seconds
from swiftclient.exceptions import ClientException

from mlstorlets.sandbox import protocol

PROBE = "probe.py"
RAISER = "raiser.py"


@pytest.fixture
def source(conn, container):
    conn.put_object(container, "source.txt", b"hello")
    return container


def failure(err):
    headers = {k.lower(): v for k, v in err.http_response_headers.items()}
    return (
        err.http_status,
        headers[protocol.ERROR_HEADER.lower()],
        urllib.parse.unquote(headers[protocol.REASON_HEADER.lower()]),
    )


def test_a_missing_resource_is_refused_by_name(conn, source):
    with pytest.raises(ClientException) as err:
        conn.get_object(
            source,
            "source.txt",
            headers={
                "X-Run-Storlet": PROBE,
                "X-Storlet-Extra-Resources": "/%s/missing.txt" % source,
            },
        )
    status, kind, reason = failure(err.value)
    print("missing resource: %d %s" % (status, reason))
    assert (status, kind) == (422, protocol.REFUSED)
    assert reason == (
        "storlet probe.py refused %s/source.txt: extra "
        "resource %s/missing.txt could not be read: "
        "404 Not Found" % (source, source)
    )


def test_a_copy_with_a_missing_resource_writes_nothing(conn, source):
    with pytest.raises(ClientException) as err:
        conn.put_object(
            source,
            "out.txt",
            b"",
            headers={
                "X-Run-Storlet": PROBE,
                "X-Copy-From": "%s/source.txt" % source,
                "X-Storlet-Extra-Resources": "/%s/missing.txt" % source,
            },
        )
    status, kind, reason = failure(err.value)
    print("missing resource, copy: %d %s" % (status, reason))
    assert (status, kind) == (422, protocol.REFUSED)
    assert "missing.txt could not be read: 404" in reason
    assert [o["name"] for o in conn.get_container(source)[1]] == ["source.txt"]
    # Present, the same copy works.
    conn.put_object(source, "missing.txt", b" and more")
    conn.put_object(
        source,
        "out.txt",
        b"",
        headers={
            "X-Run-Storlet": PROBE,
            "X-Copy-From": "%s/source.txt" % source,
            "X-Storlet-Extra-Resources": "/%s/missing.txt" % source,
        },
    )
    assert conn.get_object(source, "out.txt")[1] == b"hello and more"


def test_inputs_too_long_for_the_sandbox_fail_by_name_and_the_sandbox_lives_on(conn, source):
    # Resources of 2 KB of metadata each (eight values of Swift's largest;
    # more is over what the object servers' file system keeps in xattrs).
    # Eight make a datagram of over libsbus's 4096 bytes, which it would
    # cut and upstream's daemon, given garbage, died of: the project's
    # agent receives them.  Forty are over its 64 KiB.
    heavy = {"X-Object-Meta-Pad-%02d" % k: "p" * 250 for k in range(8)}
    for i in range(40):
        conn.put_object(source, "r%d.txt" % i, b"x", headers=heavy)
    eight = ",".join("/%s/r%d.txt" % (source, i) for i in range(8))
    _, body = conn.get_object(
        source, "source.txt", headers={"X-Run-Storlet": PROBE, "X-Storlet-Extra-Resources": eight}
    )
    assert body
    resources = ",".join("/%s/r%d.txt" % (source, i) for i in range(40))
    with pytest.raises(ClientException) as err:
        conn.get_object(
            source,
            "source.txt",
            headers={"X-Run-Storlet": PROBE, "X-Storlet-Extra-Resources": resources},
        )
    status, kind, reason = failure(err.value)
    # The caller's to split: a refusal, naming the bound.
    assert (status, kind) == (422, protocol.REFUSED)
    assert "over the %d bytes a sandbox receives" % protocol.AGENT_DATAGRAM_LIMIT in reason, reason
    # The same account's sandbox answers the next request.
    _, body = conn.get_object(
        source,
        "source.txt",
        headers={"X-Run-Storlet": PROBE, "X-Storlet-Extra-Resources": "/%s/r0.txt" % source},
    )
    assert body


def test_a_storlet_that_reads_none_of_its_inputs_leaves_the_proxy_idle(cluster, conn, source):
    # Upstream's writer retried a pipe whose reader had gone as if it were
    # full: each unread input kept a proxy worker's CPU busy, in the end
    # forever.  A refusal at the first of many inputs is the common case.
    for i in range(4):
        conn.put_object(source, "big%d" % i, b"x" * (4 << 20))
    resources = ",".join("/%s/big%d" % (source, i) for i in range(4))
    workers = children(cluster.status()["proxy-server"])
    assert workers
    for _ in range(3):
        with pytest.raises(ClientException) as err:
            conn.get_object(
                source,
                "big0",
                headers={
                    "X-Run-Storlet": RAISER,
                    "X-Storlet-Parameter-1": "read:none",
                    "X-Storlet-Extra-Resources": resources,
                    # Where the resources are written to pipes (an object
                    # server holding them would hand over their files).
                    "X-Storlet-Run-On-Proxy": "",
                },
            )
        assert "(ValueError: some detail)" in failure(err.value)[2], failure(err.value)
    time.sleep(1)
    before = cpu_seconds(workers)
    time.sleep(3)
    # A spinning writer takes a whole CPU: 3 s of it here.
    assert cpu_seconds(workers) - before < 1.0
    _, body = conn.get_object(source, "source.txt", headers={"X-Run-Storlet": PROBE})
    assert body
