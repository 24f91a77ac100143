"""Running storlets in the cluster, next to the data.

A call over several objects (:meth:`ClusterRunner.invoke`) is a ``GET`` of
the first whose ``X-Storlet-Extra-Resources`` names the others, so the
storlet reads them in order with its state in memory.  It runs on an object
server of the first when that server holds them all, reading their files
(:mod:`mlstorlets.server.middleware.local_resources`), else on the proxy:
the data moves from object servers to the proxy, inside the cluster, never
to the client.  :meth:`ClusterRunner.plan`
splits a pass into such calls, bounded by the engine's 4 KiB SBus datagram
(each input's user metadata and all the parameters are in it, see
:mod:`mlstorlets.client.runners.budget`), by the header line and by the bytes
one call reads (the storlet answers once it has read everything, within
the engine's ``storlet_timeout``).

A *payload* (an estimator's state, the classes of a first call, a group's
object list: :func:`mlstorlets.sandbox.incremental.state.pack`) rides in
the parameters (:func:`mlstorlets.sandbox.protocol.state_parameters`) when
the datagram has room; a call of one object then runs on an object server
holding it.  Otherwise it is the request's body, which the proxy gives the
storlet as its second input (:mod:`mlstorlets.server.middleware.body_input`;
the call then runs on the proxy).  Only a payload over what the cluster
takes as a body (or a cluster that takes none) is PUT as
``<container>/.mlstorlets-state/<id>``, named first among the extra
resources and deleted whatever happens.
"""

import contextlib
import hashlib
import json
import uuid

from mlstorlets.client import batch
from mlstorlets.client.errors import NotFound, StorletFailed, removed_after, storlet_error
from mlstorlets.client.runners import budget as sbus
from mlstorlets.client.runners.client import existing, tasks_of
from mlstorlets.client.stores.base import SOURCE_ETAG
from mlstorlets.client.swift import Swift, SwiftError, user_metadata
from mlstorlets.client.uri import format_uri, parse, parse_uri
from mlstorlets.sandbox import protocol

#: Where temporary payloads go, in the container of the call's first object.
STATE_PREFIX = protocol.INTERNAL_PREFIX + "-state/"
#: The parameter value that tells a storlet its payload is its second input
#: (:data:`mlstorlets.sandbox.incremental.training.RESOURCE`).
PAYLOAD_RESOURCE = "resource"
# Datagram bytes assumed for an object whose metadata was not read (a
# single-object call does not HEAD it): a few short metadata items.
UNKNOWN_METADATA_COST = 512
#: Default bound of the bytes one call of several objects reads.
DEFAULT_MAX_GROUP_BYTES = 128 << 20


