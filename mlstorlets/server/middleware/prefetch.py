"""What a storlet GET reads from memcache, in one round trip.

Through the proxy, a storlet GET reads four memcache entries, one round
trip each: the account's info (upstream's handler checks that the account
has storlets enabled), the storlet container's info and the storlet
object's metadata (:mod:`mlstorlets.server.middleware.storlet_cache`
authorizes the HEAD of the storlet object against that container's read
ACL, then answers it), and the object's container info (the proxy's object
controller).  With one memcache server (the embedded cluster, small
clusters) they are all on it: :func:`prefetch` gets them with one
``get_multi`` and puts each where its reader looks first, the request's
``swift.infocache``, as Swift itself puts what it reads from memcache.

Nothing is read that would not have been, nor kept past the request;
what is not in memcache is left to its reader, which fetches it as before.
Swift's random skips of the info cache (``*_existence_skip_cache_pct``)
keep theirs: an info cache that skips is not prefetched.  With several
memcache servers each key lives on the server its hash names, so the reads
stay one by one.
"""

from swift.common.swob import wsgi_unquote
from swift.common.utils import cache_from_env, split_path
from swift.proxy.controllers.base import get_cache_key

from mlstorlets.server.middleware.storlet_cache import cache_key


def storlet_path(version, account, storlet_container, storlet):
    """The path of upstream's HEAD of the storlet object, as the HEAD's
    ``PATH_INFO`` has it (``make_subrequest`` unquotes it)."""
    path = "/".join(["", version, account, storlet_container, storlet])
    return wsgi_unquote(path.split("?", 1)[0])


def keys(req, storlet_container):
    """The memcache keys a storlet GET ``req`` reads, in the order Swift's
    info cache and the storlet cache name them; [] for any other request."""
    storlet = req.headers.get("X-Run-Storlet")
    if req.method != "GET" or not storlet:
        return []
    try:
        version, account, container, obj = split_path(req.path_info, 4, 4, True)
    except ValueError:
        return []
    return [
        get_cache_key(account),
        get_cache_key(account, container),
        get_cache_key(account, storlet_container),
        cache_key(storlet_path(version, account, storlet_container, storlet)),
    ]


def prefetch(req, app, storlet_container):
    """Fetch the entries a storlet GET ``req`` reads into its info cache,
    in one round trip, when memcache is one server."""
    wanted = keys(req, storlet_container)
    memcache = cache_from_env(req.environ, allow_none=True)
    if not wanted or memcache is None or len(memcache.memcache_servers) != 1:
        return
    final = getattr(app, "_pipeline_final_app", None)
    if getattr(final, "account_existence_skip_cache", 0):
        wanted[0] = None
    if getattr(final, "container_existence_skip_cache", 0):
        wanted[1] = wanted[2] = None
    infocache = req.environ.setdefault("swift.infocache", {})
    wanted = [key for key in wanted if key is not None and key not in infocache]
    if not wanted:
        return
    # None when memcache is unreachable (Swift's ring logs it): each
    # reader then finds nothing here, and asks memcache itself.
    values = memcache.get_multi(wanted, wanted[0])
    for key, value in zip(wanted, values or ()):
        if value:
            infocache[key] = value
