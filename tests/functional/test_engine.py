"""The storlets engine on the embedded cluster, through python-swiftclient.

Every test here talks to real Swift servers running the upstream storlet
middleware and the bubblewrap sandbox gateway, with the project's probe
storlet (tests/storlets/probe.py).
"""

import os
import subprocess
import time

import pytest
from support import data_files
from swiftclient.exceptions import ClientException

PROBE = "probe.py"
META = "x-object-meta-"


def run(conn, container, obj, headers=None, query=None):
    headers = dict({"X-Run-Storlet": PROBE}, **(headers or {}))
    return conn.get_object(container, obj, headers=headers, query_string=query)


@pytest.fixture
def source(conn, container):
    conn.put_object(
        container, "source.txt", b"hello storlets", headers={"X-Object-Meta-Name": "obama"}
    )
    return "source.txt"


def test_get_runs_on_an_object_server(conn, container, source):
    headers, body = run(conn, container, source)
    assert body == b"hello storlets"
    assert headers[META + "name"] == "obama"
    # The sandbox's host name says which server started it.
    assert headers[META + "probe-host"].startswith("object-server-")


def test_run_on_proxy(conn, container, source):
    headers, body = run(conn, container, source, {"X-Storlet-Run-On-Proxy": ""})
    assert body == b"hello storlets"
    assert headers[META + "probe-host"] == "proxy"


@pytest.mark.parametrize("on_proxy", [False, True])
def test_an_output_is_answered_with_its_length(conn, container, source, on_proxy):
    headers, body = run(conn, container, source, {"X-Storlet-Run-On-Proxy": ""} if on_proxy else {})
    assert body == b"hello storlets"
    # The agent declares every output's length: not chunked.
    assert headers["content-length"] == str(len(body))
    assert "transfer-encoding" not in headers
    assert not [name for name in headers if name.startswith("x-backend")]


@pytest.mark.parametrize("on_proxy", [False, True])
def test_metadata_is_text_in_the_storlet_and_utf8_on_the_wire(conn, container, on_proxy):
    conn.put_object(container, "josé.txt", b"x", headers={"X-Object-Meta-Name": "José Ñúñez"})
    headers, _ = run(
        conn, container, "josé.txt", {"X-Storlet-Run-On-Proxy": ""} if on_proxy else {}
    )
    # Ten characters, though twelve bytes: the storlet read text.
    assert "Name:10" in headers[META + "probe-lengths"].split(",")
    # swiftclient decodes the header's UTF-8: the storlet's text comes back.
    assert headers[META + "name"] == "José Ñúñez"
    conn.put_object(
        container,
        "copy-josé.txt",
        b"",
        headers={"X-Run-Storlet": PROBE, "X-Copy-From": "%s/josé.txt" % container},
    )
    assert conn.head_object(container, "copy-josé.txt")[META + "name"] == "José Ñúñez"


def test_parameters_in_headers_and_query(conn, container, source):
    headers, _ = run(conn, container, source, {"X-Storlet-Parameter-1": "size:96"})
    assert headers[META + "probe-params"] == "size=96"
    headers, _ = run(conn, container, source, query="size=64&margin=0.2")
    assert headers[META + "probe-params"] == "margin=0.2,size=64"


def test_put_with_copy_from_writes_the_output_in_the_cluster(conn, container, source):
    conn.put_object(
        container,
        "out.txt",
        b"",
        headers={
            "X-Run-Storlet": PROBE,
            "X-Copy-From": "%s/%s" % (container, source),
            "X-Object-Meta-Extra": "kept",
        },
    )
    headers, body = conn.get_object(container, "out.txt")
    assert body == b"hello storlets"
    assert headers[META + "probe-host"].startswith("object-server-")
    assert headers[META + "name"] == "obama"
    assert headers[META + "extra"] == "kept"
    # The protocol's own key is never stored.
    assert META + "storlet-output-length" not in headers


def test_copy_with_destination(conn, container, source):
    conn.copy_object(
        container, source, "/%s/copied.txt" % container, headers={"X-Run-Storlet": PROBE}
    )
    headers, body = conn.get_object(container, "copied.txt")
    assert body == b"hello storlets"
    assert headers[META + "probe-inputs"] == "1"


def test_extra_resources_give_several_inputs(conn, container, source):
    conn.put_object(container, "second.txt", b" and more")
    resources = {"X-Storlet-Extra-Resources": "/%s/second.txt" % container}
    # On an object server, which holds both (3 replicas on 3 nodes).
    headers, body = run(conn, container, source, resources)
    assert body == b"hello storlets and more"
    assert headers[META + "probe-inputs"] == "2"
    assert headers[META + "probe-host"].startswith("object-server-")
    # Or on the proxy, when asked.
    headers, body = run(conn, container, source, dict(resources, **{"X-Storlet-Run-On-Proxy": ""}))
    assert body == b"hello storlets and more"
    assert headers[META + "probe-host"] == "proxy"


def test_a_storlet_has_no_network(cluster, conn, container, source):
    port = cluster.layout.proxy_port
    headers, _ = run(conn, container, source, query="action=connect&host=127.0.0.1&port=%d" % port)
    assert headers[META + "probe-result"].startswith("denied")
    # The same connection from here works: it is the sandbox that has none.
    conn.head_account()