class ClusterRunner:
    """Runs storlets over objects in the cluster.

    Parameters
    ----------
    stores : mlstorlets.client.stores.registry.Stores
        Reaches the cluster (``swift://``, and ``s3://`` through its S3 API).
    swift : mlstorlets.client.swift.Swift, optional
        The gateway to use; by default one over the stores' connection.

    Attributes
    ----------
    placements : list of str
        For each call, ``'object-server'`` (payload in the parameters, one
        object) or ``'proxy'``.
    client_bytes : int
        Body bytes of the data that went through the client: none.
    """

    placement = "cluster"

    def __init__(self, stores, swift=None):
        self.stores = stores
        self.swift = swift if swift is not None else Swift(stores.swift_connection())
        self.placements = []
        self.client_bytes = 0
        self._heads = {}

    # -- names -------------------------------------------------------------
    def locate(self, uri):
        """``uri`` as the cluster names it (``swift://``)."""
        return str(self.stores.as_swift(parse(uri)))

    def source_name(self, uri):
        """What a storlet is told its source is: ``container/object``."""
        return "%s/%s" % parse_uri(self.locate(uri))

    def list_objects(self, source):
        """URIs named by ``source``: a URI, a list of URIs, or a prefix
        ending in ``/``; internal names (temporary payloads...) never
        included.

        Raises
        ------
        mlstorlets.sandbox.errors.ObjectError
            No such object or container, or nothing under a prefix.
        """
        uris = []
        for item in [source] if isinstance(source, str) else source:
            container, _, entries = batch.list_sources(self.swift, self.locate(item))
            uris += [format_uri(container, e["name"]) for e in entries]
        return uris

    def describe(self, uris, concurrency=1):
        """{uri: (size, user metadata)} of each object (one HEAD each,
        ``concurrency`` at a time, kept)."""

        def head(uri):
            container, obj = parse_uri(uri)
            headers = self.swift.head(container, obj)
            if headers is None:
                raise NotFound(uri, "source object not found")
            return uri, (int(headers.get("content-length", 0)), user_metadata(headers))

        missing = [uri for uri in dict.fromkeys(uris) if uri not in self._heads]
        self._heads.update(self.swift.parallel(head, missing, concurrency))
        return {uri: self._heads[uri] for uri in uris}

    def known_size(self, uri):
        """The size of ``uri`` if :meth:`describe` read it, else None."""
        found = self._heads.get(uri)
        return found[0] if found else None

    def require(self, uri):
        """Raise :class:`ObjectError` unless ``uri`` names an object."""
        container, name = parse_uri(self.locate(uri))
        if self.swift.head(container, name) is None:
            raise NotFound(self.locate(uri), "not found")

    def check_storlet(self, storlet, params=None):
        """Check once, before any call, that ``storlet`` is deployed and
        takes ``params``."""
        self.swift.check_storlet(storlet, params)

    # -- calls -------------------------------------------------------------
    def plan(self, uris, params, objects_per_call=None, max_group_bytes=DEFAULT_MAX_GROUP_BYTES):
        """Split ``uris``, in order, into the groups of one call each.

        ``objects_per_call`` bounds a group (None: as many as the limits
        allow; 1: a call per object, on an object server holding it when
        the payload fits the request).
        """
        if objects_per_call == 1 or len(uris) == 1:
            return [[uri] for uri in uris]
        heads = self.describe(uris)
        limits = self.swift.limits()
        payload_path = sbus.resource_path("c" * 256, STATE_PREFIX + uuid.uuid4().hex)
        budget = (
            limits.datagram
            - sbus.ENGINE_RESERVE
            - sbus.input_cost({})
            - sbus.datagram_cost(dict(params, payload=PAYLOAD_RESOURCE))
        )
        groups = sbus.plan_groups(
            [sbus.input_cost(heads[u][1]) for u in uris],
            [sbus.resource_path(*parse_uri(u)) for u in uris],
            weights=[max(1, heads[u][0]) for u in uris],
            max_weight=max_group_bytes,
            budget=budget,
            header_limit=limits.header - len(payload_path) - 1,
        )
        size = objects_per_call or len(uris)
        return [
            [uris[i] for i in group[start : start + size]]
            for group in groups
            for start in range(0, len(group), size)
        ]

    def invoke(self, storlet, uris, params, payload=None, extras=()):
        """Run ``storlet`` once over ``uris`` (in order), with ``payload``
        (bytes, or None) and the objects ``extras`` read after them.

        Returns
        -------
        metadata : dict
            The output's user metadata (keys lower case, without prefix).
        body : bytes

        Raises
        ------
        mlstorlets.client.errors.ObjectFailed
            A :class:`~mlstorlets.client.errors.Refused` or
            :class:`~mlstorlets.client.errors.StorletFailed` naming the
            object the storlet named, or the call's first.
        """
        uris = [self.locate(u) for u in uris]
        extras = [self._resource(u) for u in extras]
        if payload is None:
            return self._get(
                storlet,
                uris,
                params,
                None,
                extras,
                "object-server" if len(uris) == 1 and not extras else "proxy",
            )
        used = (
            sbus.ENGINE_RESERVE
            + sbus.datagram_cost(params)
            + sum(
                sbus.input_cost(self._heads[uri][1])
                if uri in self._heads
                else UNKNOWN_METADATA_COST
                for uri in uris
            )
        )
        inline = protocol.state_parameters(
            payload, budget=self.swift.limits().datagram - used - 64 * (len(payload) // 3000 + 1)
        )
        if inline is not None:
            where = "object-server" if len(uris) == 1 and not extras else "proxy"
            return self._get(storlet, uris, dict(params, **inline), None, extras, where)
        return self._get(
            storlet, uris, dict(params, payload=PAYLOAD_RESOURCE), payload, extras, "proxy"
        )

    def _get(self, storlet, uris, params, payload, extras, placement):
        container, obj = parse_uri(uris[0])
        body = payload is not None and len(payload) <= self.swift.limits().body_input
        # The payload is the storlet's second input: the request's body
        # where the cluster takes one that long, else an object of its own
        # for the call.
        temp = None if payload is None or body else STATE_PREFIX + uuid.uuid4().hex
        extra = [] if temp is None else ["/%s/%s" % (container, temp)]
        extra += ["/%s/%s" % parse_uri(uri) for uri in uris[1:]] + extras
        with contextlib.ExitStack() as stack:
            if temp is not None:
                stack.enter_context(
                    removed_after(
                        lambda: self._delete(uris[0], container, temp),
                        "the temporary object %s/%s" % (container, temp),
                    )
                )
            try:
                if temp is not None:
                    self.swift.call(
                        uris[0],
                        "put_object",
                        container,
                        temp,
                        payload,
                        content_type="application/octet-stream",
                    )
                headers, output = self.swift.storlet_get(
                    container,
                    obj,
                    storlet,
                    params,
                    extra_resources=extra or None,
                    body=payload if body else None,
                )
            except SwiftError as err:
                raise _refusal(storlet, uris, err) from None
        self.placements.append(_placement(headers, placement))
        return user_metadata(headers), output

    @contextlib.contextmanager
    def staged(self, payload, params, sources):
        """Parameters (and extra resources) that give ``payload`` to every
        call of a batch over ``sources`` (URIs, each passed as ``source``).

        In the parameters when every call's datagram has room; otherwise an
        object named by the payload's content (a second run finds the same
        run digest), removed when the block ends.

        Yields
        ------
        params : dict
        extra_resources : list of str or None
        """
        names = [self.source_name(u) for u in sources]
        longest = max(sbus.datagram_cost({protocol.SOURCE_PARAMETER: n}) for n in names)
        used = sbus.ENGINE_RESERVE + UNKNOWN_METADATA_COST + sbus.datagram_cost(params) + longest
        inline = protocol.state_parameters(payload, budget=self.swift.limits().datagram - used)
        if inline is not None:
            yield dict(params, **inline), None
            return
        container, _ = parse_uri(self.locate(sources[0]))
        temp = STATE_PREFIX + "model-" + hashlib.sha256(payload).hexdigest()[:32]
        self.swift.call(
            temp, "put_object", container, temp, payload, content_type="application/octet-stream"
        )
        with removed_after(
            lambda: self._delete(temp, container, temp),
            "the temporary object %s/%s" % (container, temp),
        ):
            yield (dict(params, payload=PAYLOAD_RESOURCE), ["/%s/%s" % (container, temp)])

    def _delete(self, label, container, name):
        try:
            self.swift.call(label, "delete_object", container, name)
        except SwiftError as err:
            if err.status != 404:
                raise

    def _resource(self, uri):
        return "/%s/%s" % parse_uri(self.locate(uri))

    def limits(self):
        """(datagram bytes, header bytes) the inputs of one call must fit:
        what the cluster's /info publishes."""
        limits = self.swift.limits()
        return limits.datagram, limits.header

    def ensure_location(self, uri):
        """Create the container ``uri`` is in, if need be."""
        self.swift.ensure_container(parse_uri(self.locate(uri))[0])

    def put(self, uri, body, content_type):
        """Write ``body`` as ``uri``."""
        container, obj = parse_uri(self.locate(uri))
        self.swift.call(uri, "put_object", container, obj, body, content_type=content_type)

    def produce(self, storlet, uris, dest, params, metadata=None, content_type=None):
        """Write ``dest`` as ``storlet``'s output over ``uris`` in one call,
        next to them: ``uris[0]`` the request's object, the rest extra
        resources, in order.  Nothing is written if the storlet fails; a
        refusal names the input the storlet named."""
        container, obj = parse_uri(self.locate(uris[0]))
        dest_container, dest_obj = parse_uri(self.locate(dest))
        headers = {protocol.OBJECT_META + k: v for k, v in (metadata or {}).items()}
        try:
            headers = self.swift.storlet_copy(
                container,
                obj,
                dest_container,
                dest_obj,
                storlet,
                params,
                [self._resource(uri) for uri in uris[1:]] or None,
                headers=headers,
                content_type=content_type,
            )
        except SwiftError as err:
            raise _refusal(storlet, uris, err) from None
        self.placements.append(_placement(headers, "proxy" if len(uris) > 1 else "object-server"))

    def extract_limit(self):
        """Most objects one :meth:`extract` may write: the cluster's bulk
        extraction limit (``max_extract_members`` in its /info), or None
        when it publishes none."""
        return self.swift.limits().extract_members

    def extract(self, storlet, src, dest_prefix, params, max_members):
        """Write the members of the tar ``storlet`` outputs over ``src`` as
        objects under ``dest_prefix``, next to ``src`` (Swift's bulk
        extraction writes them, with the metadata of their pax headers);
        returns how many.  Members past ``max_members`` fail the call."""
        container, name = parse_uri(self.locate(src))
        dest_container, prefix = parse_uri(self.locate(dest_prefix))
        try:
            answer = self.swift.storlet_extract(
                container, name, dest_container, prefix.rstrip("/"), storlet, params
            )
        except SwiftError as err:
            raise _refusal(storlet, [src], err) from None
        created = answer.get("Number Files Created")
        if not answer["Response Status"].startswith("201") or answer.get("Errors"):
            raise StorletFailed(src, "extraction failed: %s" % json.dumps(answer)[:500])
        if not isinstance(created, int) or created > max_members:
            raise StorletFailed(src, "extraction wrote %r objects" % (created,))
        self.placements.append("object-server")
        return created

    def delete(self, uris, concurrency=1):
        """Remove ``uris``; a missing one is not an error."""
        self.swift.parallel(
            lambda uri: self._delete(uri, *parse_uri(self.locate(uri))), list(uris), concurrency
        )

    # -- batches -----------------------------------------------------------
    def run_storlet(
        self,
        storlet,
        src,
        dest,
        params=None,
        concurrency=4,
        resume=True,
        *,
        extra_resources=None,
        extras=(),
        progress=None,
        dry_run=False,
        output_type=None,
        storlets_dir=None,
    ):
        """A storlet over every object of ``src`` into ``dest``, each output
        made in place with copy semantics; ``extras`` are URIs of objects
        every call also reads, after ``extra_resources`` (``/container/object``
        paths); see :func:`mlstorlets.client.placement.run_anywhere`."""
        extra = list(extra_resources or ()) + [self._resource(u) for u in extras]
        summary = batch.run_batch(
            self.swift,
            storlet,
            self.locate(src),
            self.locate(dest),
            params=params,
            concurrency=concurrency,
            resume=resume,
            extra_resources=extra or None,
            progress=progress,
            dry_run=dry_run,
            output_type=output_type,
        )
        summary.placement = self.placement
        return summary

    def copy(self, src, dest, concurrency=4, resume=True, *, progress=None, dry_run=False):
        """A server-side copy of every object of ``src`` (no data moves)."""
        src, dest = parse(self.locate(src)), parse(self.locate(dest))
        src_store, _ = self.stores.open(src)
        dest_store, _ = self.stores.open(dest)
        tasks = tasks_of(src_store, src, dest)
        if not tasks:
            raise NotFound(src, "no objects under this prefix")
        if not dry_run:
            dest_store.ensure_container()
        found = existing(dest_store, dest) if resume else {}

        def up_to_date(task):
            entry = found.get(task.dest_key)
            return entry is not None and entry.etag == task.source.etag

        def work(task, job):
            dest_store.copy_from(
                src.location, task.source.name, task.dest_key, {SOURCE_ETAG: task.source.etag}
            )

        return batch.execute(
            batch.BatchSummary("copy", placement=self.placement),
            tasks,
            work,
            concurrency,
            progress,
            up_to_date,
            dry_run,
        )


def _placement(headers, guess):
    """Where a call ran: an object server when its answer says so (one
    with extra resources it held), else ``guess``."""
    # swiftclient's headers: names in lower case.
    ran_on = headers.get(protocol.RAN_ON_HEADER.lower())
    return "object-server" if ran_on == protocol.RAN_ON_OBJECT_SERVER else guess


def _refusal(storlet, uris, err):
    """The error of a call over ``uris``, naming the object the storlet
    named (:data:`mlstorlets.sandbox.protocol.OBJECT_HEADER`)."""
    if len(uris) > 1 and err.object:
        for uri in uris:
            if "%s/%s" % parse_uri(uri) == err.object or uri == err.object:
                return storlet_error(
                    "%s (in a call over %d objects from %s)" % (storlet, len(uris), uris[0]),
                    err,
                    uri,
                )
    return storlet_error(storlet, err, uris[0])
