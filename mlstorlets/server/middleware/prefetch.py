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

A reader finds the entry as it would have found it in memcache a moment
later: each is read once, at the start of the request, and kept no longer
than the request.  A GET with a body input is left alone: its storlet is
authorized again once the body is in, which may take as long as the
client takes to send it.  What is not in memcache is left to its reader,
which fetches it as before; a request refused before a reader runs has
read the entry for nothing.  Swift's random skips of the info cache
(``*_existence_skip_cache_pct``) keep theirs: an info cache that skips is
not prefetched.  With several memcache servers each key lives on the
server its hash names, so the reads stay one by one.  Swift counts a
prefetched entry as an ``infocache`` hit of its info cache, not a memcache
one.
"""

from swift.common.swob import wsgi_to_str, wsgi_unquote
from swift.common.utils import cache_from_env, split_path
from swift.proxy.controllers.base import get_cache_key

from mlstorlets.sandbox import protocol
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
    if req.method != "GET" or not storlet or protocol.BODY_INPUT_HEADER in req.headers:
        return []
    try:
        version, account, container, obj = split_path(req.path_info, 4, 4, True)
    except ValueError:
        return []
    # Swift's info readers key on native strings, storlet_cache on the
    # WSGI path of upstream's HEAD.
    native = wsgi_to_str(account)
    return [
        get_cache_key(native),
        get_cache_key(native, wsgi_to_str(container)),
        get_cache_key(native, wsgi_to_str(storlet_container)),
        cache_key(storlet_path(version, account, storlet_container, storlet)),
    ]


def prefetch(req, app, storlet_container):
    """Fetch the entries a storlet GET ``req`` reads into its info cache,
    in one round trip, when memcache is one server."""
    wanted = keys(req, storlet_container)
    memcache = cache_from_env(req.environ, allow_none=True)
    if not wanted or len(getattr(memcache, "memcache_servers", ())) != 1:
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
    # reader then finds nothing here, and asks memcache itself.  Nothing
    # here may fail the request.
    try:
        values = memcache.get_multi(wanted, wanted[0])
    except Exception:
        return
    for key, value in zip(wanted, values or ()):
        if value:
            infocache[key] = value
