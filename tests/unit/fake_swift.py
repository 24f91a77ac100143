"""A fake Swift WSGI app for middleware unit tests.

It answers registered ``(method, path)`` pairs, records every request it
receives (with the body it read), stores what a PUT sent only when the body
was read whole, and hands out response iterators that remember whether they
were closed, so that a test can check that no request is left unclosed.
"""

from swift.common.swob import HeaderKeyDict, Request


class TrackedIter(object):
    """A response body that records whether it was closed."""

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.closed = False

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        self.closed = True


class FakeSwift(object):
    def __init__(self):
        self.responses = {}
        self.calls = []
        self.iters = []
        self.stored = {}
        self.unread = set()

    def register(self, method, path, status, headers=None, body=b"", read=True):
        """Answer ``method path`` with ``status``; ``body`` is bytes or a
        list of chunks (a body that may end early is a generator).  A PUT
        not to ``read`` is answered before its body is read, as a proxy
        refuses one on its headers."""
        self.responses[(method, path)] = (status, headers or {}, body)
        if not read:
            self.unread.add((method, path))

    def __call__(self, env, start_response):
        req = Request(env)
        body = b""
        error = None
        if req.method == "PUT" and (req.method, req.path) not in self.unread:
            try:
                body = req.environ["wsgi.input"].read()
            except Exception as err:  # what a proxy does: 499, no object
                error = err
        self.calls.append((req.method, req.path, HeaderKeyDict(req.headers), body))
        if error is not None:
            start_response("499 Client Disconnect", [])
            return self._iter([b"client disconnected"])
        status, headers, resp_body = self.responses[(req.method, req.path)]
        if req.method == "PUT" and status.startswith("2"):
            self.stored[req.path] = (body, HeaderKeyDict(req.headers))
        start_response(status, list(headers.items()))
        if isinstance(resp_body, bytes):
            resp_body = [resp_body]
        return self._iter(resp_body)

    def _iter(self, chunks):
        it = TrackedIter(chunks) if isinstance(chunks, list) else _TrackedGenerator(chunks)
        self.iters.append(it)
        return it

    @property
    def all_closed(self):
        return all(it.closed for it in self.iters)


class _TrackedGenerator(TrackedIter):
    def __init__(self, generator):
        self.generator = generator
        self.closed = False

    def __iter__(self):
        return self.generator


def call(app, req):
    """Run ``req`` through ``app``; (status, headers, body), the body read
    whole and the app's iterator closed, as a WSGI server does."""
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = status
        captured["headers"] = HeaderKeyDict(headers)

    body_iter = app(req.environ, start_response)
    try:
        body = b"".join(body_iter)
    finally:
        if hasattr(body_iter, "close"):
            body_iter.close()
    return int(captured["status"].split()[0]), captured["headers"], body
