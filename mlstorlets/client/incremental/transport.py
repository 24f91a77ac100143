"""Running the estimator storlet over objects: in the cluster, or here.

:class:`ClusterTransport` runs it next to the data, through the one Swift
gateway (:class:`mlstorlets.client.swift.Swift`).  A pass over objects is
planned into *groups* (:meth:`ClusterTransport.plan`), one storlet
invocation each: the GET of a group's first object names the others in
``X-Storlet-Extra-Resources``, so the storlet reads them in order with the
model in memory, and one state crosses the network per group instead of one
per object.  Storlets runs such a request on the proxy: the data moves from
object servers to the proxy, inside the cluster, never to the client.  A
group is bounded by the engine's 4 KiB SBus datagram (each input's user
metadata and all the parameters are in it, see
:mod:`mlstorlets.client.faces.plan`), by the header line, by
``max_group_bytes`` (the storlet answers once it has read everything,
within the engine's ``storlet_timeout``) and by ``objects_per_call``.

The *payload* (the state, the classes of a first call, one object's sample
weights, a group's object list: :func:`mlstorlets.sandbox.incremental.state.pack`)
rides in the parameters (:func:`mlstorlets.sandbox.protocol.state_parameters`)
when the datagram has room; a call of one object then runs on an object
server holding it.  Otherwise the client PUTs the payload as
``<container>/.mlstorlets-state/<uuid>``, names it first among the extra
resources (the call then runs on the proxy) and deletes it whatever happens.

:class:`ClientTransport` runs the same storlet module here, one object at a
time, over objects of any store (``file://``, ``s3://``...).
"""

import json
import uuid

from mlstorlets.client import batch
from mlstorlets.client.faces import plan as sbus_plan
from mlstorlets.client.local_storlet import invoke, load_storlet
from mlstorlets.client.swift import Swift, SwiftError
from mlstorlets.client.uri import format_uri, parse, parse_uri
from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.incremental.training import RESOURCE

STORLET_NAME = "estimator.py"
STATE_PREFIX = protocol.INTERNAL_PREFIX + "-state/"
# What the engine puts in an invocation's SBus datagram besides the inputs'
# metadata and the request's parameters: the output, metadata and logger
# descriptors and its own parameters (350 to 380 bytes measured, see
# mlstorlets.client.faces.plan), with a margin.
SBUS_ENGINE_RESERVE = 640
# Datagram bytes assumed for an object whose metadata was not read (a
# single-object call does not HEAD it): a few short metadata items.
UNKNOWN_METADATA_COST = 512
#: Default bound of the bytes one invocation reads (see the module's doc).
DEFAULT_MAX_GROUP_BYTES = 128 << 20


def datagram_cost(params):
    """Bytes the request's parameters take in the engine's SBus datagram.

    The engine sees WSGI strings (UTF-8 bytes read as Latin-1) and sends
    them as JSON, which escapes every non-ASCII byte to six characters.
    """
    wsgi = {str(k).encode("utf-8").decode("latin-1"): str(v).encode("utf-8").decode("latin-1")
            for k, v in params.items()}
    return len(json.dumps(wsgi))


