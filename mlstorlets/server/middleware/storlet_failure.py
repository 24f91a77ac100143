"""Keep a failing storlet from marking its object server as failing.

On an object server, the upstream storlet middleware answers a storlet that
raised, died or timed out with a 5xx.  The proxy counts every 5xx against
the node that sent it and, after ten in a minute, stops using that node: so
any user could take object servers out of service by running a storlet that
fails.  Placed right before ``storlet_handler`` in the object pipeline, this
filter turns exactly those answers into ``422 Unprocessable Entity`` with the
reason in ``X-Storlet-Failure``; the proxy passes a 4xx through without
error-limiting the node.  Every other response is left alone.
"""

from swift.common.swob import Request, Response

# The bodies upstream's storlet_handler gives the 5xx it raises on a storlet
# failure; a 5xx without one of them comes from Swift itself and is kept.
STORLET_FAILURES = {
    b'Storlet execution failed': 'the storlet failed',
    b'Storlet execution timed out': 'the storlet timed out',
    b'Internal request timed out': 'the storlet timed out',
    b'<html><h1>Service Unavailable</h1><p>The server is currently '
    b'unavailable. Please try again at a later time.</p></html>':
        'the storlet failed before producing output',
}


class StorletFailureMiddleware(object):

    def __init__(self, app, conf):
        self.app = app

    def __call__(self, env, start_response):
        req = Request(env)
        if 'X-Run-Storlet' not in req.headers:
            return self.app(env, start_response)
        resp = req.get_response(self.app)
        if resp.status_int in (500, 503):
            reason = STORLET_FAILURES.get(resp.body.strip())
            if reason:
                resp = Response(status=422, request=req,
                                headers={'X-Storlet-Failure': reason},
                                body=reason.encode('utf8') + b'\n',
                                content_type='text/plain')
        return resp(env, start_response)


def filter_factory(global_conf, **local_conf):
    conf = dict(global_conf, **local_conf)

    def storlet_failure_filter(app):
        return StorletFailureMiddleware(app, conf)
    return storlet_failure_filter
