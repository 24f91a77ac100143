"""Run a storlet with extra resources on an object server that holds them.

Upstream runs every invocation that names extra resources
(``X-Storlet-Extra-Resources``) on the proxy: each resource is read from an
object server by a GET through the proxy, which relays it to the storlet
through a pipe.  Every byte costs an object server's read and checksum, a
proxy's relay, and a copy per hop; a call over many small objects pays a
request per object.

Here the proxy sends such an invocation to an object server of the
request's object, with the resources' names, and that server gives the
storlet the files of the resources it holds itself, as it gives the
request's object: the storlet reads them from disk, nothing is relayed.

* The proxy authorizes each resource first, as it would the GET of it
  (the container's read ACL, through ``swift.authorize``).  A resource the
  caller may not read, or whose container is missing, leaves the call to
  upstream's path, which refuses it by name (``storlet_extra_resources``).
* It sends, in ``X-Backend-Storlet-Local-Resources``, the request's own
  account, container and object and each resource as ``[container,
  object, policy index]`` (always in that account).  Only a storlet proxy
  can set it (``gatekeeper`` drops ``X-Backend-*`` headers from clients,
  ``storlet_origin`` refuses invocations that did not come through one),
  and an object server uses it only on a request for that very object: a
  symlink followed to another account carries the header there, and runs
  upstream's way.
* The object server finds each resource's primary devices in the object
  ring of its policy, and opens it on a device of its own (as Swift's
  replicators tell theirs: ``bind_ip`` and ``bind_port``).  If one is not
  there (another node's, a handoff, not yet replicated, a large object, a
  manifest or a symlink), it runs nothing: it answers the request's object with
  ``X-Backend-Storlet-Not-Local``, and the proxy runs the storlet over it
  upstream's way.
* A request with a body as an input, ``X-Storlet-Run-On-Proxy``, an
  ``X-Storlet-Range``, more inputs than a sandbox takes, an object of an
  erasure-coded policy (which an object server holds in fragments), or on
  a proxy with ``storlet_execute_on_proxy`` runs on the proxy as before;
  so does everything when the proxy's ``extra_resources_on_object_server``
  is false.
* The storlet reads the files as the object server stores them: Swift's
  check of an object's MD5 on a full read (which quarantines a corrupt
  replica) does not happen, as for the request's own object upstream.

An answer made on an object server carries ``X-Mlstorlets-Ran-On:
object-server`` (:data:`mlstorlets.sandbox.protocol.RAN_ON_HEADER`).
"""

import json

from storlets.gateway.common.stob import StorletData
from storlets.swift_middleware.handlers import StorletObjectHandler, StorletProxyHandler
from swift.common.http import is_success
from swift.common.ring.utils import is_local_device
from swift.common.storage_policy import POLICIES, REPL_POLICY
from swift.common.swob import (
    HTTPBadRequest,
    Request,
    str_to_wsgi,
    wsgi_quote,
    wsgi_to_str,
    wsgi_unquote,
)
from swift.common.utils import close_if_possible, public, split_path
from swift.common.wsgi import make_subrequest
from swift.proxy.controllers.base import get_container_info

from mlstorlets.sandbox import protocol

RESOURCES_HEADER = "X-Backend-Storlet-Local-Resources"
NOT_LOCAL_HEADER = "X-Backend-Storlet-Not-Local"
# Below Swift's default max_header_size (8192), which bounds the line.
MAX_RESOURCES_HEADER = 8000
# The swift.source of this module's subrequests.
SOURCE = "MLSL"


class LocalResourcesProxyHandler(StorletProxyHandler):
    """Upstream's proxy handler, sending an invocation with extra
    resources to an object server when the caller may read them all."""

    on_object_server = True

    @public
    def GET(self):
        if self._may_run_on_object_server():
            resources = self._authorized_resources()
            if resources is not None:
                del self.request.headers["X-Storlet-Extra-Resources"]
                self.request.headers[RESOURCES_HEADER] = resources
        return super().GET()

    def is_proxy_runnable(self, resp=None):
        if resp is not None and NOT_LOCAL_HEADER in resp.headers:
            del resp.headers[NOT_LOCAL_HEADER]
            return True
        return super().is_proxy_runnable(resp)

    def _may_run_on_object_server(self):
        return (
            self.on_object_server
            and bool(self.extra_resources)
            # Also a body as an input, which sets it.
            and not self.has_run_on_proxy_header
            and not self.storlet_execute_on_proxy
            and not self.is_storlet_range_request
            and len(self.extra_resources) < protocol.MAX_INPUTS
        )

    def _authorized_resources(self):
        """The header naming the request's object and the resources, or
        None when one of them is not the caller's to read, an object of an
        erasure-coded policy, or the header would be too long."""
        own = get_container_info(self.request.environ, self.app, swift_source=SOURCE)
        if not _replicated(own):
            return None
        resources = []
        for path in self.extra_resources:
            # Quoted, as the client sent it: upstream's subrequest unquotes.
            _version, _account, container, obj = split_path(wsgi_unquote(path), 4, 4, True)
            sub = make_subrequest(
                self.request.environ, method="GET", path=path, swift_source=SOURCE
            )
            info = get_container_info(sub.environ, self.app, swift_source=SOURCE)
            if not is_success(info.get("status", 0)) or not _replicated(info):
                return None
            authorize = sub.environ.get("swift.authorize")
            if authorize is not None:
                sub.acl = info.get("read_acl")
                if authorize(sub):
                    return None
            policy = int(info.get("storage_policy") or 0)
            resources.append([wsgi_to_str(container), wsgi_to_str(obj), policy])
        target = [wsgi_to_str(self.account), wsgi_to_str(self.container), wsgi_to_str(self.obj)]
        value = json.dumps([target, resources], separators=(",", ":"))
        return value if len(value) <= MAX_RESOURCES_HEADER else None


