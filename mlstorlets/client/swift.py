"""The client's one way into Swift: connections, listings, storlet calls.

Everything on the client that talks to the cluster (the batch engine,
placement, the face pipeline, the ``swift://`` store, the estimators) goes
through a :class:`Swift` gateway, so that they agree on four things:

* **Connections**: a swiftclient ``Connection`` is not thread-safe; each
  thread gets its own clone of the one given, sharing its token.
* **Internal names**: a listing never shows the objects the project keeps
  for itself (:func:`mlstorlets.sandbox.protocol.is_internal`).
* **Storlet requests**: parameters are quoted once, by
  :func:`mlstorlets.sandbox.protocol.parameter_headers`, so that any name or
  value reaches the storlet exactly; a storlet is checked once, before any
  call, against what it declares (:meth:`Swift.check_storlet`).
* **Errors**: a failed request raises :class:`SwiftError`, a
  :class:`~mlstorlets.client.errors.StoreError` naming the object, with a
  one-line reason (the proxy's structured storlet error when it sends one,
  else the status and the body without HTML).

The API, for the modules that call it::

    swift = Swift(conn)
    swift.conn                         # this thread's connection
    swift.call(name, 'put_object', c, o, body)   # any swiftclient call
    swift.head(c, o) / swift.listing(c, prefix) / swift.ensure_container(c)
    swift.check_storlet(storlet, params)          # once, before a batch: its Declaration
    swift.storlet_get(c, o, storlet, params, extra_resources)
    swift.storlet_copy(c, o, dest_c, dest_o, storlet, params, ...)
    swift.parallel(fn, items, concurrency)        # fn(item), any thread
"""

import dataclasses
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import requests
from swiftclient.client import Connection, resp_header_dict
from swiftclient.exceptions import ClientException

from mlstorlets.client.errors import StoreError, UsageError
from mlstorlets.sandbox import protocol

# The account container the storlets engine reads storlets from.
STORLET_CONTAINER = "storlet"
# Swift's default max_header_size, for a cluster that does not publish it.
DEFAULT_HEADER_LIMIT = 8192


@dataclasses.dataclass(frozen=True)
class Declaration:
    """What a deployed storlet declares (:meth:`Swift.declaration`)."""

    parameters: tuple | None
    output_type: tuple | None
    #: The storlet maps each input of a call to an output of its own.
    many: bool = False


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a cluster accepts, as its /info publishes it.

    Attributes
    ----------
    header : int
        Longest request header line (Swift's ``max_header_size``).
    datagram : int
        Bytes of an invocation's SBus datagram (inputs' metadata and
        parameters).
    extract_members : int or None
        Most objects one extraction writes; None where not published.
    body_input : int
        Longest request body a storlet GET takes as an input
        (:mod:`mlstorlets.server.middleware.body_input`); 0 where not
        published.
    """

    header: int = DEFAULT_HEADER_LIMIT
    datagram: int = protocol.SBUS_DATAGRAM_LIMIT
    extract_members: int = None
    body_input: int = 0

    @classmethod
    def from_info(cls, info):
        swift, ours = info.get("swift", {}), info.get(protocol.INFO_KEY, {})
        members = ours.get("max_extract_members")
        return cls(
            int(swift.get("max_header_size", DEFAULT_HEADER_LIMIT)),
            int(ours.get("sbus_datagram_limit", protocol.SBUS_DATAGRAM_LIMIT)),
            None if members is None else int(members),
            int(ours.get(protocol.MAX_BODY_INPUT_KEY, 0)),
        )


class SwiftError(StoreError):
    """Swift, or a storlet through it, refused or failed a request.

    Attributes
    ----------
    name : str
        ``container/object`` (or ``container``) the request was about.
    status : int or None
        The HTTP status; None when Swift could not be reached.
    kind : {'refused', 'failed', 'timed-out', 'out-of-memory', 'unavailable'} or None
        For a storlet request, what became of the storlet
        (:data:`mlstorlets.sandbox.protocol.STATUS`); the runners turn it
        into a :class:`~mlstorlets.client.errors.Refused` or
        :class:`~mlstorlets.client.errors.StorletFailed`, as on the client.
    object : str or None
        For a refusal, the input the storlet named
        (:data:`mlstorlets.sandbox.protocol.OBJECT_HEADER`): one of the
        objects a call read.
    reason : str
        One line, for a human: the status, then why.
    """


def reason_of(err):
    """(kind, reason) of a failed swiftclient request, in one line.

    The reason leads with the status; a storlet error carries its kind and
    the storlet's reason (:func:`mlstorlets.sandbox.protocol.storlet_error`).
    """
    if not err.http_status:
        return None, "cannot reach Swift: %s" % err.msg
    found = protocol.storlet_error(err.http_status, err.http_response_headers)
    kind, reason = found or (None, None)
    if reason is None:
        reason = _text(err.http_response_content) or err.http_reason or ""
    return kind, ("%s %s" % (err.http_status, reason)).strip()


def _swift_error(name, err):
    """The :class:`SwiftError` naming ``name`` for swiftclient's ``err``."""
    kind, reason = reason_of(err)
    headers = err.http_response_headers
    return SwiftError(
        name,
        reason,
        err.http_status,
        kind,
        protocol.failed_object(headers),
        protocol.failed_parameter(headers),
        protocol.failed_detail(headers),
    )


