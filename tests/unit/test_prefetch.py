"""The proxy's storlet handler: its prefetch, a storlet GET's memcache
reads in one round trip, then found by Swift's info readers and by
storlet_cache with no trip of their own; its gateway, made only for a
storlet it runs, and its answer when it cannot run one (fake memcache and
fake Swift; tests/functional/test_storlet_cache.py runs the same path in
the real cluster)."""

import logging

import pytest
from fake_swift import FakeSwift, call
from swift.common.swob import Request
from swift.common.wsgi import make_subrequest
from swift.proxy.controllers.base import get_account_info, get_cache_key, get_container_info

from mlstorlets.sandbox import protocol
from mlstorlets.server.middleware import prefetch, storlet_cache, storlet_handler

STORLET_HEADERS = {"Content-Length": "120", "X-Timestamp": "1700000000.00000"}


class FakeMemcache(object):
    """Counts round trips; ``servers`` as Swift's ring lists them."""

    def __init__(self, servers=("127.0.0.1:11211",)):
        self.memcache_servers = list(servers)
        self.store = {
            get_cache_key("AUTH_a"): {"status": 204, "meta": {"storlet-enabled": "True"}},
            get_cache_key("AUTH_a", "photos"): {"status": 204, "read_acl": ""},
            get_cache_key("AUTH_a", "storlet"): {"status": 204, "read_acl": ".r:*"},
            storlet_cache.cache_key("/v1/AUTH_a/storlet/probe.py"): STORLET_HEADERS,
        }
        self.trips = []
        self.unreachable = False

    def get(self, key, raise_on_error=False):
        self.trips.append(("get", key))
        return self.store.get(key)

    def get_multi(self, keys, server_key):
        self.trips.append(("get_multi", tuple(keys)))
        if self.unreachable:
            return None
        return [self.store.get(k) for k in keys]


class FinalApp(object):
    account_existence_skip_cache = 0.0
    container_existence_skip_cache = 0.0
    # Swift's info readers count their cache hits with the proxy's logger.
    logger = None


class Filter(object):
    """The next filter in the pipeline, as Swift's loadapp leaves it."""

    def __init__(self, final=None):
        self._pipeline_final_app = final or FinalApp()


def storlet_get(memcache, path="/v1/AUTH_a/photos/cat.jpg", storlet="probe.py", method="GET"):
    headers = {"X-Run-Storlet": storlet} if storlet else {}
    return Request.blank(path, environ={"swift.cache": memcache}, method=method, headers=headers)


def test_a_storlet_gets_reads_come_in_one_trip():
    memcache = FakeMemcache()
    req = storlet_get(memcache)
    prefetch.prefetch(req, Filter(), "storlet")
    assert memcache.trips == [("get_multi", tuple(memcache.store))]
    assert req.environ["swift.infocache"] == memcache.store


def test_readers_then_make_no_trip_of_their_own():
    memcache = FakeMemcache()
    req = storlet_get(memcache)
    prefetch.prefetch(req, Filter(), "storlet")
    del memcache.trips[:]
    # Nothing behind them: a read that missed would reach this app.
    backend = FakeSwift()
    assert get_account_info(req.environ, backend)["meta"]["storlet-enabled"] == "True"
    assert get_container_info(req.environ, backend)["status"] == 204
    # Upstream's HEAD of the storlet object, answered by storlet_cache.
    head = make_subrequest(req.environ, "HEAD", "/v1/AUTH_a/storlet/probe.py", swift_source="ST")
    status, headers, _ = call(storlet_cache.filter_factory({})(backend), head)
    assert status == 200
    assert headers["X-Timestamp"] == STORLET_HEADERS["X-Timestamp"]
    assert memcache.trips == [] and backend.calls == []


def test_what_memcache_lacks_is_left_to_its_reader():
    memcache = FakeMemcache()
    del memcache.store[storlet_cache.cache_key("/v1/AUTH_a/storlet/probe.py")]
    req = storlet_get(memcache)
    prefetch.prefetch(req, Filter(), "storlet")
    assert (
        storlet_cache.cache_key("/v1/AUTH_a/storlet/probe.py") not in req.environ["swift.infocache"]
    )
    assert len(req.environ["swift.infocache"]) == 3