def _replicated(container_info):
    policy = POLICIES.get_by_index(int(container_info.get("storage_policy") or 0))
    return policy is not None and policy.policy_type == REPL_POLICY


def parse_resources(value):
    """``(account, container, object)`` of the request the header was made
    for, and ``[(container, object, policy index), ...]``, from its value
    (native strings).

    Raises
    ------
    ValueError
        Anything but such a target and a list of 1 to MAX_INPUTS - 1 such
        triples.
    """
    try:
        target, found = json.loads(value)
    except (TypeError, ValueError):
        raise ValueError("not [[account, container, object], resources]") from None
    if not (
        isinstance(target, list)
        and len(target) == 3
        and all(isinstance(n, str) and n for n in target)
    ):
        raise ValueError("not [account, container, object]: %r" % (target,))
    most = protocol.MAX_INPUTS - 1
    if not isinstance(found, list) or not 0 < len(found) <= most:
        raise ValueError("not a list of 1 to %d resources" % most)
    resources = []
    for item in found:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and all(isinstance(name, str) and name for name in item[:2])
            and isinstance(item[2], int)
            and not isinstance(item[2], bool)
            and item[2] >= 0
        ):
            raise ValueError("not [container, object, policy index]: %r" % (item,))
        resources.append(tuple(item))
    return tuple(target), resources


class LocalResourcesObjectHandler(StorletObjectHandler):
    """Upstream's object handler, giving the storlet the files of the extra
    resources this server holds."""

    # This server's addresses and port, as its filter found them.
    my_ips = ()
    my_port = None
    swift_dir = "/etc/swift"

    def __init__(self, request, conf, gateway_conf, app, logger):
        super().__init__(request, conf, gateway_conf, app, logger)
        self.target = self.resources = None
        self.local = []
        if RESOURCES_HEADER in request.headers:
            try:
                self.target, self.resources = parse_resources(request.headers[RESOURCES_HEADER])
            except ValueError as err:
                raise HTTPBadRequest(
                    body=("bad %s: %s\n" % (RESOURCES_HEADER, err)).encode(), request=request
                )

    def apply_storlet(self, resp):
        if self.resources is None:
            return self._ran_here(super().apply_storlet(resp))
        self.local = self._open_local()
        if self.local is None:
            # The request's object, for the proxy to run the storlet over.
            resp.headers[NOT_LOCAL_HEADER] = "true"
            return resp
        try:
            return self._ran_here(super().apply_storlet(resp))
        finally:
            # The sandbox has its own descriptors of them by now.
            for local in self.local:
                close_if_possible(local.app_iter)

    @staticmethod
    def _ran_here(resp):
        if is_success(resp.status_int):
            resp.headers[protocol.RAN_ON_HEADER] = protocol.RAN_ON_OBJECT_SERVER
        return resp

    def _build_storlet_request(self, req, sheaders, sbody_iter):
        sreq = super()._build_storlet_request(req, sheaders, sbody_iter)
        for local in self.local:
            sreq.extra_data_list.append(
                StorletData(
                    self._get_user_metadata(local.headers), data_fd=local.app_iter._fp.fileno()
                )
            )
        return sreq

    def _open_local(self):
        """The object server's GET answers of every resource, each from a
        device of this server's, ready to hand over as files; None (and
        none left open) when one is not here."""
        _device, _partition, account, container, obj = self.request.split_path(5, 5, True)
        if self.target != tuple(wsgi_to_str(n) for n in (account, container, obj)):
            # The header was made for another object (a symlink's): its
            # resources were authorized in that object's account.
            return None
        opened = []
        for resource_container, resource, policy in self.resources:
            resp = self._local_get(account, resource_container, resource, policy)
            if resp is None:
                for other in opened:
                    close_if_possible(other.app_iter)
                return None
            opened.append(resp)
        return opened

    def _local_get(self, account, container, obj, policy):
        try:
            ring = POLICIES.get_object_ring(policy, self.swift_dir)
            partition, nodes = ring.get_nodes(wsgi_to_str(account), container, obj)
        except (OSError, ValueError, AttributeError) as err:
            self.logger.warning("%s/%s: no ring for policy %s: %s" % (container, obj, policy, err))
            return None
        devices = [
            node["device"]
            for node in nodes
            if is_local_device(self.my_ips, self.my_port, node["ip"], node["port"])
        ]
        if not devices:
            return None
        path = "/%s/%d/%s/%s/%s" % (
            str_to_wsgi(devices[0]),
            partition,
            account,
            str_to_wsgi(container),
            str_to_wsgi(obj),
        )
        sub = Request.blank(
            wsgi_quote(path),
            environ={
                "REQUEST_METHOD": "GET",
                "swift.trans_id": self.request.environ.get("swift.trans_id", ""),
            },
            headers={"X-Backend-Storage-Policy-Index": str(policy)},
        )
        resp = sub.get_response(self.app)
        if (
            is_success(resp.status_int)
            and hasattr(resp.app_iter, "_fp")
            and not self.is_slo_response(resp)
            and not self.is_symlink_response(resp)
            and not self.is_ec_response(resp)
            and "X-Object-Manifest" not in resp.headers
        ):
            return resp
        close_if_possible(resp.app_iter)
        return None
