"""Answer a storlet that failed on an object server in the storlet protocol.

On an object server, the upstream storlet middleware answers a storlet that
raised, died or timed out with a 5xx.  The proxy handles any status other
than 2xx, 3xx or 416 from an object server by trying the next replica: the
storlet runs again there, and again on the third (a spinning storlet costs
three storlet timeouts of CPU before the client hears of it).  A 5xx also
counts against the node, and after ten in a minute the proxy stops using
it: any user could take object servers out of service with a failing
storlet.

Placed right before ``storlet_handler`` in the object pipeline, this
filter turns exactly those answers into ``200 OK`` with an empty body and
the protocol's ``X-Mlstorlets-Error`` (``failed``, ``timed-out``, or the
gateway's own kind) and ``X-Mlstorlets-Reason`` headers (the gateway's,
when it answered in the protocol: what the storlet raised, and where the
invocation's log went).  The proxy takes a 200 as its source and asks no
other replica; ``storlet_copy``, in the proxy, turns it into the client's
status (``502``, ``504``; ``503`` for a sandbox that could not start
there, which is not tried on another replica either: a 5xx would count
against the node for every request).  Every other response is left
alone.
"""

from swift.common.swob import Request, Response
from swift.common.utils import close_if_possible
from swift.common.wsgi import WSGIContext

from mlstorlets.sandbox import protocol

# The bodies upstream's storlet_handler gives the 5xx it raises on a storlet
# failure, with the protocol's kind for each; a 5xx without one of them
# comes from Swift itself and is kept.
STORLET_FAILURES = {
    b"Storlet execution failed": (protocol.FAILED, "failed"),
    b"Storlet execution timed out": (protocol.TIMED_OUT, "timed out"),
    b"Internal request timed out": (protocol.TIMED_OUT, "timed out"),
    b"<html><h1>Service Unavailable</h1><p>The server is currently "
    b"unavailable. Please try again at a later time.</p></html>": (
        protocol.FAILED,
        "failed before producing output",
    ),
}


def classify(resp):
    """``(kind, what)`` of an upstream storlet failure response, else None.

    Reads (and so consumes) the body of a 500 or 503 only.
    """
    if resp.status_int not in (500, 503):
        return None
    return STORLET_FAILURES.get(resp.body.strip())


class StorletFailureMiddleware(object):
    def __init__(self, app, conf):
        self.app = app

    def __call__(self, env, start_response):
        if env["REQUEST_METHOD"] != "GET" or "HTTP_X_RUN_STORLET" not in env:
            return self.app(env, start_response)
        context = WSGIContext(self.app)
        app_iter = context._app_call(env)
        if context._get_status_int() == 200:
            # The storlet's output, passed on as it came: most answers.
            start_response(
                context._response_status, context._response_headers, context._response_exc_info
            )
            return app_iter
        req = Request(env)
        resp = Response(
            status=context._response_status,
            headers=context._response_headers,
            app_iter=app_iter,
            request=req,
        )
        if protocol.ERROR_HEADER in resp.headers:
            # The gateway's own answer (a storlet that raised or ran past
            # its timeout), with where the invocation's log went.
            headers = {
                key: resp.headers[key]
                for key in (protocol.ERROR_HEADER, protocol.REASON_HEADER)
                if key in resp.headers
            }
            headers.update(protocol.log_headers(resp.headers))
        else:
            failure = classify(resp)
            if not failure:
                return resp(env, start_response)
            kind, what = failure
            headers = protocol.failure_headers(kind, "the storlet " + what)
        close_if_possible(resp.app_iter)
        return Response(
            status=200, request=req, body=b"", headers=headers, content_type="text/plain"
        )(env, start_response)


def filter_factory(global_conf, **local_conf):
    conf = dict(global_conf, **local_conf)

    def storlet_failure_filter(app):
        return StorletFailureMiddleware(app, conf)

    return storlet_failure_filter