class ClusterTransport:
    """Runs the estimator storlet on objects in the cluster.

    Parameters
    ----------
    swift : mlstorlets.client.swift.Swift or swiftclient.client.Connection
    storlet : str, default='estimator.py'
    objects_per_call : int, default=None
        Most objects one invocation reads; None: as many as the limits allow;
        1: one invocation per object, on an object server holding it (when
        the payload fits the request).
    max_group_bytes : int, default=128 MiB
        Most bytes of data one invocation of several objects reads.

    Attributes
    ----------
    placements : list of str
        For each call, ``'object-server'`` (payload in parameters, one
        object) or ``'proxy'``.
    """

    def __init__(self, swift, storlet=STORLET_NAME, objects_per_call=None,
                 max_group_bytes=DEFAULT_MAX_GROUP_BYTES):
        self.swift = swift if isinstance(swift, Swift) else Swift(swift)
        self.storlet = storlet
        self.objects_per_call = objects_per_call
        self.max_group_bytes = max_group_bytes
        self.placements = []
        self._heads = {}
        self._sizes = {}

    def list_objects(self, source):
        """URIs named by ``source``: a URI, a list of URIs, or a prefix ending
        in ``/``; internal names (temporary payloads...) never included.

        Raises
        ------
        mlstorlets.sandbox.errors.ObjectError
            No such object or container, or nothing under a prefix.
        """
        uris = []
        for item in [source] if isinstance(source, str) else source:
            container, _, entries = batch.list_sources(self.swift, item)
            for entry in entries:
                uri = format_uri(container, entry["name"])
                self._sizes[uri] = int(entry["bytes"])
                uris.append(uri)
        return uris

    def describe(self, uris):
        """Size and user metadata of each object (one HEAD each, kept)."""
        for uri in uris:
            if uri not in self._heads:
                container, obj = parse_uri(uri)
                headers = self.swift.head(container, obj)
                if headers is None:
                    raise ObjectError(uri, "source object not found")
                meta = {k[len("x-object-meta-"):]: v for k, v in headers.items()
                        if k.lower().startswith("x-object-meta-")}
                self._heads[uri] = (int(headers.get("content-length", 0)), meta)
        return {uri: self._heads[uri] for uri in uris}

    def plan(self, uris, params):
        """Split ``uris``, in order, into the groups of one invocation each."""
        if self.objects_per_call == 1 or len(uris) == 1:
            return [[uri] for uri in uris]
        heads = self.describe(uris)
        payload_path = sbus_plan.resource_path("c" * 256, STATE_PREFIX + uuid.uuid4().hex)
        budget = (sbus_plan.SBUS_LIMIT - SBUS_ENGINE_RESERVE - sbus_plan.input_cost({})
                  - datagram_cost(dict(params, payload=RESOURCE)))
        groups = sbus_plan.plan_groups(
            [sbus_plan.input_cost(heads[u][1]) for u in uris],
            [sbus_plan.resource_path(*parse_uri(u)) for u in uris],
            weights=[max(1, heads[u][0]) for u in uris], max_weight=self.max_group_bytes,
            budget=budget, header_limit=sbus_plan.HEADER_LIMIT - len(payload_path) - 1)
        size = self.objects_per_call or len(uris)
        return [[uris[i] for i in group[start:start + size]]
                for group in groups for start in range(0, len(group), size)]

    def call(self, entries, params, payload):
        """Run the storlet once over ``entries`` ((uri, weight) in order).

        Returns
        -------
        metadata : dict
            The output's user metadata (keys lower case, without prefix).
        body : bytes

        Raises
        ------
        mlstorlets.sandbox.errors.ObjectError
            Naming the object the storlet refused, or the group's first.
        """
        uris = [uri for uri, _ in entries]
        params = dict(params)
        if len(entries) == 1:
            params["name"] = uris[0]
            if float(entries[0][1]) != 1.0:
                params["object_weight"] = repr(float(entries[0][1]))
        used = SBUS_ENGINE_RESERVE + datagram_cost(params) + sum(
            sbus_plan.input_cost(self._heads[uri][1]) if uri in self._heads
            else UNKNOWN_METADATA_COST for uri in uris)
        inline = protocol.state_parameters(
            payload, budget=sbus_plan.SBUS_LIMIT - used - 64 * (len(payload) // 3000 + 1))
        if inline is not None:
            where = "object-server" if len(uris) == 1 else "proxy"
            return self._invoke(uris, dict(params, **inline), None, where)
        return self._invoke(uris, dict(params, payload=RESOURCE), payload, "proxy")

    def _invoke(self, uris, params, payload, placement):
        container, obj = parse_uri(uris[0])
        temp = None if payload is None else STATE_PREFIX + uuid.uuid4().hex
        extra = [] if temp is None else ["/%s/%s" % (container, temp)]
        extra += ["/%s/%s" % parse_uri(uri) for uri in uris[1:]]
        try:
            if temp is not None:
                self.swift.call(uris[0], "put_object", container, temp, payload,
                                content_type="application/octet-stream")
            headers, body = self.swift.storlet_get(container, obj, self.storlet, params,
                                                   extra_resources=extra or None)
        except SwiftError as err:
            raise _refusal(self.storlet, uris, err) from None
        finally:
            if temp is not None:
                try:
                    self.swift.call(uris[0], "delete_object", container, temp)
                except SwiftError:
                    pass
        self.placements.append(placement)
        return _user_metadata(headers), body


def _user_metadata(headers):
    return {k.lower()[len("x-object-meta-"):]: v for k, v in headers.items()
            if k.lower().startswith("x-object-meta-")}


def _refusal(storlet, uris, err):
    """The error of a call over ``uris``, naming the object the storlet named
    (its reason starts with the object it refused)."""
    if len(uris) > 1:
        for uri in uris:
            _, marker, rest = err.reason.partition(f"{uri}: ")
            if marker:
                return SwiftError(uri, f"storlet {storlet} refused it, in a call over "
                                       f"{len(uris)} objects from {uris[0]}: {rest}",
                                  err.status, err.kind)
    return SwiftError(uris[0], err.reason, err.status, err.kind)


class ClientTransport:
    """Runs the same storlet module here, over objects of any store.

    Parameters
    ----------
    stores : mlstorlets.client.stores.registry.Stores
    storlet : str, default='estimator.py'
    """

    def __init__(self, stores, storlet=STORLET_NAME):
        self.stores = stores
        self.storlet = storlet
        self._cls = load_storlet(storlet)
        self.placements = []
        self.client_bytes = 0

    def list_objects(self, source):
        uris = []
        for item in [source] if isinstance(source, str) else source:
            store, uri = self.stores.open(item)
            if uri.key and not uri.is_prefix:
                if store.head(uri.key) is None:
                    raise ObjectError(item, "no such object")
                uris.append(store.uri(uri.key))
                continue
            entries = [e for e in store.list(uri.key) if not protocol.is_internal(e.name)]
            if not entries:
                raise ObjectError(item, "no objects under this prefix")
            uris.extend(store.uri(e.name) for e in entries)
        return uris

    def plan(self, uris, params):
        return [[uri] for uri in uris]

    def call(self, entries, params, payload):
        ((uri, weight),) = entries
        store, parsed = self.stores.open(uri)
        params = dict(params, name=uri, **protocol.state_parameters(payload))
        if float(weight) != 1.0:
            params["object_weight"] = repr(float(weight))
        reader = store.reader(parsed.key)
        try:
            metadata, body = invoke(self._cls, [(reader, reader.metadata or {})], params,
                                    uri, self.storlet)
            self.client_bytes += reader.bytes_read
        finally:
            reader.close()
        self.placements.append("client")
        return {k.lower(): v for k, v in metadata.items()}, body


def transport_for(source, connection=None, stores=None, storlet=STORLET_NAME,
                  objects_per_call=None):
    """The transport that reaches ``source``: in the cluster when it is there
    (``swift://``, or ``s3://`` through the cluster's S3 API), else here."""
    from mlstorlets.client.stores.registry import Stores

    stores = stores or Stores(swift=_connection(connection))
    first = source if isinstance(source, str) else source[0]
    if stores.in_cluster(first):
        if parse(first).scheme != "swift":
            source = [str(stores.as_swift(s)) for s in
                      ([source] if isinstance(source, str) else source)]
        # a gateway given is used as it is (its connections, its counters)
        gateway = connection if isinstance(connection, Swift) else stores.swift_connection()
        return ClusterTransport(gateway, storlet, objects_per_call), source
    return ClientTransport(stores, storlet), source


def _connection(connection):
    if isinstance(connection, Swift):
        return connection.parent
    return connection
