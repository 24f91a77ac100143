"""The request body as a storlet input.

A storlet's inputs are objects: the one a request names, and those that
``X-Storlet-Extra-Resources`` adds.  A caller whose input is its own (a
model's state, which ``remote_fit`` sends with every call) had to store it
as an object first and delete it after: two more requests per call, and an
object that outlives a client killed between them.

With ``X-Mlstorlets-Body-Input: true``
(:data:`mlstorlets.sandbox.protocol.BODY_INPUT_HEADER`) on a ``GET`` with
``X-Run-Storlet`` of an object, the request's body is the storlet's second
input, after the object and before the extra resources; nothing of it is
stored.  The storlet runs on the proxy, which holds the body.

* The body must declare its length (none is an empty body): ``411`` for a
  chunked one, ``413`` over ``max_body_input_bytes`` (default 128 MiB,
  published in /info under :data:`~mlstorlets.sandbox.protocol.INFO_KEY`),
  ``400`` for the header on anything but a storlet GET of an object.  The
  object server's GET is sent without it.
* Once the caller's right to run the storlet is checked, and before the
  object is read, the proxy reads the whole body into an unlinked
  temporary file (in its temporary directory) and hands the storlet that
  file, opened read-only.  No one reads the client's connection while the
  storlet runs, so the connection is whole for its next request whatever
  the storlet does.  A body that ends short is ``400``, one not sent
  within Swift's ``client_timeout`` ``408``, one the proxy cannot hold
  ``503``; the storlet does not run.
* A proxy worker holds at most ``max_body_input_held_bytes`` of bodies at
  once (default 4 times ``max_body_input_bytes``): from the moment one is
  read until its storlet's answer is over.  A body that would go past it
  is not read: ``503`` with ``Retry-After``, and the storlet does not run.
  Callers sending bodies at once cannot fill the proxy's disk.  The file
  is emptied when the answer is over, so a storlet that kept a descriptor
  of it holds no disk space past its call.
* A caller allowed to read the object only through the storlet (the
  storlet ACL, upstream's retry with its referer) may not add an input of
  its own: ``403``.
"""

import os
import tempfile

from storlets.gateway.common.stob import StorletData
from storlets.swift_middleware.handlers import StorletProxyHandler
from storlets.swift_middleware.handlers.base import NotStorletRequest
from storlets.swift_middleware.handlers.proxy import REFERER_PREFIX
from swift.common.swob import (
    HTTPBadRequest,
    HTTPClientDisconnect,
    HTTPForbidden,
    HTTPLengthRequired,
    HTTPRequestEntityTooLarge,
    HTTPRequestTimeout,
    HTTPServiceUnavailable,
    WsgiBytesIO,
)
from swift.common.utils import close_if_possible, config_true_value, public

from mlstorlets.sandbox import protocol
from mlstorlets.server.middleware.output_length import with_body

# Bytes read from the client at a time.
CHUNK_BYTES = 256 << 10


def body_chunks(body, length, chunk_bytes=CHUNK_BYTES):
    """The ``length`` bytes of the request body ``body`` (a file), in
    chunks; a body ending short raises ValueError."""
    left = length
    while left:
        chunk = body.read(min(left, chunk_bytes))
        if not chunk:
            raise ValueError(
                "the request body ended after %d of its %d bytes" % (length - left, length)
            )
        left -= len(chunk)
        yield chunk


def check_body(request, limit):
    """Refuse a request that asks for its body as an input and may not
    have it: ``400`` for another request, ``411`` for a body without a
    length, ``413`` for one over ``limit`` bytes (nothing read)."""
    if request.method != "GET" or "X-Run-Storlet" not in request.headers:
        raise HTTPBadRequest(
            body=("%s is for a GET with X-Run-Storlet\n" % protocol.BODY_INPUT_HEADER).encode(),
            request=request,
        )
    if "Transfer-Encoding" in request.headers:
        raise HTTPLengthRequired(
            body=b"a request body given as an input must declare its length\n", request=request
        )
    length = request.content_length or 0
    if length > limit:
        raise HTTPRequestEntityTooLarge(
            body=(
                "a request body given as an input is at most %d bytes, not %d\n" % (limit, length)
            ).encode(),
            request=request,
        )


def take_body(request):
    """Detach the body from ``request``, so that the object's GET is sent
    without it; returns (file, length)."""
    # Without Content-Length (or Transfer-Encoding), HTTP's request has no
    # body.
    length = request.content_length or 0
    body = request.environ["wsgi.input"]
    request.environ["wsgi.input"] = WsgiBytesIO(b"")
    request.headers.pop("Content-Length", None)
    return body, length


