"""Client side of the SGD storlet: naming objects and invoking the storlet.

A pass over objects is planned into *groups* (:meth:`StorletTransport.plan`),
one storlet invocation each: the GET of a group's first object names the
others in ``X-Storlet-Extra-Resources``, so the storlet reads them in order
with the model in memory, and only one state crosses the network per group
instead of one per object.  Storlets runs such a request on the proxy: the
data then moves from object servers to the proxy, inside the cluster, never
to the client.  How many objects a group holds is bounded by the engine's
4 KB SBus datagram (each input's user metadata and all the parameters are
in it, see :mod:`mlstorlets.client.faces.plan`), by the header line, by
``max_group_bytes`` (the storlet answers only once it has read everything,
within the engine's ``storlet_timeout``) and by ``objects_per_call``.  The
group's list of objects (names, weights, sizes) and the state ride in the
parameters when the datagram has room, else in one temporary object named
first among the extra resources.  A group of one object keeps the per-object
protocol below and runs on an object server holding it.

Wire protocol, per object::

    GET /v1/<account>/<container>/<object>
    X-Run-Storlet: <storlet>                      (sgd_estimator.SGDEstimatorStorlet)
    X-Storlet-Parameter-<i>: <key>:<value>        one per parameter (op, name,
                                                  data options, state_parts, state_<j>)

The response body is the storlet's output: the new state (``op=partial_fit``)
or JSON sums (``op=score``, ``op=labels``).

Where the storlet runs, and what it costs:

* State small enough for headers (see :class:`HeaderBudget`): the proxy
  forwards the GET and its headers to an object server holding the object,
  and the storlet runs there. Only the state crosses the network (twice:
  base64 in request headers, raw in the response).
* State too big: the client PUTs it as ``<container>/.mlstorlets-state/<uuid>``
  and names it in ``X-Storlet-Extra-Resources``. Storlets then runs the
  storlet on the proxy (it gathers extra resources there), so the whole data
  object streams from its object server to the proxy, plus one PUT, one
  internal GET and one DELETE of the state object (deleted in a ``finally``).
"""

import json
import os
import uuid
from urllib.parse import quote

from swiftclient import client as swift_client
from swiftclient.exceptions import ClientException

from mlstorlets.client.connection import connection_from_environment  # noqa: F401
from mlstorlets.client.faces import plan as sbus_plan
from mlstorlets.client.uri import format_uri, parse_uri
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.sgd.training import RESOURCE, encode_job, encode_state_params

STORLET_NAME = "sgd_estimator.py"
STATE_PREFIX = ".mlstorlets-state/"

# Limits of the servers a storlet GET crosses (proxy, then object server):
# swift sets eventlet's per-line limit to its max_header_size constraint
# (default 8192, published in /info), eventlet caps the whole header block at
# 65536 bytes (MAX_TOTAL_HEADER_SIZE, not configurable through swift), and
# swift raises http.client's header count limit to 1.6 * (max_meta_count + 36)
# = 201 by default.
DEFAULT_MAX_HEADER_SIZE = 8192
MAX_TOTAL_HEADER_SIZE = 65536
# What we leave to everybody else in the object server's request: the
# client's own headers (the auth token above all), the headers the proxy adds
# (X-Backend-*, X-Timestamp, X-Trans-Id, Referer…) and the storlet headers the
# storlet middleware adds (X-Storlet-Main, -Language, -Dependency…).
RESERVED_HEADER_BYTES = 16384
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