def test_what_the_request_already_holds_is_not_fetched_again():
    memcache = FakeMemcache()
    req = storlet_get(memcache)
    account = get_cache_key("AUTH_a")
    req.environ["swift.infocache"] = {account: {"status": 204, "meta": {}}}
    prefetch.prefetch(req, Filter(), "storlet")
    (trip,) = memcache.trips
    assert account not in trip[1] and len(trip[1]) == 3
    assert req.environ["swift.infocache"][account] == {"status": 204, "meta": {}}


@pytest.mark.parametrize(
    "skips, fetched",
    [
        ({"account_existence_skip_cache": 0.1}, 3),
        ({"container_existence_skip_cache": 0.1}, 2),
        ({"account_existence_skip_cache": 0.1, "container_existence_skip_cache": 0.1}, 1),
    ],
)
def test_an_info_cache_that_skips_at_random_keeps_its_skips(skips, fetched):
    final = FinalApp()
    for name, value in skips.items():
        setattr(final, name, value)
    memcache = FakeMemcache()
    req = storlet_get(memcache)
    prefetch.prefetch(req, Filter(final), "storlet")
    (trip,) = memcache.trips
    assert len(trip[1]) == fetched


@pytest.mark.parametrize(
    "memcache, req",
    [
        # Each key on the server its hash names: one trip each, as before.
        (FakeMemcache(["10.0.0.1:11211", "10.0.0.2:11211"]), None),
        (None, storlet_get(FakeMemcache(), storlet=None)),
        (None, storlet_get(FakeMemcache(), method="PUT")),
        (None, storlet_get(FakeMemcache(), path="/v1/AUTH_a/photos")),
    ],
)
def test_nothing_is_prefetched_for_other_requests_or_several_servers(memcache, req):
    if req is None:
        req = storlet_get(memcache)
    prefetch.prefetch(req, Filter(), "storlet")
    assert req.environ["swift.cache"].trips == []
    assert not req.environ.get("swift.infocache")


def test_an_unreachable_memcache_leaves_the_reads_to_their_readers():
    memcache = FakeMemcache()
    memcache.unreachable = True
    req = storlet_get(memcache)
    prefetch.prefetch(req, Filter(), "storlet")
    assert req.environ["swift.infocache"] == {}


@pytest.mark.parametrize("storlet", ["probe.py", "a b.py", "x%41.py", "p.py?x=1"])
def test_the_storlets_key_is_the_one_of_upstreams_head(storlet):
    # verify_access_to_storlet joins the header into a path and passes it
    # to make_subrequest; storlet_cache keys on that request's path.
    spath = "/".join(["", "v1", "AUTH_a", "storlet", storlet])
    head = make_subrequest({}, "HEAD", spath, swift_source="ST")
    assert prefetch.storlet_path("v1", "AUTH_a", "storlet", storlet) == head.path_info


def test_the_proxys_handler_prefetches_before_upstreams_first_read(monkeypatch):
    seen = []

    def stop(req, app, storlet_container):
        seen.append((req, app, storlet_container))
        raise RuntimeError("prefetched")

    monkeypatch.setattr(storlet_handler, "prefetch", stop)
    handler = storlet_handler.handler_for({"execution_server": "proxy"})
    req = storlet_get(FakeMemcache())
    app = Filter()
    with pytest.raises(RuntimeError, match="prefetched"):
        handler(req, {"storlet_container": "tools"}, {}, app, None)
    assert seen == [(req, app, "tools")]


def test_the_proxy_makes_a_gateway_only_for_a_storlet_it_runs():
    made = []

    class Gateway(object):
        request_class = object

        def __init__(self, conf, logger, scope):
            made.append(scope)

    handler = storlet_handler.handler_for({"execution_server": "proxy"})
    memcache = FakeMemcache()
    req = storlet_get(memcache)
    conf = {"gateway_module": Gateway, "execution_server": "proxy"}
    proxy = handler(req, conf, {}, Filter(), logging.getLogger("t"))
    # Prefetched: upstream found the account's storlets enabled.
    assert memcache.trips == [("get_multi", tuple(memcache.store))]
    assert made == []
    assert proxy.gateway is proxy.gateway
    assert made == [proxy.scope]


