"""Fail an invocation whose extra resource cannot be read.

A storlet request may name further inputs (``X-Storlet-Extra-Resources:
/container/object,...``), which upstream's storlet middleware GETs on the
proxy and hands to the storlet as data whatever the answer: a resource
that is missing or forbidden reached the storlet as Swift's HTML error
page, and a copy then stored an object made from it with a 200.

This filter sits right after ``storlet_handler`` in the proxy and watches
those GETs (subrequests with the user agent ``ST``, outside the storlet
containers, which upstream reads through its internal client instead; a
client's own GET sending that agent gets the same treatment, which only
changes the status of an error).  Any answer but a 2xx
stops the invocation before the storlet runs: ``422`` (refused) for a 4xx,
naming the resource and its status, ``502`` (failed) otherwise, with the
protocol's headers (:mod:`mlstorlets.sandbox.protocol`).  A copy then
writes nothing.
"""

from swift.common.swob import Request, status_map
from swift.common.utils import close_if_possible, get_logger, split_path

from mlstorlets.sandbox import protocol

# The user agent of upstream's subrequests for extra resources.
STORLET_AGENT = "ST"


class ExtraResourcesMiddleware(object):
    def __init__(self, app, conf, logger=None):
        self.app = app
        self.logger = logger or get_logger(conf, log_route="extra_resources")
        self.storlet_containers = {
            conf.get("storlet_container", "storlet"),
            conf.get("storlet_dependency", "dependency"),
        }

    def __call__(self, env, start_response):
        req = Request(env)
        if (
            req.method != "GET"
            or req.user_agent != STORLET_AGENT
            or "X-Run-Storlet" in req.headers
            or self._in_storlet_container(req)
        ):
            return self.app(env, start_response)
        resp = req.get_response(self.app)
        if resp.is_success:
            return resp(env, start_response)
        # The error page is dropped, never handed on.
        close_if_possible(resp.app_iter)
        kind = protocol.REFUSED if 400 <= resp.status_int < 500 else protocol.FAILED
        reason = "extra resource %s could not be read: %s" % (
            req.path_info.split("/", 3)[-1],
            resp.status,
        )
        self.logger.info(reason)
        # Raised, not returned: upstream's handler would feed a returned
        # answer to the storlet; its own error handling passes this on.
        raise status_map[protocol.STATUS[kind]](
            body=reason + "\n",
            content_type="text/plain",
            headers=protocol.failure_headers(kind, reason),
        )

    def _in_storlet_container(self, req):
        try:
            _v, _a, container, _o = split_path(req.path_info, 4, 4, True)
        except ValueError:
            return False
        return container in self.storlet_containers


def filter_factory(global_conf, **local_conf):
    conf = dict(global_conf, **local_conf)

    def extra_resources_filter(app):
        return ExtraResourcesMiddleware(app, conf)

    return extra_resources_filter
