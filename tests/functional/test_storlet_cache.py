"""The proxy's cache of storlet metadata, in the real cluster.

mlstorlets.server.middleware.storlet_cache answers upstream's HEAD of the
storlet object from memcache.  These tests read and write the cluster's own
memcached to show that the entry is used, that a storlet replaced or
deleted through the proxy is seen at once, that a change the proxy did not
see lasts at most ``cache_time``, and that the right to run is checked on
every request.
"""

import time
import uuid

import pytest
from swift.common.memcached import MemcacheRing
from swift.common.utils import get_logger
from swiftclient.client import get_object
from swiftclient.exceptions import ClientException

from mlstorlets.server.middleware.storlet_cache import cache_key
from mlstorlets.server.node import STORLET_CACHE_TIME

VERSION = """
class Version(object):
    def __init__(self, logger):
        pass

    def __call__(self, in_files, out_files, params):
        in_files[0].read()
        out_files[0].set_metadata({})
        out_files[0].write(b'%s')
        out_files[0].close()
"""


@pytest.fixture
def name():
    """A storlet name of one test's own: sandboxes keep what they ran."""
    return "cache%s.py" % uuid.uuid4().hex[:12]


@pytest.fixture
def memcache(cluster):
    return MemcacheRing(
        ["127.0.0.1:%d" % cluster.layout.memcached_port], logger=get_logger({}, log_route="test")
    )


def put_storlet(conn, name, version):
    conn.put_object(
        "storlet",
        name,
        VERSION % version,
        headers={
            "X-Object-Meta-Storlet-Language": "Python",
            "X-Object-Meta-Storlet-Interface-Version": "1.0",
            "X-Object-Meta-Storlet-Object-Metadata": "no",
            "X-Object-Meta-Storlet-Main": name[:-3] + ".Version",
        },
    )


def run(conn, container, name):
    _headers, body = conn.get_object(container, "x", headers={"X-Run-Storlet": name})
    return body


def storlet_path(conn, name):
    account = conn.url.rstrip("/").rsplit("/", 1)[-1]
    return "/v1/%s/storlet/%s" % (account, name)


@pytest.fixture
def cached(conn, container, memcache, name):
    """Version 'one' of the storlet, run once: its memcache key."""
    conn.put_object(container, "x", b"data")
    put_storlet(conn, name, "one")
    try:
        assert run(conn, container, name) == b"one"
        yield cache_key(storlet_path(conn, name))
    finally:
        try:
            conn.delete_object("storlet", name)
        except ClientException as err:
            if err.http_status != 404:
                raise


def test_replaced_and_deleted_storlets_are_seen_at_once(conn, container, memcache, name, cached):
    assert memcache.get(cached)["X-Object-Meta-Storlet-Main"] == name[:-3] + ".Version"
    put_storlet(conn, name, "two")
    assert memcache.get(cached) is None
    assert run(conn, container, name) == b"two"
    conn.delete_object("storlet", name)
    with pytest.raises(ClientException) as refused:
        run(conn, container, name)
    assert refused.value.http_status == 401


def test_a_new_version_of_the_same_size_is_run_everywhere(conn, container, name, cached):
    """Every object server runs the new version once it is uploaded, even
    one whose sandbox holds the old one (upstream compares the two copies'
    times the wrong way round, so one of the same size stayed)."""
    for _ in range(12):  # the old version on every replica's server
        assert run(conn, container, name) == b"one"
    put_storlet(conn, name, "two")
    assert [run(conn, container, name) for _ in range(12)] == [b"two"] * 12


def test_a_change_the_proxy_did_not_see_lasts_at_most_cache_time(
    conn, container, memcache, name, cached
):
    old = memcache.get(cached)
    put_storlet(conn, name, "two")
    # As if the new version had been written behind this proxy's back: its
    # memcache still holds the old version's metadata.
    memcache.set(cached, old, time=float(STORLET_CACHE_TIME))
    changed = time.monotonic()
    limit = float(STORLET_CACHE_TIME) + 5
    while run(conn, container, name) != b"two":
        assert time.monotonic() - changed < limit, "the old version outlived cache_time"
        time.sleep(0.5)
    # However the storlet was run meanwhile, the entry is gone by then.
    time.sleep(max(0, changed + float(STORLET_CACHE_TIME) + 1.5 - time.monotonic()))
    entry = memcache.get(cached)
    assert entry is None or entry["X-Timestamp"] != old["X-Timestamp"]


def test_the_right_to_run_is_checked_on_every_request(
    conn, other_conn, container, memcache, name, cached
):
    """A user who may read the data but not this account's storlets is
    refused even though the storlet's entry is cached: the HEAD is
    authorized before the cache answers."""
    assert memcache.get(cached) is not None
    conn.post_container(container, {"X-Container-Read": "other:admin"})
    url, _token = conn.get_auth()
    _url, other_token = other_conn.get_auth()
    _headers, body = get_object(url, other_token, container, "x")
    assert body == b"data"
    with pytest.raises(ClientException) as refused:
        get_object(url, other_token, container, "x", headers={"X-Run-Storlet": name})
    assert refused.value.http_status == 401