def spool(body, length, request):
    """A read-only descriptor of an unlinked temporary file holding the
    ``length`` bytes of ``body``, read now.

    Raises
    ------
    swift.common.swob.HTTPException
        ``400`` for a body that ended short, ``408`` for one that stalled,
        ``499`` for a client gone, ``503`` when the proxy cannot hold it.
    """
    chunks = body_chunks(body, length)
    try:
        with tempfile.TemporaryFile() as spooled:
            while True:
                try:
                    chunk = next(chunks, None)
                except ValueError as err:
                    raise HTTPBadRequest(body=("%s\n" % err).encode(), request=request)
                except TimeoutError:
                    raise HTTPRequestTimeout(request=request)
                except OSError:
                    raise HTTPClientDisconnect(request=request)
                if chunk is None:
                    break
                spooled.write(chunk)
            spooled.flush()
            # A descriptor of its own, read-only: the storlet gets a copy of
            # it, and may not write to the proxy's disk through it.
            return os.open("/proc/self/fd/%d" % spooled.fileno(), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise HTTPServiceUnavailable(
            body=("the proxy cannot hold the request body: %s\n" % err.strerror).encode(),
            request=request,
        )


class HeldBytes(object):
    """Bytes of request bodies this proxy worker holds for storlets.

    A worker serves its requests from one thread (eventlet's): a count is
    enough."""

    def __init__(self):
        self.now = 0

    def take(self, length, budget):
        """Count ``length`` more bytes held unless that goes past
        ``budget``; whether they were counted."""
        if length and self.now + length > budget:
            return False
        self.now += length
        return True

    def give_back(self, length):
        self.now -= length


HELD = HeldBytes()


class HeldBody(object):
    """One request's body while the proxy holds it: ``release()`` (once)
    empties its file, closes the proxy's descriptor and counts its bytes
    no longer held."""

    def __init__(self, length):
        self.length = length
        self.fd = None
        self.released = False

    def release(self):
        if self.released:
            return
        self.released = True
        if self.fd is not None:
            try:
                # Through the descriptor's own inode: the storlet may hold
                # another descriptor of it, which then reads nothing.
                os.truncate("/proc/self/fd/%d" % self.fd, 0)
            except OSError:
                pass
            os.close(self.fd)
        HELD.give_back(self.length)


class ReleasedAtClose(object):
    """``app_iter``, and ``release()`` once it is closed."""

    def __init__(self, app_iter, release):
        self.app_iter, self.release = app_iter, release
        self.chunks = iter(app_iter)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.chunks)

    def close(self):
        try:
            close_if_possible(self.app_iter)
        finally:
            self.release()


def released_at_close(answer, release, request):
    """``answer``, with ``release()`` called when its body is closed (at
    once for an answer without an iterator)."""
    if answer.app_iter is None:
        release()
        return answer
    return with_body(answer, ReleasedAtClose(answer.app_iter, release), request)


# Seconds a caller turned away for the held bytes is told to wait.
RETRY_AFTER = 1


class BodyInputProxyHandler(StorletProxyHandler):
    """Upstream's proxy handler, with the request body as an input when the
    request asks for it."""

    max_body_input = protocol.DEFAULT_MAX_BODY_INPUT
    max_body_input_held = 4 * protocol.DEFAULT_MAX_BODY_INPUT

    def __init__(self, request, conf, gateway_conf, app, logger):
        self.body_wanted = config_true_value(request.headers.get(protocol.BODY_INPUT_HEADER))
        self.body_input = None
        self.body_fd = None
        if self.body_wanted:
            check_body(request, self.max_body_input)
            # Read by the object server too, which then leaves the storlet
            # to the proxy.
            request.headers["X-Storlet-Run-On-Proxy"] = ""
        try:
            super().__init__(request, conf, gateway_conf, app, logger)
            on_an_object = bool(self.obj)
        except NotStorletRequest:
            if not self.body_wanted:
                raise
            on_an_object = False
        if self.body_wanted:
            if not on_an_object:
                raise HTTPBadRequest(
                    body=b"a request body is an input of a storlet run on an object\n",
                    request=request,
                )
            self.body_input = take_body(request)

    def _parse_extra_resources(self):
        resources = super()._parse_extra_resources()
        if self.body_wanted and len(resources) + 2 > protocol.MAX_INPUTS:
            raise HTTPBadRequest(
                body=(
                    "at most %d extra resources with a request body as an input\n"
                    % (protocol.MAX_INPUTS - 2)
                ).encode(),
                request=self.request,
            )
        return resources

    @public
    def GET(self):
        if self.body_input is None:
            return super().GET()
        # Nothing is read from a caller who may not run the storlet.
        self.verify_access_to_storlet()
        length = self.body_input[1]
        if not HELD.take(length, self.max_body_input_held):
            raise HTTPServiceUnavailable(
                body=(
                    "the proxy holds %d bytes of request bodies for storlets already, "
                    "at most %d: send this one again later\n" % (HELD.now, self.max_body_input_held)
                ).encode(),
                headers={"Retry-After": str(RETRY_AFTER), protocol.NOT_RUN_HEADER: "true"},
                request=self.request,
            )
        held = HeldBody(length)
        try:
            self.body_fd = held.fd = spool(*self.body_input, self.request)
            answer = super().GET()
        except BaseException:
            held.release()
            raise
        # The storlet may read its input until its output is over.
        return released_at_close(answer, held.release, self.request)

    def apply_storlet(self, resp):
        if self.body_fd is not None and (self.request.referer or "").startswith(
            "//%s." % REFERER_PREFIX
        ):
            close_if_possible(resp.app_iter)
            raise HTTPForbidden(
                body=b"a request body as an input needs the right to read the object\n",
                request=self.request,
            )
        return super().apply_storlet(resp)

    def _build_storlet_request(self, req, sheaders, sbody_iter):
        sreq = super()._build_storlet_request(req, sheaders, sbody_iter)
        if self.body_fd is not None:
            sreq.extra_data_list.insert(0, StorletData({}, data_fd=self.body_fd))
        return sreq