@pytest.mark.parametrize(
    "path", ["/etc/storlet-was-here", "/usr/x", "/var/lib/storlets/x", "/mnt/x", "/x"]
)
def test_a_storlet_cannot_write_outside_its_scratch_space(conn, container, source, path):
    headers, _ = run(conn, container, source, query="action=write&path=" + path)
    assert headers[META + "probe-result"].startswith("denied")
    assert not os.path.exists(path)


def test_a_storlet_may_write_its_private_tmp(conn, container, source):
    headers, _ = run(conn, container, source, query="action=write&path=/tmp/scratch")
    assert headers[META + "probe-result"] == "allowed"
    assert not os.path.exists("/tmp/scratch")


def cached_bytes(path):
    """How much of the file at ``path`` is in the page cache."""
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", path],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out)


def dropped_after(paths, get):
    """Which of the files at ``paths``, all read into the page cache
    first, have none of their pages left after ``get()``."""
    for path in paths:
        with open(path, "rb") as f:
            f.read()
    kept = [bool(cached_bytes(path)) for path in paths]
    get()
    # A server drops them once it closed its answer, which the client may
    # have read whole a moment before.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = [bool(cached_bytes(path)) for path in paths]
        if now != kept:
            break
        time.sleep(0.05)
    return [not cached_bytes(path) for path in paths]


def test_a_storlet_leaves_the_page_cache_as_a_plain_get_does(cluster, conn, container, source):
    # Swift's object server drops an object's pages once an authenticated
    # GET read them (keep_cache_private is false): so does its storlet
    # middleware once the storlet read the object through the sandbox.
    account = conn.url.rstrip("/").rsplit("/", 1)[1]
    paths = data_files(cluster, account, container, source)
    assert paths
    # The replica that answered (any one: the proxy shuffles them) has
    # none left, on a file system whose pages can be dropped (not tmpfs).
    assert dropped_after(paths, lambda: conn.get_object(container, source)).count(True) == 1
    assert dropped_after(paths, lambda: run(conn, container, source)).count(True) == 1


def test_a_storlet_cannot_read_swift_data(cluster, conn, container, source):
    devices = cluster.layout.devices(0)
    # Sanity: the data is really there, outside the sandbox.
    assert any(f.endswith(".data") for _, _, files in os.walk(devices) for f in files)
    for path in (devices, cluster.layout.conf("proxy-server"), cluster.layout.record):
        headers, _ = run(conn, container, source, query="action=read&path=" + path)
        assert headers[META + "probe-result"].startswith("denied"), path


def test_a_failing_storlet_gives_an_error_and_writes_nothing(conn, container, source):
    for action in ("fail", "fail-late"):
        with pytest.raises(ClientException) as err:
            conn.put_object(
                container,
                "out-" + action,
                b"",
                headers={
                    "X-Run-Storlet": PROBE,
                    "X-Copy-From": "%s/%s" % (container, source),
                    "X-Storlet-Parameter-1": "action:" + action,
                },
            )
        assert err.value.http_status == 502
        assert b"nothing was" in err.value.http_response_content
        assert source.encode() in err.value.http_response_content
        with pytest.raises(ClientException) as missing:
            conn.head_object(container, "out-" + action)
        assert missing.value.http_status == 404
    # The source is untouched and the storlet still serves.
    assert conn.get_object(container, source)[1] == b"hello storlets"
    assert run(conn, container, source)[1] == b"hello storlets"


def test_failing_storlets_do_not_take_object_servers_out_of_service(conn, container, source):
    # Swift's proxy stops using a node after ten errors in a minute; a
    # storlet's failure must not count as the node's.
    for _ in range(12):
        with pytest.raises(ClientException) as err:
            run(conn, container, source, query="action=fail")
        assert err.value.http_status == 502
        # What the storlet raised reaches the client, not the node's count.
        assert b"RuntimeError: probe asked to fail" in err.value.http_response_content
    assert run(conn, container, source)[1] == b"hello storlets"
    conn.put_object(container, "after.txt", b"still writable")
    assert conn.get_object(container, "after.txt")[1] == b"still writable"


def test_one_accounts_storlets_are_not_anothers(conn, other_conn):
    other_conn.put_container("mine")
    other_conn.put_object("mine", "x.txt", b"data of other")
    # The probe is deployed in the main account only.
    with pytest.raises(ClientException) as err:
        other_conn.get_object("mine", "x.txt", headers={"X-Run-Storlet": PROBE})
    assert err.value.http_status == 401
    # ... and the other account cannot read the main account's storlets.
    with pytest.raises(ClientException) as err:
        other_conn.get_object("storlet", PROBE)
    assert err.value.http_status in (401, 403, 404)
    other_conn.delete_object("mine", "x.txt")


def test_the_swift_cli_downloads_a_storlets_output(cluster, conn, container, source):
    """The swift CLI checks a body against its ETag: a storlet's output
    (here, the source and a second object) must not carry the source's."""
    import subprocess
    import sys

    conn.put_object(container, "second.txt", b" and more")
    env = dict(os.environ, **cluster.env())
    swift = os.path.join(os.path.dirname(sys.executable), "swift")
    result = subprocess.run(
        [
            swift,
            "download",
            container,
            source,
            "-o",
            "-",
            "-H",
            "X-Run-Storlet: %s" % PROBE,
            "-H",
            "X-Storlet-Extra-Resources: /%s/second.txt" % container,
        ],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello storlets and more"