def _text(body):
    """A response body as one line of text, without markup."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return " ".join(re.sub(r"<[^>]*>", " ", body or "").split())


def clone_connection(conn):
    """A connection like ``conn`` that shares its token."""
    url, token = (conn.url, conn.token) if conn.url and conn.token else conn.get_auth()
    return Connection(
        authurl=conn.authurl,
        user=conn.user,
        key=conn.key,
        auth_version=conn.auth_version,
        os_options=conn.os_options,
        preauthurl=url,
        preauthtoken=token,
        retries=1,
        insecure=conn.insecure,
        timeout=conn.timeout,
    )


def storlet_headers(storlet, params=None, extra_resources=None):
    """Request headers that run ``storlet`` with ``params`` (any str) and
    the ``/container/object`` paths ``extra_resources`` (unquoted) as more
    inputs."""
    headers = {"X-Run-Storlet": storlet}
    headers.update(protocol.parameter_headers(params or {}))
    if extra_resources:
        # The engine splits the header at commas and unquotes each path.
        headers["X-Storlet-Extra-Resources"] = ",".join(
            quote(path, safe="/") for path in extra_resources
        )
    return headers


class Swift:
    """A gateway to one Swift account, usable from any thread.

    Parameters
    ----------
    conn : swiftclient.client.Connection
        Authenticated on first use; every thread works on its own clone,
        sharing its token.
    """

    def __init__(self, conn):
        self.parent = conn
        self._local = threading.local()
        self._lock = threading.Lock()
        self._limits = None

    @property
    def conn(self):
        """This thread's connection: a clone of the parent sharing its
        token (the parent itself may be in use by its owner)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:  # the first clone authenticates the parent
                conn = self._local.conn = clone_connection(self.parent)
        return conn

    def call(self, name, method, *args, **kwargs):
        """``self.conn.<method>(*args, **kwargs)``, its errors a
        :class:`SwiftError` naming ``name``."""
        try:
            return getattr(self.conn, method)(*args, **kwargs)
        except ClientException as err:
            raise _swift_error(name, err) from None
        except OSError as err:
            raise SwiftError(name, "cannot reach Swift: %s" % err) from None

    def limits(self):
        """The cluster's :class:`Limits`, read from its /info once; the
        defaults where /info is off or says nothing of them."""
        if self._limits is None:
            try:
                info = self.conn.get_capabilities()
            except (ClientException, OSError, ValueError):
                info = {}
            self._limits = Limits.from_info(info)
        return self._limits

    # -- objects ---------------------------------------------------------
    def head(self, container, name=None):
        """The headers of an object (or a container), None if missing."""
        what = container if name is None else "%s/%s" % (container, name)
        try:
            if name is None:
                return self.call(what, "head_container", container)
            return self.call(what, "head_object", container, name)
        except SwiftError as err:
            if err.status == 404:
                return None
            raise

    def listing(self, container, prefix=""):
        """Listing entries (dicts) under ``prefix``, internal names left
        out; a missing container is a :class:`SwiftError` (404)."""
        try:
            _, entries = self.call(
                container, "get_container", container, prefix=prefix or None, full_listing=True
            )
        except SwiftError as err:
            if err.status == 404:
                raise SwiftError(container, "no such container", 404) from None
            raise
        return [e for e in entries if "name" in e and not protocol.is_internal(e["name"])]

    def ensure_container(self, container):
        """Create ``container`` unless it exists (as ``swift upload``)."""
        self.call(container, "put_container", container)

    # -- storlets --------------------------------------------------------
    def declaration(self, storlet):
        """What ``storlet`` declares, read from its object in one HEAD: the
        parameters it takes (a tuple of declarations, with their types and
        bounds, or None when it declares none) and the
        ``(suffix, content type)`` of its outputs (or None: as the
        source).  A storlet not deployed is a :class:`SwiftError`.

        A user the account lets run storlets but not read the storlet
        container (a storlet ACL) cannot check: (None, None), and the
        engine answers each call."""
        try:
            headers = self.head(STORLET_CONTAINER, storlet)
        except SwiftError as err:
            if err.status in (401, 403):
                return Declaration(None, None)
            raise
        if headers is None:
            raise SwiftError(
                storlet, "no such storlet in this account (deploy it: mlstorlets deploy)", 404
            )
        parameters = protocol.parameters_from_metadata(user_metadata(headers))
        output_type = headers.get((protocol.OBJECT_META + protocol.OUTPUT_TYPE_KEY).lower())
        return Declaration(
            parameters,
            protocol.parse_output_type(output_type),
            headers.get((protocol.OBJECT_META + protocol.MANY_KEY).lower()) == "yes",
        )

    def check_storlet(self, storlet, params=None):
        """Check once, before any call, that ``storlet`` is deployed and
        takes ``params``; its :class:`Declaration`, for the batch to use.

        Raises
        ------
        SwiftError
            No such storlet.
        mlstorlets.client.errors.UsageError
            A parameter it does not declare.
        """
        declared = self.declaration(storlet)
        check_parameters(storlet, params, declared.parameters)
        return declared

    def storlet_get(
        self,
        container,
        name,
        storlet,
        params=None,
        extra_resources=None,
        headers=None,
        body=None,
        **kwargs,
    ):
        """``GET`` of the storlet's output over ``container/name``:
        (headers, body); ``kwargs`` go to swiftclient's ``get_object``.

        ``body`` (bytes), when given, is the storlet's second input, before
        ``extra_resources``: the request's body, which the cluster must take
        (:attr:`Limits.body_input`)."""
        request = dict(headers or {})
        request.update(storlet_headers(storlet, params, extra_resources))
        label = "%s/%s" % (container, name)
        if body is None:
            return self.call(label, "get_object", container, name, headers=request, **kwargs)
        if kwargs:
            raise TypeError("storlet_get with a body takes no %s" % ", ".join(sorted(kwargs)))
        request[protocol.BODY_INPUT_HEADER] = "true"
        attempts = 1 + BUSY_RETRIES
        for attempt in range(1, attempts + 1):
            # Not sent again after a broken connection: the storlet may
            # have run already.
            resp, answer = self._request(
                label, "GET", [container, name], body, request, retry_broken=False
            )
            wait = _retry_after(resp)
            if wait is None or attempt == attempts:
                break
            # A proxy holding other callers' bodies read nothing of this
            # one, and the storlet did not run: asked to wait, longer each
            # time.
            # Spread out, so that callers turned away together do not
            # all come back at once.
            time.sleep(min(wait * 2 ** (attempt - 1), MAX_RETRY_AFTER) * random.uniform(0.5, 1.5))
        if not 200 <= resp.status < 300:
            raise _swift_error(label, ClientException.from_response(resp, "storlet GET", answer))
        return dict(resp_header_dict(resp)), answer

    def storlet_copy(
        self,
        container,
        name,
        dest_container,
        dest_name,
        storlet,
        params=None,
        extra_resources=None,
        headers=None,
        **kwargs,
    ):
        """Make ``dest_container/dest_name`` the storlet's output over
        ``container/name``, inside the cluster (``PUT`` with
        ``X-Copy-From``); nothing is written if the storlet fails.
        Returns the response headers."""
        request = dict(headers or {})
        request.update(storlet_headers(storlet, params, extra_resources))
        # The proxy unquotes it: a name with % or ? must be quoted.
        request["X-Copy-From"] = quote("/%s/%s" % (container, name))
        response = {}
        self.call(
            "%s/%s" % (container, name),
            "put_object",
            dest_container,
            dest_name,
            b"",
            headers=request,
            response_dict=response,
            **kwargs,
        )
        return response.get("headers", {})

    def storlet_extract(
        self,
        container,
        name,
        dest_container,
        dest_prefix,
        storlet,
        params=None,
        headers=None,
        extra_resources=None,
        mode=protocol.EXTRACT_TAR,
    ):
        """Make objects under ``dest_container/dest_prefix`` from the
        storlet's tar output over ``container/name``, inside the cluster
        (``PUT`` with ``X-Copy-From`` and ``X-Mlstorlets-Extract: tar``, see
        :mod:`mlstorlets.server.middleware.storlet_copy`).

        Returns
        -------
        dict
            Bulk's answer (``Response Status``, ``Number Files Created``,
            ``Errors``).
        """
        label = "%s/%s" % (container, name)
        request = dict(headers or {})
        request.update(storlet_headers(storlet, params, extra_resources))
        request[protocol.EXTRACT_HEADER] = mode
        request["X-Copy-From"] = quote("/%s/%s" % (container, name))
        # swiftclient's put_object drops the response body, which holds the
        # answer.
        resp, body = self._request(
            label, "PUT", [dest_container] + ([dest_prefix] if dest_prefix else []), b"", request
        )
        if not 200 <= resp.status < 300:
            kind, reason = reason_of(ClientException.from_response(resp, "extraction", body))
            raise SwiftError(label, reason, resp.status, kind)
        try:
            return protocol.storlet_json(body.decode("utf-8", "replace").strip())
        except ValueError:
            return {"Response Status": "unreadable answer %r" % body[:200], "Errors": []}

    def _request(self, label, method, names, body, headers, retry_broken=True):
        """``method`` on the account's ``names`` (container, and object)
        with ``body``, through this thread's connection as is: (response,
        its body).

        For what swiftclient's calls do not send or return.  Retried as
        swiftclient retries (an expired token: authenticate again; a
        connection refused or reset, unless not ``retry_broken``) but never
        after a timeout, which a storlet past its time would pay twice.
        """
        conn = self.conn
        attempts = 1 + max(0, int(getattr(conn, "retries", 0) or 0))
        for attempt in range(1, attempts + 1):
            if not conn.url or not conn.token:
                conn.url, conn.token = conn.get_auth()
            parsed, http = conn.http_connection()
            path = "/".join([parsed.path] + [quote(n) for n in names])
            try:
                http.request(method, path, body, dict(headers, **{"X-Auth-Token": conn.token}))
                resp = http.getresponse()
                answer = resp.read()
            except (ConnectionError, requests.exceptions.ConnectionError) as err:
                if attempt == attempts or not retry_broken:
                    raise SwiftError(label, "cannot reach Swift: %s" % err) from None
                time.sleep(min(2 ** (attempt - 1), 8))
                continue
            except OSError as err:
                raise SwiftError(label, "cannot reach Swift: %s" % err) from None
            finally:
                http.close()
            if resp.status == 401 and attempt < attempts:
                conn.token = None
                continue
            return resp, answer

    def parallel(self, fn, items, concurrency):
        """``[fn(item) for item in items]``, ``concurrency`` at a time (each
        thread using its own connection through :attr:`conn`)."""
        if concurrency < 1:
            raise UsageError("concurrency must be at least 1")
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return list(pool.map(fn, items))


