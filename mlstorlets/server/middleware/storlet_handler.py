"""Upstream's ``storlet_handler`` filter, with the project's handlers.

In a proxy, the handler also takes a GET's body as an input
(:mod:`mlstorlets.server.middleware.body_input`) and sends an invocation
with extra resources to an object server that holds them
(:mod:`mlstorlets.server.middleware.local_resources`); in an object server,
it gives the storlet those resources' files.  In both, an output whose
length the storlet declared is answered with that ``Content-Length``
(:mod:`mlstorlets.server.middleware.output_length`).  In an object server,
the object a storlet read leaves the page cache as after Swift's own GET
(:mod:`mlstorlets.server.middleware.page_cache`).  The proxy's HEAD of
the storlet object goes straight to
:mod:`mlstorlets.server.middleware.storlet_cache`, which authorizes it and
answers it from the cache, when only filters that let it through stand
between them.  A storlet the engine could not run in a proxy is answered in
the protocol (``failed``), not with upstream's 503, which ``storlet_copy``
could not tell from Swift's own when no object server answered.  Both
servers' handlers read the request's storlet headers from the WSGI
environment and copy the object's headers into the answer once, where
upstream makes every header name again.  Everything else is upstream's.

Options (``[filter:storlet_handler]``), besides upstream's:
``max_body_input_bytes`` (proxy; default 128 MiB, published in /info),
``max_body_input_held_bytes`` (proxy; bodies one worker holds at once,
default 4 times the former) and ``extra_resources_on_object_server``
(proxy; default true).  An object server reads its own ``ring_ip`` (or
``bind_ip``), ``bind_port``, ``servers_per_port`` and ``swift_dir``, as its
replicator does.
"""

from urllib.parse import unquote

from storlets.gateway.common.exceptions import StorletRuntimeException
from storlets.swift_middleware import storlet_handler
from storlets.swift_middleware.handlers.base import (
    StorletBaseHandler,
    SwiftFileManager,
    get_container_names,
)
from swift.common.header_key_dict import HeaderKeyDict
from swift.common.registry import register_swift_info
from swift.common.swob import HTTPBadGateway, HTTPServiceUnavailable, Response, wsgi_quote
from swift.common.utils import close_if_possible, config_true_value, whataremyips
from swift.common.wsgi import make_subrequest

from mlstorlets.sandbox import protocol
from mlstorlets.server.middleware.body_input import BodyInputProxyHandler
from mlstorlets.server.middleware.extra_resources import ExtraResourcesMiddleware
from mlstorlets.server.middleware.local_resources import (
    LocalResourcesObjectHandler,
    LocalResourcesProxyHandler,
)
from mlstorlets.server.middleware.output_length import (
    DeclaredLengthHandler,
    DeclaredLengthProxyHandler,
)
from mlstorlets.server.middleware.page_cache import InputPagesDroppedHandler
from mlstorlets.server.middleware.prefetch import prefetch
from mlstorlets.server.middleware.storlet_cache import StorletCacheMiddleware
from mlstorlets.server.middleware.storlet_origin import StorletOriginMiddleware

# Swift's default object server port.
DEFAULT_OBJECT_PORT = 6200
# The WSGI keys of the headers upstream takes storlet parameters from
# (any header whose name starts X-Storlet-Parameter, in any case).
PARAMETER_ENV_PREFIX = "HTTP_X_STORLET_PARAMETER"
# The WSGI keys of the headers upstream makes invocation options of (any
# header whose name starts X-Storlet-), and the two it leaves out.
OPTION_ENV_PREFIX = "HTTP_X_STORLET_"
NOT_OPTIONS = frozenset(("HTTP_X_STORLET_RANGE", "HTTP_X_STORLET_GENERATE_LOG"))


# The filters between upstream's handler and storlet_cache in a proxy; each
# lets the HEAD of a storlet object through untouched.
PASSING_STORLET_HEADS = (StorletOriginMiddleware, ExtraResourcesMiddleware)


def storlet_cache_of(app):
    """The storlet_cache filter that ``app`` hands a storlet object's HEAD
    to, or None."""
    while isinstance(app, PASSING_STORLET_HEADS):
        app = app.app
    return app if isinstance(app, StorletCacheMiddleware) else None