def test_a_storlet_the_proxy_could_not_run_is_answered_in_the_protocol():
    """Not upstream's 503, which storlet_copy cannot tell from Swift's own
    when no object server answered."""
    from storlets.gateway.common.exceptions import StorletRuntimeException
    from swift.common.swob import Response

    class Gateway(object):
        request_class = staticmethod(lambda *args, **kwargs: args)

        def __init__(self, conf, logger, scope):
            pass

        def invocation_flow(self, sreq):
            raise StorletRuntimeException("the sandbox did not start")

    handler = storlet_handler.handler_for({"execution_server": "proxy"})
    req = storlet_get(FakeMemcache())
    conf = {"gateway_module": Gateway, "execution_server": "proxy"}
    proxy = handler(req, conf, {}, Filter(), logging.getLogger("t"))
    closed = []

    class Input(list):
        def close(self):
            closed.append(True)

    answer = proxy.apply_storlet(Response(app_iter=Input([b"input"])))
    # The input is a backend request: closed, not left to the garbage
    # collector.
    assert closed
    assert answer.status_int == 502
    assert answer.headers[protocol.ERROR_HEADER] == protocol.FAILED
    assert "before producing output" in protocol.unquote_reason(
        answer.headers[protocol.REASON_HEADER]
    )


def test_names_outside_ascii_are_keyed_as_swifts_readers_key_them():
    memcache = FakeMemcache()
    memcache.store[get_cache_key("AUTH_a", "café")] = {"status": 204, "read_acl": ""}
    req = storlet_get(memcache, path="/v1/AUTH_a/caf%C3%A9/cat.jpg")
    prefetch.prefetch(req, Filter(), "storlet")
    del memcache.trips[:]
    info = get_container_info(req.environ, FakeSwift())
    assert info["status"] == 204 and memcache.trips == []


def test_a_get_with_a_body_input_reads_memcache_as_before():
    # Its storlet is authorized again once the body is in, however long
    # the client takes: with what memcache holds then.
    memcache = FakeMemcache()
    req = storlet_get(memcache)
    req.headers[protocol.BODY_INPUT_HEADER] = "true"
    prefetch.prefetch(req, Filter(), "storlet")
    assert memcache.trips == [] and not req.environ.get("swift.infocache")


class Broken(FakeMemcache):
    def get_multi(self, keys, server_key):
        raise ValueError("a bug of the cache's")


@pytest.mark.parametrize("cache", [object(), Broken()])
def test_a_cache_unlike_swifts_ring_never_fails_the_request(cache):
    req = storlet_get(cache)
    prefetch.prefetch(req, Filter(), "storlet")
    assert not req.environ.get("swift.infocache")


# -- the HEAD of the storlet object ------------------------------------------
PROBE = "/v1/AUTH_a/storlet/probe.py"
PROBE_HEADERS = dict(STORLET_HEADERS, **{"X-Object-Meta-Storlet-Main": "probe.ProbeStorlet"})


def pipeline_below_the_handler(backend):
    """The proxy's filters after upstream's handler, as node.py puts them."""
    from mlstorlets.server.middleware import extra_resources, storlet_origin

    cache = storlet_cache.filter_factory({})(backend)
    return storlet_origin.filter_factory({"execution_server": "proxy"})(
        extra_resources.filter_factory({})(cache)
    )


def proxy_handler(memcache, app, authorize=None):
    req = storlet_get(memcache)
    if authorize is not None:
        req.environ["swift.authorize"] = authorize
    handler = storlet_handler.handler_for({"execution_server": "proxy"})
    conf = {"gateway_module": NoGateway, "execution_server": "proxy"}
    return handler(req, conf, {}, app, logging.getLogger("t"))


class NoGateway(object):
    """A proxy that runs no storlet makes no gateway."""

    request_class = object


def test_the_storlets_head_is_answered_from_the_cache_without_a_subrequest(monkeypatch):
    from storlets.swift_middleware.handlers.proxy import StorletProxyHandler

    from mlstorlets.server.middleware.storlet_origin import StorletOriginMiddleware

    memcache = FakeMemcache()
    memcache.store[storlet_cache.cache_key(PROBE)] = PROBE_HEADERS
    backend = FakeSwift()
    app = pipeline_below_the_handler(backend)
    down = []
    passed = StorletOriginMiddleware.__call__
    monkeypatch.setattr(
        StorletOriginMiddleware,
        "__call__",
        lambda self, env, start_response: down.append(env) or passed(self, env, start_response),
    )
    asked = []
    proxy = proxy_handler(memcache, app, authorize=lambda req: asked.append(req.path))
    del memcache.trips[:]
    params = proxy.verify_access_to_storlet()
    assert params == {
        "Main": "probe.ProbeStorlet",
        "Content-Length": "120",
        "X-Timestamp": "1700000000.00000",
    }
    # Authorized as the proxy authorizes the HEAD; no trip to memcache or
    # to the proxy.
    assert asked == [PROBE]
    assert memcache.trips == [] and backend.calls == [] and down == []
    # What upstream's subrequest down the same filters gives.
    assert StorletProxyHandler.verify_access_to_storlet(proxy) == params
    assert len(down) == 1