class HeaderBudget:
    """How much state can ride in ``X-Storlet-Parameter-N`` headers.

    Parameters
    ----------
    max_header_size : int, default=8192
        The cluster's ``max_header_size``: a header line (name, ``: ``,
        value, CRLF) must be shorter than this.
    total : int, default=65536
        Bytes of all request headers together.
    reserved : int, default=16384
        Bytes left to the headers that are not ours.

    Attributes
    ----------
    chunk_size : int
        Base64 characters in one state header.
    max_state_bytes : int
        Largest raw state sent inline; larger ones go through a temporary
        object.
    """

    def __init__(self, max_header_size=DEFAULT_MAX_HEADER_SIZE,
                 total=MAX_TOTAL_HEADER_SIZE, reserved=RESERVED_HEADER_BYTES):
        self.max_header_size = max_header_size
        self.total = total
        self.reserved = reserved
        # longest name and key prefix we use: "X-Storlet-Parameter-999: state_999:"
        overhead = len("X-Storlet-Parameter-999: state_999:") + len("\r\n")
        self.chunk_size = (max_header_size - 1 - overhead) // 4 * 4
        n_chunks = max(0, (total - reserved) // (self.chunk_size + overhead))
        self.max_state_bytes = n_chunks * self.chunk_size // 4 * 3

    def fits(self, n_bytes):
        return n_bytes <= self.max_state_bytes


class StorletTransport:
    """Runs the SGD storlet on objects through a swiftclient Connection.

    Parameters
    ----------
    connection : swiftclient.client.Connection
    storlet : str, default='sgd_estimator.py'
        Value of ``X-Run-Storlet``.
    budget : HeaderBudget, default=None
        None reads ``max_header_size`` from the cluster's ``/info`` on first
        use.
    objects_per_call : int, default=None
        Most objects one invocation reads; None: as many as the limits allow;
        1: one invocation per object, on an object server holding it.
    max_group_bytes : int, default=128 MiB
        Most bytes of data one invocation of several objects reads.

    Attributes
    ----------
    placements : list of str
        For each call, ``'object-server'`` (state in headers) or ``'proxy'``
        (state as an extra resource).
    """

    def __init__(self, connection, storlet=STORLET_NAME, budget=None, objects_per_call=None,
                 max_group_bytes=DEFAULT_MAX_GROUP_BYTES):
        self.connection = connection
        self.storlet = storlet
        self.budget = budget
        self.objects_per_call = objects_per_call
        self.max_group_bytes = max_group_bytes
        self.placements = []
        self._heads = {}

    def _budget(self):
        if self.budget is None:
            size = DEFAULT_MAX_HEADER_SIZE
            try:
                caps = self.connection.get_capabilities()
                size = int(caps.get("swift", {}).get("max_header_size", size))
            except (ClientException, ValueError, TypeError, KeyError):
                pass
            self.budget = HeaderBudget(max_header_size=size)
        return self.budget

    def list_objects(self, source):
        """URIs named by ``source``: a URI, a list of URIs, or a prefix ending in ``/``.

        A prefix (``swift://c/dir/``, or ``swift://c/`` for the container) is
        listed; the temporary state objects are never included.
        """
        if isinstance(source, str):
            source = [source]
        uris = []
        for item in source:
            container, obj = parse_uri(item)
            if obj and not obj.endswith("/"):
                uris.append(item)
                continue
            _, listing = self.connection.get_container(container, prefix=obj or None,
                                                       full_listing=True)
            uris.extend(format_uri(container, entry["name"]) for entry in listing
                        if "name" in entry and not entry["name"].startswith(STATE_PREFIX)
                        and not entry["name"].endswith("/"))
        if not uris:
            raise ValueError(f"no objects in {source!r}")
        return uris

    def run(self, uri, params, state_blob=None):
        """Run the storlet on ``uri`` and return its output body (bytes).

        Parameters
        ----------
        uri : str
        params : dict of str to str
        state_blob : bytes, default=None

        Raises
        ------
        mlstorlets.sandbox.errors.ObjectError
            The GET failed (the storlet refused the object, or Swift did).
        """
        params = dict(params, name=uri)
        inline = self._inline(params, state_blob, [uri])
        if inline is not None:
            return self._invoke([uri], inline, None, "object-server")
        return self._invoke([uri], params, state_blob, "proxy")

    def run_group(self, entries, params, state_blob=None):
        """Run the storlet once over several objects, in order.

        Parameters
        ----------
        entries : list of (str, float)
            Object URIs with the weight of their rows, in training order.
        params : dict of str to str
            Parameters common to the objects (op, data options, holdout).
        state_blob : bytes, default=None

        Returns
        -------
        body : bytes

        Raises
        ------
        mlstorlets.sandbox.errors.ObjectError
            Naming the object the storlet refused, or the group's first.
        """
        uris = [uri for uri, _ in entries]
        if len(entries) == 1:
            weight = float(entries[0][1])
            if weight != 1.0:
                params = dict(params, object_weight=repr(weight))
            return self.run(uris[0], params, state_blob)
        job = encode_job([(uri, weight, self._heads.get(uri, (None,))[0])
                          for uri, weight in entries])
        inline = self._inline(dict(params, job=job), state_blob, uris)
        if inline is not None:
            return self._invoke(uris, inline, None, "proxy")
        blob = job.encode("utf-8") + b"\n" + (state_blob or b"")
        return self._invoke(uris, dict(params, job=RESOURCE), blob, "proxy")

    def _inline(self, params, state_blob, uris):
        """``params`` with the state added, if that fits the request; else None."""
        if state_blob is not None:
            budget = self._budget()
            if not budget.fits(len(state_blob)):
                return None
            params = dict(params, **encode_state_params(state_blob, budget.chunk_size))
        used = SBUS_ENGINE_RESERVE + datagram_cost(params) + sum(
            sbus_plan.input_cost(self._heads[uri][1]) if uri in self._heads
            else UNKNOWN_METADATA_COST for uri in uris)
        return params if used <= sbus_plan.SBUS_LIMIT else None

    def _invoke(self, uris, params, resource, placement):
        """GET the first object through the storlet, the others as extra resources.

        ``resource``, if not None, is PUT as a temporary object named first
        among the extra resources, and deleted whatever happens.
        """
        container, obj = parse_uri(uris[0])
        headers = {"X-Run-Storlet": self.storlet}
        for i, (key, value) in enumerate(sorted(params.items()), start=1):
            # the middleware unquotes parameter headers
            headers[f"X-Storlet-Parameter-{i}"] = f"{key}:{quote(str(value), safe='/:=,')}"
        temp = None if resource is None else f"{STATE_PREFIX}{uuid.uuid4().hex}"
        extra = [] if temp is None else [sbus_plan.resource_path(container, temp)]
        extra += [sbus_plan.resource_path(*parse_uri(uri)) for uri in uris[1:]]
        if extra:
            headers["X-Storlet-Extra-Resources"] = ",".join(extra)
        try:
            if temp is not None:
                self.connection.put_object(container, temp, resource,
                                           content_type="application/octet-stream")
            _, body = self.connection.get_object(container, obj, headers=headers)
        except ClientException as exc:
            # The proxy names the object and the reason in the body.
            reason = (exc.http_response_content or b"")
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            raise _refusal(self.storlet, uris, reason.strip()
                           or f"storlet GET failed: {exc}") from exc
        finally:
            if temp is not None:
                try:
                    self.connection.delete_object(container, temp)
                except ClientException:
                    pass
        self.placements.append(placement)
        return body

    def describe(self, uris):
        """Size and user metadata of each object (one HEAD each, kept)."""
        for uri in uris:
            if uri not in self._heads:
                container, obj = parse_uri(uri)
                try:
                    headers = self.connection.head_object(container, obj)
                except ClientException as exc:
                    what = ("source object not found" if exc.http_status == 404
                            else "cannot read the object")
                    raise ObjectError(uri, f"{what} ({exc.http_status} "
                                           f"{exc.http_reason})") from exc
                meta = {k[len("x-object-meta-"):]: v for k, v in headers.items()
                        if k.lower().startswith("x-object-meta-")}
                self._heads[uri] = (int(headers.get("content-length", 0)), meta)
        return {uri: self._heads[uri] for uri in uris}

    def plan(self, uris, params):
        """Split ``uris``, in order, into the groups of one invocation each.

        Parameters
        ----------
        uris : list of str
        params : dict of str to str
            The parameters common to the group's requests.

        Returns
        -------
        groups : list of list of str
        """
        if self.objects_per_call == 1 or len(uris) == 1:
            return [[uri] for uri in uris]
        heads = self.describe(uris)
        job_path = sbus_plan.resource_path("c" * 256, STATE_PREFIX + uuid.uuid4().hex)
        budget = (sbus_plan.SBUS_LIMIT - SBUS_ENGINE_RESERVE - sbus_plan.input_cost({})
                  - datagram_cost(dict(params, job=RESOURCE)))
        groups = sbus_plan.plan_groups(
            [sbus_plan.input_cost(heads[u][1]) for u in uris],
            [sbus_plan.resource_path(*parse_uri(u)) for u in uris],
            weights=[max(1, heads[u][0]) for u in uris], max_weight=self.max_group_bytes,
            budget=budget, header_limit=self._budget().max_header_size - len(job_path) - 1)
        size = self.objects_per_call or len(uris)
        return [[uris[i] for i in group[start:start + size]]
                for group in groups for start in range(0, len(group), size)]


def _refusal(storlet, uris, text):
    """The error of a call over ``uris``, naming the object the storlet named.

    The proxy names the object the request was for (a group's first) and
    repeats the storlet's reason, which starts with the object it refused.
    """
    if len(uris) > 1:
        for uri in uris:
            head, marker, rest = text.partition(f"{uri}: ")
            if marker:
                return ObjectError(uri, f"storlet {storlet} refused it, in a call over "
                                        f"{len(uris)} objects from {uris[0]}: {rest}")
    return ObjectError(uris[0], text)


def transport_for(connection=None, storlet=STORLET_NAME, objects_per_call=None):
    """A transport over ``connection``, or over one built from the environment."""
    if connection is None:
        connection = connection_from_environment(os.environ)
    if not isinstance(connection, swift_client.Connection) and not hasattr(
            connection, "get_object"):
        raise TypeError("connection must be a swiftclient.client.Connection")
    return StorletTransport(connection, storlet=storlet, objects_per_call=objects_per_call)
