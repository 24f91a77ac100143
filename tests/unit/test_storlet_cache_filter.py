"""storlet_cache against a fake Swift app and a fake memcache (no cluster).

tests/functional/test_storlet_cache.py runs the same filter in the real
cluster, behind upstream's storlet middleware.
"""

import pytest
from fake_swift import FakeSwift, call
from swift.common.swob import HTTPForbidden, Request

from mlstorlets.server.middleware import storlet_cache

STORLET = "/v1/AUTH_a/storlet/probe.py"
OBJECT_HEADERS = {
    "Content-Length": "120",
    "X-Timestamp": "1700000000.00000",
    "X-Object-Meta-Storlet-Main": "probe.Probe",
    "Etag": "e1",
    "X-Trans-Id": "tx1",
}


class FakeMemcache(object):
    def __init__(self):
        self.store = {}
        self.times = {}

    def get(self, key, raise_on_error=False):
        return self.store.get(key)

    def set(self, key, value, serialize=True, time=0, min_compress_len=0, raise_on_error=False):
        self.store[key] = value
        self.times[key] = time

    def delete(self, key, server_key=None):
        self.store.pop(key, None)

    def storlets(self):
        """The entries of storlet_cache (Swift's info caches aside)."""
        return {k: v for k, v in self.store.items() if k.startswith(storlet_cache.KEY_PREFIX)}


@pytest.fixture
def swift():
    fake = FakeSwift()
    for account in ("AUTH_a", "AUTH_b"):
        fake.register("HEAD", "/v1/%s" % account, "204 No Content")
        fake.register(
            "HEAD", "/v1/%s/storlet" % account, "204 No Content", {"X-Container-Read": ".r:*"}
        )
        fake.register("HEAD", "/v1/%s/storlet/probe.py" % account, "200 OK", OBJECT_HEADERS)
    yield fake
    assert fake.all_closed, "a response body was left unclosed"


@pytest.fixture
def memcache():
    return FakeMemcache()


def app(swift, **conf):
    return storlet_cache.filter_factory({}, **conf)(swift)


def head(memcache, path=STORLET, source="ST", authorize=None, method="HEAD"):
    environ = {"swift.cache": memcache, "swift.source": source}
    if authorize is not None:
        environ["swift.authorize"] = authorize
    return Request.blank(path, environ=environ, method=method)


def object_heads(swift, path=STORLET):
    return sum(1 for method, p, _h, _b in swift.calls if method == "HEAD" and p == path)


def test_the_second_head_comes_from_memcache(swift, memcache):
    filtered = app(swift, cache_time="7")
    first = call(filtered, head(memcache))
    second = call(filtered, head(memcache))
    assert object_heads(swift) == 1
    assert first[0] == second[0] == 200
    for name in ("Content-Length", "X-Timestamp", "Etag", "X-Object-Meta-Storlet-Main"):
        assert second[1][name] == OBJECT_HEADERS[name]
    assert "X-Trans-Id" not in memcache.store[storlet_cache.cache_key(STORLET)]
    assert memcache.times[storlet_cache.cache_key(STORLET)] == 7


def test_each_head_is_authorized_even_when_cached(swift, memcache):
    filtered = app(swift)
    call(filtered, head(memcache))  # cached by an authorized caller
    seen = []

    def refuse(req):
        seen.append(req.acl)
        return HTTPForbidden(request=req)

    swift.register("HEAD", STORLET, "403 Forbidden")
    status, _headers, _body = call(filtered, head(memcache, authorize=refuse))
    # The proxy answers the refused caller, not the cache.
    assert status == 403
    assert seen == [".r:*"]
    assert object_heads(swift) == 2


def test_an_authorized_caller_is_served_from_the_cache(swift, memcache):
    filtered = app(swift)
    call(filtered, head(memcache))
    status, _h, _b = call(filtered, head(memcache, authorize=lambda r: None))
    assert status == 200 and object_heads(swift) == 1


def test_only_a_200_is_cached(swift, memcache):
    swift.register("HEAD", STORLET, "404 Not Found")
    filtered = app(swift)
    assert call(filtered, head(memcache))[0] == 404
    assert call(filtered, head(memcache))[0] == 404
    assert object_heads(swift) == 2 and not memcache.storlets()


def test_a_missing_storlet_container_goes_to_the_proxy(swift, memcache):
    swift.register("HEAD", "/v1/AUTH_a/storlet", "404 Not Found")
    swift.register("HEAD", STORLET, "404 Not Found")
    filtered = app(swift)
    memcache.store[storlet_cache.cache_key(STORLET)] = OBJECT_HEADERS
    assert call(filtered, head(memcache))[0] == 404


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE"])
def test_a_write_of_the_storlet_forgets_it(swift, memcache, method):
    swift.register(method, STORLET, "201 Created")
    filtered = app(swift)
    call(filtered, head(memcache))
    assert memcache.storlets()
    call(filtered, head(memcache, source=None, method=method))
    assert not memcache.storlets()
    call(filtered, head(memcache))
    assert object_heads(swift) == 2


def test_entries_are_per_account(swift, memcache):
    filtered = app(swift)
    call(filtered, head(memcache))
    other = "/v1/AUTH_b/storlet/probe.py"
    call(filtered, head(memcache, path=other))
    assert object_heads(swift) == 1 and object_heads(swift, other) == 1
    assert len(memcache.storlets()) == 2


def test_a_clients_own_head_is_not_served_from_the_cache(swift, memcache):
    filtered = app(swift)
    call(filtered, head(memcache))
    call(filtered, head(memcache, source=None))
    assert object_heads(swift) == 2


def test_other_containers_are_left_alone(swift, memcache):
    path = "/v1/AUTH_a/photos/probe.py"
    swift.register("HEAD", path, "200 OK", OBJECT_HEADERS)
    filtered = app(swift)
    call(filtered, head(memcache, path=path))
    call(filtered, head(memcache, path=path))
    assert object_heads(swift, path) == 2 and not memcache.storlets()


def test_cache_time_0_turns_it_off(swift, memcache):
    filtered = app(swift, cache_time="0")
    call(filtered, head(memcache))
    call(filtered, head(memcache))
    assert object_heads(swift) == 2 and not memcache.storlets()


def test_without_memcache_every_head_goes_through(swift):
    filtered = app(swift)
    for _ in range(2):
        req = Request.blank(STORLET, environ={"swift.source": "ST"}, method="HEAD")
        assert call(filtered, req)[0] == 200
    assert object_heads(swift) == 2


def test_a_negative_cache_time_is_refused(swift):
    with pytest.raises(ValueError, match="cache_time"):
        app(swift, cache_time="-1")