class PathQuotedOnce(object):
    """Upstream's handlers read ``path`` (the request's quoted path) for
    every debug line they format, whether it is logged or not, several
    times per invocation, and Swift quotes it character by character.
    Quoted again only when the path changed (a proxy rewrites it for a
    copy)."""

    _path_of = None

    @property
    def path(self):
        env = self.request.environ
        unquoted = env.get("SCRIPT_NAME", "") + env["PATH_INFO"]
        if self._path_of is None or self._path_of[0] != unquoted:
            self._path_of = (unquoted, wsgi_quote(unquoted))
        return self._path_of[1]


class ParametersFromEnviron(object):
    """Upstream's storlet parameter headers read into the request's
    parameters, found in the WSGI environment itself: upstream walks every
    header through swob's view of it, which makes each name again from its
    environment key."""

    def _update_storlet_parameters_from_headers(self):
        parameters = {}
        for key, keyvalue in self.request.environ.items():
            if key.startswith(PARAMETER_ENV_PREFIX):
                name, value = unquote(keyvalue).split(":", 1)
                parameters[name] = value
        self.request.params.update(parameters)


class OptionsFromEnviron(StorletBaseHandler):
    """Upstream's invocation options, the headers found in the WSGI
    environment itself as :class:`ParametersFromEnviron` finds them.

    Both servers' handlers put it between upstream's handler and its
    base, so that the object server's handler still adds a storlet range
    to these options.
    """

    def _get_storlet_invocation_options(self, req):
        env = req.environ
        options = {
            "storlet_" + key[len(OPTION_ENV_PREFIX) :].lower(): value
            for key, value in env.items()
            if key.startswith(OPTION_ENV_PREFIX) and key not in NOT_OPTIONS
        }
        scope = self.account
        if scope.rfind(":") > 0:
            scope = scope[: scope.rfind(":")]
        options["scope"] = scope
        options["generate_log"] = config_true_value(env.get("HTTP_X_STORLET_GENERATE_LOG"))
        options["file_manager"] = SwiftFileManager(
            self.account,
            self.storlet_container,
            self.storlet_dependency,
            self.log_container,
            self.ic_conf_path,
            self.logger,
        )
        return options


class HeadersCopiedOnce(StorletBaseHandler):
    """Upstream's answer made of the storlet's output, its headers copied
    from the object's without making each name again.

    Upstream copies the object's headers into a new dict, then that dict
    into the answer's, titling every name at each step: names already
    titled, in a swob ``HeaderKeyDict``.  Placed as
    :class:`OptionsFromEnviron` is.
    """

    def apply_storlet(self, resp):
        try:
            sresp = self._call_gateway(resp)
            headers = HeaderKeyDict()
            if isinstance(resp.headers, HeaderKeyDict):
                dict.update(headers, resp.headers)
            else:
                headers.update(resp.headers)
            headers.pop("Content-Length", None)
            headers.pop("Transfer-Encoding", None)
            if "Content-Range" in headers:
                headers["Storlet-Input-Range"] = headers.pop("Content-Range")
            self._set_metadata_in_headers(headers, sresp.data.user_metadata)
            response = Response(app_iter=sresp.data.data_iter, request=self.request)
            dict.update(response.headers, headers)
        except StorletRuntimeException:
            response = HTTPServiceUnavailable()
        return response


