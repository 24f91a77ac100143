"""Run on an object server only the invocations a storlet proxy checked.

Upstream's object-side ``storlet_handler`` runs a storlet for any request
that carries ``X-Run-Storlet``.  The checks that matter (the account has
storlets enabled, the user may run that storlet) are the proxy's; a proxy
without the storlet middleware forwards a client's ``X-Run-Storlet`` to the
object servers untouched, as it does while a cluster is being installed or
when a proxy was left out, and the object server would run the storlet
unchecked.

In a proxy this filter goes right after ``storlet_handler``: a request
still carrying ``X-Run-Storlet`` there was checked by it and is to run on
an object server, and gets ``X-Backend-Storlet-Checked``.  Swift's
``gatekeeper``, first in every proxy pipeline, removes ``X-Backend-*``
headers from clients, so only a storlet proxy can set it.  In an object
server it goes first among the storlet filters and refuses (``403``) an
invocation without it.
"""

from swift.common.swob import HTTPForbidden, Request

from mlstorlets.sandbox import protocol

CHECKED_HEADER = "X-Backend-Storlet-Checked"


class StorletOriginMiddleware(object):
    def __init__(self, app, conf):
        self.app = app
        self.role = conf.get("execution_server", "object")
        if self.role not in ("proxy", "object"):
            raise ValueError("execution_server must be proxy or object, not %r" % self.role)

    def __call__(self, env, start_response):
        if "HTTP_X_RUN_STORLET" not in env:
            return self.app(env, start_response)
        req = Request(env)
        if self.role == "proxy":
            req.headers[CHECKED_HEADER] = "true"
            return self.app(env, start_response)
        if req.headers.get(CHECKED_HEADER) != "true":
            reason = "storlet invocations reach object servers only through a storlet proxy"
            return HTTPForbidden(
                request=req,
                body=reason + "\n",
                content_type="text/plain",
                headers=protocol.failure_headers(protocol.REFUSED, reason),
            )(env, start_response)
        return self.app(env, start_response)


def filter_factory(global_conf, **local_conf):
    conf = dict(global_conf, **local_conf)

    def storlet_origin_filter(app):
        return StorletOriginMiddleware(app, conf)

    return storlet_origin_filter
