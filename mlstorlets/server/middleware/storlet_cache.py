"""Keep storlet objects' metadata in memcache, as Swift keeps container info.

Upstream's storlet middleware HEADs the storlet object on every invocation
(``verify_access_to_storlet``).  The HEAD tells it that the storlet exists,
its parameters (``X-Object-Meta-Storlet-*``), and its length and timestamp
(which tell the sandbox whether its copy of the storlet is current); and,
since it runs under the caller's authorization, that the caller may read
the storlet.  It is a round trip to an object server on every invocation.

This filter sits right after ``storlet_handler`` in the proxy and answers
those HEADs (``swift.source`` ``ST``, an object of the storlet container)
from the cluster's memcache:

* the right to read is never cached: each HEAD is authorized as the proxy
  authorizes an object HEAD, against the container's read ACL from Swift's
  own container info (itself cached for ``recheck_container_existence``).
  A HEAD that is not authorized goes on to the proxy, which refuses it as
  before;
* what is cached is the object's metadata, under a key made of the whole
  path (account, container, object): an entry belongs to one account and
  says nothing about who may read it;
* the proxy's storlet handler asks :meth:`cached_headers` directly, with
  the HEAD it would send down the pipeline (the same authorization, the
  same answer), and sends it down only when the cache cannot answer;
* an entry the proxy's storlet handler prefetched for the request
  (:mod:`mlstorlets.server.middleware.prefetch`) is read from its info
  cache, with no round trip of its own;
* only a 200 is cached, for ``cache_time`` seconds (default 10; 0 turns the
  cache off).  A PUT, POST or DELETE of a storlet object through a proxy
  sharing the memcache drops its entry at once; a change made any other way
  is seen within ``cache_time``.

Options (``[filter:storlet_cache]``): ``cache_time``, and
``storlet_container`` (default ``storlet``) as ``storlet_handler`` has it.
"""

from swift.common.memcached import MemcacheConnectionError
from swift.common.swob import Request, Response
from swift.common.utils import cache_from_env, get_logger, split_path
from swift.proxy.controllers.base import get_container_info

DEFAULT_CACHE_TIME = 10
# The swift.source of upstream's storlet middleware's subrequests.
STORLET_SOURCE = "ST"
KEY_PREFIX = "mlstorlets/storlet-metadata/"
# Headers of one response, not of the object.
_TRANSIENT = frozenset(("date", "x-trans-id", "x-openstack-request-id"))


def cache_key(path):
    """The memcache key of the storlet object at ``path`` (``/v1/a/c/o``)."""
    return KEY_PREFIX + path


class StorletCacheMiddleware(object):
    def __init__(self, app, conf, logger=None):
        self.app = app
        self.logger = logger or get_logger(conf, log_route="storlet_cache")
        self.cache_time = float(conf.get("cache_time", DEFAULT_CACHE_TIME))
        if self.cache_time < 0:
            raise ValueError("cache_time must be 0 or more, not %r" % conf.get("cache_time"))
        self.storlet_container = conf.get("storlet_container", "storlet")

    def __call__(self, env, start_response):
        req = Request(env)
        if not self.cache_time or not self._is_storlet_object(req):
            return self.app(env, start_response)
        memcache = cache_from_env(env, allow_none=True)
        if memcache is None:
            return self.app(env, start_response)
        key = cache_key(req.path_info)
        if req.method != "HEAD" or env.get("swift.source") != STORLET_SOURCE:
            if req.method not in ("GET", "HEAD"):
                # Before and after: a HEAD between the two would cache what
                # the write is replacing.
                self._forget(memcache, key)
                try:
                    return self.app(env, start_response)
                finally:
                    self._forget(memcache, key)
            return self.app(env, start_response)
        if self._refused(req):
            return self.app(env, start_response)
        headers = self._cached(req, memcache, key)
        if headers is not None:
            return Response(status=200, headers=headers, request=req)(env, start_response)
        resp = req.get_response(self.app)
        if resp.status_int == 200:
            self._set(
                memcache,
                key,
                {k: v for k, v in resp.headers.items() if k.lower() not in _TRANSIENT},
            )
        return resp(env, start_response)

    def cached_headers(self, req):
        """The headers this filter answers the storlet HEAD ``req`` with
        from the cache, or None when the proxy is to answer it: the cache
        is off or has no entry, or the caller may not read the storlet (the
        proxy then refuses it as before)."""
        if not self.cache_time:
            return None
        memcache = cache_from_env(req.environ, allow_none=True)
        if memcache is None or self._refused(req):
            return None
        return self._cached(req, memcache, cache_key(req.path_info))

    def _cached(self, req, memcache, key):
        # Prefetched with the rest of the invocation's reads, or not.
        headers = req.environ.get("swift.infocache", {}).get(key)
        if headers is None:
            headers = self._get(memcache, key)
        return headers

    def _is_storlet_object(self, req):
        try:
            _version, _account, container, obj = split_path(req.path_info, 4, 4, True)
        except ValueError:
            return False
        return container == self.storlet_container and bool(obj)

    def _refused(self, req):
        """What the proxy's object controller would answer before reading
        the object: an error for a missing container or a refused caller,
        else None."""
        info = get_container_info(req.environ, self.app, swift_source="MLSC")
        if not 200 <= info.get("status", 0) < 300:
            return True
        authorize = req.environ.get("swift.authorize")
        if authorize is None:
            return False
        req.acl = info.get("read_acl")
        return bool(authorize(req))

    def _get(self, memcache, key):
        try:
            return memcache.get(key, raise_on_error=True)
        except MemcacheConnectionError:
            self.logger.warning("memcache unreachable: %s not cached", key)
            return None

    def _set(self, memcache, key, headers):
        try:
            memcache.set(key, headers, time=self.cache_time, raise_on_error=True)
        except MemcacheConnectionError:
            self.logger.warning("memcache unreachable: %s not cached", key)

    @staticmethod
    def _forget(memcache, key):
        # MemcacheRing.delete reports no error: an unreachable memcache
        # keeps no entry to forget anyway.
        memcache.delete(key)


def filter_factory(global_conf, **local_conf):
    conf = dict(global_conf, **local_conf)

    def storlet_cache_filter(app):
        return StorletCacheMiddleware(app, conf)

    return storlet_cache_filter