class ProxyHandler(
    ParametersFromEnviron,
    PathQuotedOnce,
    DeclaredLengthProxyHandler,
    BodyInputProxyHandler,
    LocalResourcesProxyHandler,
    OptionsFromEnviron,
    HeadersCopiedOnce,
):
    _gateway = None

    def __init__(self, request, conf, gateway_conf, app, logger):
        # Before upstream's first read of the account's info.
        prefetch(request, app, get_container_names(conf)["storlet"])
        super().__init__(request, conf, gateway_conf, app, logger)

    def _setup_gateway(self):
        # The gateway is made for a storlet the proxy runs: most requests
        # only pass through, to the object server that runs theirs.
        self._update_storlet_parameters_from_headers()

    @property
    def gateway(self):
        if self._gateway is None:
            self._gateway = self.gateway_class(self.gateway_conf, self.logger, self.scope)
        return self._gateway

    @gateway.setter
    def gateway(self, gateway):
        self._gateway = gateway

    def verify_access_to_storlet(self):
        """Upstream's, but the HEAD of the storlet object goes straight to
        storlet_cache when the filters before it let it through untouched:
        authorized there as before, and answered from the cache without a
        trip down the pipeline and back.  Anything the cache does not
        answer takes upstream's way."""
        cache = storlet_cache_of(self.app)
        if cache is not None:
            spath = "/".join(
                [
                    "",
                    self.api_version,
                    self.account,
                    self.storlet_container,
                    self.request.headers.get("X-Run-Storlet"),
                ]
            )
            # As upstream makes it (make_env copies no conditional header).
            head = make_subrequest(
                self.request.environ,
                "HEAD",
                spath,
                headers={"X-Auth-Token": self.request.headers.get("X-Auth-Token")},
                swift_source=self.agent,
            )
            headers = cache.cached_headers(head)
            if headers is not None:
                headers = HeaderKeyDict(headers)
                params = self._parse_storlet_params(headers)
                for key in ("Content-Length", "X-Timestamp"):
                    params[key] = headers[key]
                return params
        return super().verify_access_to_storlet()

    def apply_storlet(self, resp):
        answer = super().apply_storlet(resp)
        if answer.status_int == 503 and protocol.ERROR_HEADER not in answer.headers:
            # Upstream's answer to a storlet the engine could not run here
            # is the very 503 Swift gives when no object server answered:
            # said in the protocol, the two are told apart.
            close_if_possible(answer.app_iter)
            # Upstream leaves the storlet's input, a backend request, open.
            close_if_possible(resp.app_iter)
            reason = "the storlet failed before producing output"
            return HTTPBadGateway(
                body=reason + "\n",
                content_type="text/plain",
                headers=protocol.failure_headers(protocol.FAILED, reason),
                request=self.request,
            )
        return answer


class ObjectHandler(
    ParametersFromEnviron,
    PathQuotedOnce,
    DeclaredLengthHandler,
    InputPagesDroppedHandler,
    LocalResourcesObjectHandler,
    OptionsFromEnviron,
    HeadersCopiedOnce,
):
    pass


def handler_for(conf):
    """The handler class of a server whose filter options are ``conf``."""
    if conf.get("execution_server") == "proxy":
        limit = int(conf.get("max_body_input_bytes", protocol.DEFAULT_MAX_BODY_INPUT))
        if limit < 0:
            raise ValueError("max_body_input_bytes must be at least 0, not %d" % limit)
        held = int(conf.get("max_body_input_held_bytes", 4 * limit))
        if held < limit:
            raise ValueError(
                "max_body_input_held_bytes must be at least max_body_input_bytes (%d), not %d"
                % (limit, held)
            )
        on_object_server = config_true_value(conf.get("extra_resources_on_object_server", "true"))
        return type(
            "ProxyHandler",
            (ProxyHandler,),
            {
                "max_body_input": limit,
                "max_body_input_held": held,
                "on_object_server": on_object_server,
            },
        )
    # As Swift's replicator finds its devices in the ring.
    servers_per_port = int(conf.get("servers_per_port", "0") or 0)
    return type(
        "ObjectHandler",
        (ObjectHandler,),
        {
            "my_ips": tuple(whataremyips(conf.get("ring_ip", conf.get("bind_ip", "0.0.0.0")))),
            "my_port": None
            if servers_per_port
            else int(conf.get("bind_port", DEFAULT_OBJECT_PORT)),
            "swift_dir": conf.get("swift_dir", "/etc/swift"),
        },
    )


def filter_factory(global_conf, **local_conf):
    conf = dict(global_conf, **local_conf)
    make_filter = storlet_handler.filter_factory(global_conf, **local_conf)
    handler = handler_for(conf)
    if conf.get("execution_server") == "proxy":
        register_swift_info(
            protocol.INFO_KEY, **{protocol.MAX_BODY_INPUT_KEY: handler.max_body_input}
        )

    def storlet_handler_filter(app):
        middleware = make_filter(app)
        middleware.handler_class = handler
        return middleware

    return storlet_handler_filter
