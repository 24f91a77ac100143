"""Client side of the SGD storlet: naming objects and invoking the storlet.

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

import os
import uuid
from urllib.parse import quote

from swiftclient import client as swift_client
from swiftclient.exceptions import ClientException

from mlstorlets.client.connection import connection_from_environment  # noqa: F401
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.client.uri import format_uri, parse_uri
from mlstorlets.sandbox.sgd.training import encode_state_params

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

    Attributes
    ----------
    placements : list of str
        For each call, ``'object-server'`` (state in headers) or ``'proxy'``
        (state as an extra resource).
    """

    def __init__(self, connection, storlet=STORLET_NAME, budget=None):
        self.connection = connection
        self.storlet = storlet
        self.budget = budget
        self.placements = []

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
        container, obj = parse_uri(uri)
        params = dict(params, name=uri)
        headers = {"X-Run-Storlet": self.storlet}
        temp = None
        if state_blob is not None:
            budget = self._budget()
            if budget.fits(len(state_blob)):
                params.update(encode_state_params(state_blob, budget.chunk_size))
            else:
                temp = f"{STATE_PREFIX}{uuid.uuid4().hex}"
        for i, (key, value) in enumerate(sorted(params.items()), start=1):
            # the middleware unquotes parameter headers
            headers[f"X-Storlet-Parameter-{i}"] = f"{key}:{quote(str(value), safe='/:=,')}"
        try:
            if temp is not None:
                self.connection.put_object(container, temp, state_blob,
                                           content_type="application/octet-stream")
                headers["X-Storlet-Extra-Resources"] = f"/{container}/{temp}"
            _, body = self.connection.get_object(container, obj, headers=headers)
        except ClientException as exc:
            # The proxy names the object and the reason in the body.
            reason = (exc.http_response_content or b"")
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            raise ObjectError(uri, reason.strip() or f"storlet GET failed: {exc}") from exc
        finally:
            if temp is not None:
                try:
                    self.connection.delete_object(container, temp)
                except ClientException:
                    pass
        self.placements.append("object-server" if temp is None else "proxy")
        return body


def transport_for(connection=None, storlet=STORLET_NAME):
    """A transport over ``connection``, or over one built from the environment."""
    if connection is None:
        connection = connection_from_environment(os.environ)
    if not isinstance(connection, swift_client.Connection) and not hasattr(
            connection, "get_object"):
        raise TypeError("connection must be a swiftclient.client.Connection")
    return StorletTransport(connection, storlet=storlet)