def test_a_caller_who_may_not_read_the_storlet_takes_upstreams_way():
    from swift.common.swob import HTTPException, HTTPForbidden

    memcache = FakeMemcache()
    backend = FakeSwift()
    # What the proxy answers a HEAD its caller may not make.
    backend.register("HEAD", PROBE, "403 Forbidden")
    proxy = proxy_handler(
        memcache, pipeline_below_the_handler(backend), authorize=lambda req: HTTPForbidden()
    )
    with pytest.raises(HTTPException) as refused:
        proxy.verify_access_to_storlet()
    assert refused.value.status_int == 401
    assert [(method, path) for method, path, _, _ in backend.calls] == [("HEAD", PROBE)]


def test_a_storlet_not_in_the_cache_is_asked_of_the_proxy_and_cached():
    memcache = FakeMemcache()
    del memcache.store[storlet_cache.cache_key(PROBE)]
    memcache.set = lambda key, value, time, raise_on_error: memcache.store.__setitem__(key, value)
    backend = FakeSwift()
    backend.register("HEAD", PROBE, "200 OK", PROBE_HEADERS)
    proxy = proxy_handler(memcache, pipeline_below_the_handler(backend))
    assert proxy.verify_access_to_storlet()["Main"] == "probe.ProbeStorlet"
    assert len(backend.calls) == 1
    assert memcache.store[storlet_cache.cache_key(PROBE)]["X-Timestamp"] == "1700000000.00000"


def test_only_filters_that_pass_the_head_on_stand_between_handler_and_cache():
    from mlstorlets.server.middleware import storlet_origin

    backend = FakeSwift()
    app = pipeline_below_the_handler(backend)
    assert isinstance(storlet_handler.storlet_cache_of(app), storlet_cache.StorletCacheMiddleware)

    class Other(object):
        def __init__(self, app):
            self.app = app

    other = storlet_origin.filter_factory({"execution_server": "proxy"})(Other(app.app.app))
    assert storlet_handler.storlet_cache_of(other) is None
    assert storlet_handler.storlet_cache_of(backend) is None


def test_a_handlers_path_follows_its_requests_path():
    proxy = proxy_handler(FakeMemcache(), Filter())
    assert proxy.path == "/v1/AUTH_a/photos/cat.jpg"
    proxy.request.path_info = "/v1/AUTH_a/photos/caf\xc3\xa9 2.jpg"
    assert proxy.path == "/v1/AUTH_a/photos/caf%C3%A9%202.jpg"


def test_storlet_parameters_are_read_from_their_headers_as_upstream_reads_them():
    from storlets.swift_middleware.handlers.base import StorletBaseHandler

    proxy = proxy_handler(FakeMemcache(), Filter())
    for name, value in (
        ("X-Storlet-Parameter-1", "size:%2032"),
        ("x-storlet-parameter-b", "mode:a:b"),
        ("X-Storlet-Parameters", "x:y"),
        ("X-Storlet-Other", "not:one"),
    ):
        proxy.request.headers[name] = value
    proxy.request.params.clear()
    proxy._update_storlet_parameters_from_headers()
    assert proxy.request.params == {"size": " 32", "mode": "a:b", "x": "y"}
    # Upstream's walk over the headers finds the same.
    proxy.request.params.clear()
    StorletBaseHandler._update_storlet_parameters_from_headers(proxy)
    assert proxy.request.params == {"size": " 32", "mode": "a:b", "x": "y"}


def test_a_storlet_parameter_without_a_colon_is_refused_as_upstream_refuses_it():
    proxy = proxy_handler(FakeMemcache(), Filter())
    proxy.request.headers["X-Storlet-Parameter-1"] = "no-colon"
    with pytest.raises(ValueError):
        proxy._update_storlet_parameters_from_headers()
