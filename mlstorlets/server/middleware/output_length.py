"""Answer a storlet's output with ``Content-Length`` when its length is known.

Upstream streams every storlet's output chunked: the proxy, and then the
client, decode chunk framing for an answer whose length the sandbox knew
before the first byte.  The project's agent always declares it
(``Storlet-Output-Length``, the size of the output it spooled), and a
storlet under another agent may declare it too.

With these handler mixins, a storlet answer whose declared length is a
number gets that ``Content-Length``, and its body is held to it: an output
that ends sooner fails mid-body (the server drops the connection, as it
does for a disk that fails while read, and the client sees a short
answer, never a whole-looking one), one that runs longer is cut at the
declared length and the rest is not read.  An answer without a declared
length stays chunked.

Upstream's proxy drops the ``Content-Length`` of an answer made on an
object server, so that server also names the length in
``X-Backend-Storlet-Output-Length``, from which the proxy sets it again.
Only an object server can set that header (``gatekeeper`` removes
``X-Backend-*`` from what a client sends and from what it receives, and a
storlet's metadata becomes ``X-Object-Meta-*`` headers only).

An answer the storlet made also gets an ETag of its own, never the
object's: a proxy whose read of an object server's answer ends short (or
stalls) resumes it from another replica with the same ETag, which would run
the storlet again there and splice the second output into the first.  With
an ETag no other answer has, the proxy finds no such replica and fails the
answer.  (``storlet_copy`` gives a client no ETag for a storlet's output.)
"""

import uuid

from swift.common.http import is_success
from swift.common.swob import Response
from swift.common.utils import close_if_possible, public

from mlstorlets.sandbox import protocol

BACKEND_LENGTH_HEADER = "X-Backend-Storlet-Output-Length"
# The longest number of bytes taken as a length (an int64's digits).
MAX_DIGITS = 18


class OutputCutShort(IOError):
    """A storlet's output ended before its declared length."""


def length_of(value):
    """``value`` as a length, or None."""
    value = (value or "").strip()
    if value.isdigit() and len(value) <= MAX_DIGITS:
        return int(value)
    return None


def declared_length(metadata):
    """The length a storlet's output metadata declares, or None."""
    for key, value in (metadata or {}).items():
        if key.lower() == protocol.LENGTH_KEY.lower():
            return length_of(value)
    return None


class Exactly(object):
    """The first ``length`` bytes of ``app_iter``; :class:`OutputCutShort`
    if there are fewer.  Closing it closes ``app_iter``, read or not."""

    def __init__(self, app_iter, length, what, logger):
        self.app_iter, self.left = app_iter, length
        self.length, self.what, self.logger = length, what, logger
        self.chunks = iter(app_iter)

    def __iter__(self):
        return self

    def __next__(self):
        if not self.left:
            self.close()
            raise StopIteration
        try:
            chunk = next(self.chunks)
        except StopIteration:
            self.close()
            raise OutputCutShort(
                "%s: output ended %d bytes short of its declared %d"
                % (self.what, self.left, self.length)
            ) from None
        if len(chunk) > self.left:
            self.logger.warning(
                "%s: output longer than its declared %d bytes, cut" % (self.what, self.length)
            )
            chunk = chunk[: self.left]
        self.left -= len(chunk)
        return chunk

    def close(self):
        close_if_possible(self.app_iter)


def with_body(answer, app_iter, request):
    """``answer`` with ``app_iter`` as its body: a new answer, since swob
    closes the iterator that an assignment to ``app_iter`` replaces."""
    swapped = Response(
        status=answer.status, headers=answer.headers, app_iter=app_iter, request=request
    )
    swapped.content_length = answer.content_length
    return swapped


class DeclaredLengthHandler(object):
    """Storlet handler mixin: a declared output length becomes the
    answer's ``Content-Length``."""

    _declared = None
    _ran = False

    def _call_gateway(self, resp):
        sresp = super()._call_gateway(resp)
        self._ran = True
        length = declared_length(sresp.data.user_metadata)
        if length is not None:
            # Held to its length before upstream makes an answer of it:
            # one made again would copy every header once more.
            what = "storlet %s over %s" % (self.request.headers.get("X-Run-Storlet"), self.path)
            sresp.data._data_iter = Exactly(sresp.data.data_iter, length, what, self.logger)
        self._declared = length
        return sresp

    def apply_storlet(self, resp):
        answer = super().apply_storlet(resp)
        length, self._declared = self._declared, None
        if self._ran and is_success(answer.status_int):
            answer.headers["Etag"] = uuid.uuid4().hex
        if length is not None and is_success(answer.status_int) and answer.app_iter is not None:
            answer.content_length = length
            answer.headers[BACKEND_LENGTH_HEADER] = str(length)
        return answer


class DeclaredLengthProxyHandler(DeclaredLengthHandler):
    """The proxy's: also an answer made on an object server keeps the
    length that server gave it."""

    @public
    def GET(self):
        answer = super().GET()
        length = length_of(answer.headers.pop(BACKEND_LENGTH_HEADER, None))
        if (
            length is not None
            and is_success(answer.status_int)
            and "Content-Length" not in answer.headers
        ):
            # What the object server sends is held to it by the proxy's
            # own reading of a backend answer.
            answer.content_length = length
        return answer