# The longest wait a Retry-After is taken for, in seconds, and how many
# times a call the cluster could not take now is sent again (waiting 1, 2,
# 4 then 8 s for a Retry-After of 1).
MAX_RETRY_AFTER = 8
BUSY_RETRIES = 4


def _retry_after(resp):
    """Seconds the engine's ``503`` for a call it did not run
    (:data:`~mlstorlets.sandbox.protocol.NOT_RUN_HEADER`) asks to wait,
    else None."""
    headers = dict(resp_header_dict(resp))
    value = headers.get("retry-after", "")
    if resp.status != 503 or protocol.NOT_RUN_HEADER.lower() not in headers:
        return None
    return min(int(value), MAX_RETRY_AFTER) if value.strip().isdigit() else 1


def user_metadata(headers):
    """The user metadata of response ``headers``: keys lower case, without
    ``X-Object-Meta-``."""
    prefix = protocol.OBJECT_META.lower()
    return {k.lower()[len(prefix) :]: v for k, v in headers.items() if k.lower().startswith(prefix)}


def check_parameters(storlet, params, declared):
    """Refuse a parameter ``storlet`` does not declare, or a value outside
    its declared type or bounds (``declared`` None: it declares none,
    anything goes)."""
    try:
        unknown = protocol.undeclared(params or {}, declared)
        refused = protocol.refused_values(params or {}, declared)
    except ValueError as err:  # a declaration this client cannot read
        raise UsageError("storlet %s: %s" % (storlet, err)) from None
    if unknown:
        raise UsageError(
            "storlet %s takes no parameter %s (it takes: %s)"
            % (
                storlet,
                ", ".join(unknown),
                ", ".join(sorted(protocol.declared_names(declared))) or "none",
            )
        )
    if refused:
        raise UsageError("storlet %s: %s" % (storlet, "; ".join(refused)))
