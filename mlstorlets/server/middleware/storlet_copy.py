"""Copy through a storlet so that a failed storlet leaves nothing behind.

A ``PUT`` with ``X-Copy-From``, or a ``COPY``, that carries
``X-Run-Storlet`` makes the destination the storlet's output over the
source.  Upstream, the storlet middleware writes whatever comes back as the
destination: the error page of a storlet that raised, or the first half of
an output whose storlet failed while writing.  This middleware, placed right
before ``storlet_handler`` in the proxy pipeline, performs such copies
itself:

1. It GETs the source with the storlet headers.  The GET goes through the
   storlet middleware, so the storlet runs where it would for a GET: on an
   object server holding the source, or on the proxy when asked to or when
   ``X-Storlet-Extra-Resources`` names more inputs.
2. An error status, or a storlet that reported an error in its output
   metadata (``Storlet-Error``), ends the request with a precise response
   naming the source object and the storlet, before anything is written.
3. Otherwise it PUTs the output to the destination.  A storlet may declare
   its output length (``Storlet-Output-Length``); a stream that ends short
   or runs long then aborts the PUT, and Swift commits nothing.

With ``X-Mlstorlets-Extract: tar`` (:data:`mlstorlets.sandbox.protocol.EXTRACT_HEADER`)
on a ``PUT`` with ``X-Copy-From``, the output is a tar, and step 3 extracts
it under the destination, one object per member, with Swift's own bulk
extraction (``Bulk.handle_extract_iter``, pax ``user.meta.*`` headers as
object metadata): one request makes many objects without their bytes
crossing the client.  The answer is bulk's JSON summary.  A member cut
short is not stored; the members before it are.  A storlet's tar is its
own, so what it may make is bounded: a member whose name has a ``.`` or
``..`` segment or a control character is refused (``400`` beside its name
in the summary's ``Errors``), and past ``max_extract_members`` members
(default 2000) the extraction stops with ``413`` and says how many were
written.

A storlet that produced no output is answered in the protocol of
:mod:`mlstorlets.sandbox.protocol`: ``422`` (refused), ``502`` (failed),
``504`` (timed out), ``507`` (out of memory) or ``503`` (the account's
sandbox could not start), with ``X-Mlstorlets-Error`` and ``X-Mlstorlets-Reason``
and the same text in the body, whether it ran here or on an object server
(whose ``storlet_failure`` filter reports it in the same headers).  A plain
``GET`` with ``X-Run-Storlet`` that succeeds loses the source's ``ETag``,
which does not describe the storlet's output.

A storlet that raised is answered ``502`` with its exception's type and
message as the reason.  With ``X-Storlet-Generate-Log: True`` the engine
stores the invocation's log in the log container of the account the
storlet ran in (:mod:`mlstorlets.server.gateway.invocation_log`); every
answer passes on ``X-Mlstorlets-Log-Object`` (or ``X-Mlstorlets-Log-Error``)
and an output never stores them.  Only a user who may write to that
container gets a log: for anyone else the header is removed before the
storlet runs and the answer says so.
"""

import json
from urllib.parse import unquote

from swift.common.exceptions import ChunkReadError
from swift.common.http import is_success
from swift.common.middleware.bulk import Bulk
from swift.common.registry import register_swift_info
from swift.common.request_helpers import check_path_header
from swift.common.swob import (
    HTTPBadRequest,
    HTTPCreated,
    HTTPRequestEntityTooLarge,
    Request,
    Response,
    wsgi_quote,
    wsgi_to_str,
    wsgi_unquote,
)
from swift.common.utils import FileLikeIter, close_if_possible, config_true_value, get_logger
from swift.common.wsgi import WSGIContext, make_subrequest

from mlstorlets.sandbox import protocol
from mlstorlets.server.middleware.storlet_failure import classify

# Output metadata our storlets use to talk to this middleware (see
# mlstorlets.sandbox.invocation); never stored.
ERROR_KEY = protocol.OBJECT_META + protocol.ERROR_KEY
ERROR_OBJECT_KEY = protocol.OBJECT_META + protocol.ERROR_OBJECT_KEY
ERROR_PARAMETER_KEY = protocol.OBJECT_META + protocol.ERROR_PARAMETER_KEY
LENGTH_KEY = protocol.OBJECT_META + protocol.LENGTH_KEY
LOG_HEADERS = tuple(header.lower() for header in protocol.LOG_HEADERS)
# Where the engine said the invocation's log went, on an output.
LOG_KEYS = {header: protocol.OBJECT_META + key for header, key in protocol.LOG_KEYS.items()}
_LOG_KEY_NAMES = tuple(key.lower() for key in LOG_KEYS.values())
INTERNAL = (
    ERROR_KEY.lower(),
    ERROR_OBJECT_KEY.lower(),
    ERROR_PARAMETER_KEY.lower(),
    LENGTH_KEY.lower(),
) + _LOG_KEY_NAMES
# An answer to a storlet GET with any of these is made again (handle_get);
# one without only loses the second set.
ANSWERED_AGAIN = frozenset(
    (protocol.ERROR_HEADER.lower(), ERROR_KEY.lower()) + LOG_HEADERS + _LOG_KEY_NAMES
)
DROPPED_FROM_OUTPUTS = frozenset(("etag", LENGTH_KEY.lower()))
# What the storlet GET takes from the client's request.
STORLET_HEADERS = ("x-run-storlet", "x-auth-token", "x-storlet-")
# Objects one extraction may write (a rotoscope range is at most 2000
# frames).
DEFAULT_MAX_EXTRACT_MEMBERS = 2000


class MemberGuard(object):
    """The app that bulk extraction writes members through: it refuses a
    member name bulk would store literally (``.`` and ``..`` segments,
    control characters) and stops the extraction past ``max_members``.

    Given ``report``, the path of a many-object call's report member
    (:data:`mlstorlets.sandbox.protocol.MANY_REPORT`), it keeps that
    member's body in :attr:`report` instead of writing it."""

    def __init__(self, app, max_members, report=None):
        self.app = app
        self.max_members = max_members
        self.members = 0
        self.report_path = report
        self.report = None

    def __call__(self, env, start_response):
        req = Request(env)
        try:
            _v, _a, _c, obj = req.split_path(4, 4, True)
        except ValueError:
            obj = None
        if req.method != "PUT" or not obj:
            return self.app(env, start_response)
        if self.report_path is not None and req.path_info == self.report_path:
            if self.report is not None:
                return HTTPBadRequest(body=b"a second report\n", request=req)(env, start_response)
            self.report = req.environ["wsgi.input"].read(protocol.MAX_MANY_REPORT + 1)
            # Counted by bulk as created, though it is not stored.
            return HTTPCreated(request=req)(env, start_response)
        name = wsgi_to_str(obj)
        if any(part in (".", "..") for part in name.split("/")) or any(
            ord(c) < 32 or ord(c) == 127 for c in name
        ):
            return HTTPBadRequest(body=b"member name refused\n", request=req)(env, start_response)
        self.members += 1
        if self.members > self.max_members:
            # Ends the whole extraction (bulk reports it as its status).
            raise HTTPRequestEntityTooLarge(
                body=(
                    "more than %d members in one extraction: the first %d "
                    "were written" % (self.max_members, self.max_members)
                ).encode("utf8")
            )
        return self.app(env, start_response)


class LengthCheckedInput(object):
    """An iterator of chunks that fails unless exactly ``length`` bytes pass.

    Raising ``ChunkReadError`` makes Swift's proxy abort the PUT (499) with
    no object committed.
    """

    def __init__(self, app_iter, length, source):
        self.app_iter = app_iter
        self.length = length
        self.source = source
        self.seen = 0

    def __iter__(self):
        try:
            for chunk in self.app_iter:
                self.seen += len(chunk)
                if self.length is not None and self.seen > self.length:
                    raise ChunkReadError(
                        "storlet output over %s runs past its declared length" % self.source
                    )
                yield chunk
            if self.length is not None and self.seen != self.length:
                raise ChunkReadError(
                    "storlet output over %s ended after %d of %d bytes"
                    % (self.source, self.seen, self.length)
                )
        finally:
            close_if_possible(self.app_iter)


class StorletCopyMiddleware(object):
    def __init__(self, app, conf):
        self.app = app
        self.logger = get_logger(conf, log_route="storlet_copy")
        self.conf = conf
        self.max_extract_members = int(conf.get("max_extract_members", DEFAULT_MAX_EXTRACT_MEMBERS))
        # The storlet middleware's option, and its default here.
        self.log_container = conf.get("storlet_logcontainer", "log")

    def __call__(self, env, start_response):
        req = Request(env)
        if "X-Run-Storlet" not in req.headers:
            return self.app(env, start_response)
        # An extraction may write under a bare container.
        least = 3 if protocol.EXTRACT_HEADER in req.headers and req.method == "PUT" else 4
        try:
            version, account, container, obj = req.split_path(least, 4, True)
        except ValueError:
            return self.app(env, start_response)
        if req.method == "GET":
            start_response = self._log_checked(req, account, start_response)
            return self.handle_get(req, start_response)
        if req.method == "PUT" and "X-Copy-From" in req.headers:
            src_account = req.headers.get("X-Copy-From-Account", account)
            src = check_path_header(
                req,
                "X-Copy-From",
                2,
                "X-Copy-From header must be of the form <container name>/<object name>",
            )
            source = "/".join((version, wsgi_unquote(src_account)) + tuple(src))
            dest = req.path_info
        elif req.method == "COPY":
            dest_account = req.headers.get("Destination-Account", account)
            dst = check_path_header(
                req,
                "Destination",
                2,
                "Destination header must be of the form <container name>/<object name>",
            )
            source = "/".join((version, account, container, obj))
            dest = "/" + "/".join((version, wsgi_unquote(dest_account)) + tuple(dst))
        else:
            return self.app(env, start_response)
        # The storlet runs in the source's account, and logs there.
        start_response = self._log_checked(req, source.lstrip("/").split("/")[1], start_response)
        return self.handle_copy(req, "/" + source.lstrip("/"), dest, start_response)

    def _log_checked(self, req, account, start_response):
        """Let ``X-Storlet-Generate-Log`` through only for a user who may
        write to ``account``'s log container.

        The engine stores the log in the account the storlet runs in,
        with no user's rights: a user allowed only to read an account's
        objects (an ACL) would otherwise write into it.  Refused, the
        header is removed and the answer says why (``start_response``
        adds :data:`~mlstorlets.sandbox.protocol.LOG_ERROR_HEADER`).
        """
        if not config_true_value(req.headers.get(protocol.GENERATE_LOG_HEADER)):
            return start_response
        authorize = req.environ.get("swift.authorize")
        if authorize is None or req.environ.get("swift.authorize_override"):
            return start_response
        path = "/v1/%s/%s/log" % (wsgi_quote(account), self.log_container)
        check = make_subrequest(req.environ, method="PUT", path=path, swift_source="MLSC")
        if authorize(check) is None:
            return start_response
        del req.headers[protocol.GENERATE_LOG_HEADER]
        reason = protocol.quote_reason(
            "the log was not stored: you may not write to the container %s of %s"
            % (self.log_container, wsgi_to_str(account))
        )

        def start_with_reason(status, headers, exc_info=None):
            headers = [(k, v) for k, v in headers if k.lower() not in LOG_HEADERS]
            headers.append((protocol.LOG_ERROR_HEADER, reason))
            return start_response(status, headers, exc_info)

        return start_with_reason

    # -- GET -------------------------------------------------------------
    def handle_get(self, req, start_response):
        context = WSGIContext(self.app)
        app_iter = context._app_call(req.environ)
        headers = context._response_headers
        if is_success(context._get_status_int()) and not any(
            k.lower() in ANSWERED_AGAIN for k, _ in headers
        ):
            # The common answer: a storlet's output with nothing to say of
            # failures or logs.  Passed on as it came, less what
            # handle_get drops from any answer, without the two copies of
            # every header that making it a Response again would cost.
            start_response(
                context._response_status,
                [(k, v) for k, v in headers if k.lower() not in DROPPED_FROM_OUTPUTS],
                context._response_exc_info,
            )
            return app_iter
        resp = Response(
            status=context._response_status, headers=headers, app_iter=app_iter, request=req
        )
        if resp.status_int != 416:
            resp = self._unsuccessful(req, req.path_info, resp) or resp
        if is_success(resp.status_int):
            # The source's ETag is not the output's: a client that checks
            # it (the swift CLI does) would reject a correct answer.
            resp.headers.pop("Etag", None)
        resp.headers.update(_log_headers(resp.headers))
        for key in (LENGTH_KEY,) + tuple(LOG_KEYS.values()):
            resp.headers.pop(key, None)
        return resp(req.environ, start_response)

    def _unsuccessful(self, req, source, resp, dest=None):
        """The answer for a storlet that failed or refused, else None; it
        says where the invocation's log went, as ``resp`` did."""
        error = self._unsuccessful_answer(req, source, resp, dest)
        if error is not None:
            error.headers.update(_log_headers(resp.headers))
        return error

    def _unsuccessful_answer(self, req, source, resp, dest=None):
        storlet = req.headers["X-Run-Storlet"]
        kind = resp.headers.get(protocol.ERROR_HEADER)
        if kind in protocol.STATUS:
            # An object server's storlet_failure speaking the protocol.
            close_if_possible(resp.app_iter)
            reason = unquote(resp.headers.get(protocol.REASON_HEADER, ""))
            return self._error(
                req,
                kind,
                storlet,
                source,
                reason,
                dest,
                protocol.failed_object(resp.headers),
                protocol.failed_parameter(resp.headers),
            )
        if not is_success(resp.status_int):
            # A 503 here is Swift's, no object server answered: the proxy's
            # storlet handler answers its own in the protocol.
            failure = classify(resp) if resp.status_int != 503 else None
            if failure:
                # The storlet ran here, on the proxy.
                kind, what = failure
                return self._error(req, kind, storlet, source, "the storlet " + what, dest)
            return self._failure(req, source, resp, dest)
        if ERROR_KEY in resp.headers:
            close_if_possible(resp.app_iter)
            refused = resp.headers.get(ERROR_OBJECT_KEY)
            parameter = resp.headers.get(ERROR_PARAMETER_KEY)
            return self._error(
                req,
                protocol.REFUSED,
                storlet,
                source,
                wsgi_to_str(resp.headers[ERROR_KEY]),
                dest,
                refused and wsgi_to_str(refused),
                parameter and wsgi_to_str(parameter),
            )
        return None

    def _error(self, req, kind, storlet, source, reason, dest=None, refused=None, parameter=None):
        """The protocol's answer for a storlet that produced no output;
        ``refused`` names the input a refusal was about, ``parameter`` the
        parameter whose value it refused."""
        name = _text_name(source)
        if kind == protocol.REFUSED and refused and refused != name:
            text = "storlet %s refused %s, an input of the call over %s: %s" % (
                storlet,
                refused,
                name,
                reason,
            )
        elif kind == protocol.REFUSED:
            text = "storlet %s refused %s: %s" % (storlet, name, reason)
        else:
            text = "storlet %s %s over %s (%s)" % (storlet, protocol.outcome(kind), name, reason)
        if dest:
            text += ": nothing was written to %s" % _text_name(dest)
        if kind != protocol.REFUSED:
            self.logger.warning(text)
        return Response(
            status=protocol.STATUS[kind],
            request=req,
            headers=protocol.failure_headers(
                kind,
                text,
                refused or (name if kind == protocol.REFUSED else None),
                parameter if kind == protocol.REFUSED else None,
                reason,
            ),
            content_type="text/plain",
            body=(text + "\n").encode("utf8"),
        )

    def _failure(self, req, source, resp, dest=None):
        """The response for a storlet request that Swift did not serve."""
        storlet = req.headers["X-Run-Storlet"]
        body = resp.body.decode("utf8", "replace").strip()
        if resp.status_int == 503 and protocol.NOT_RUN_HEADER in resp.headers:
            # The engine's own "not now" (the proxy holds enough request
            # bodies): the storlet did not run, the caller may send it again.
            text = "storlet %s did not run over %s (%s)" % (
                storlet,
                _text_name(source),
                _reason(resp, body),
            )
            return Response(
                status=503,
                content_type="text/plain",
                headers={
                    "Retry-After": resp.headers.get("Retry-After", "1"),
                    protocol.NOT_RUN_HEADER: "true",
                },
                request=req,
                body=(text + "\n").encode("utf8"),
            )
        if resp.status_int >= 500:
            # Swift failed upstream of this proxy (no node, ...).
            return self._error(req, protocol.FAILED, storlet, source, _reason(resp, body), dest)
        text = "storlet %s failed over %s (%s)" % (storlet, _text_name(source), _reason(resp, body))
        if dest:
            text += ": nothing was written to %s" % _text_name(dest)
        return Response(
            status=resp.status_int,
            content_type="text/plain",
            request=req,
            body=(text + "\n").encode("utf8"),
        )

    # -- copy ------------------------------------------------------------
    def handle_copy(self, req, source, dest, start_response):
        if req.content_length:
            return HTTPBadRequest(body=b"Copy requests require a zero byte body\n", request=req)(
                req.environ, start_response
            )
        storlet = req.headers["X-Run-Storlet"]
        headers = {k: v for k, v in req.headers.items() if k.lower().startswith(STORLET_HEADERS)}
        get = make_subrequest(
            req.environ, method="GET", path=wsgi_quote(source), headers=headers, swift_source="MLSC"
        )
        get.query_string = req.query_string
        resp = get.get_response(self.app)

        error = self._unsuccessful(req, source, resp, dest)
        if error is not None:
            return error(req.environ, start_response)

        length = resp.headers.get(LENGTH_KEY)
        length = int(length) if length and length.isdigit() else None
        if req.method == "PUT" and protocol.EXTRACT_HEADER in req.headers:
            return self.handle_extract(req, source, dest, resp, length, start_response)
        put_headers = {
            k: v
            for k, v in resp.headers.items()
            if k.lower().startswith(protocol.OBJECT_META.lower()) and k.lower() not in INTERNAL
        }
        put_headers["Content-Type"] = req.headers.get(
            "Content-Type", resp.headers.get("Content-Type", "application/octet-stream")
        )
        for key, value in req.headers.items():
            if key.lower().startswith((protocol.OBJECT_META.lower(), "x-delete-")):
                put_headers[key] = value
        put = _output_put(req, dest, put_headers, resp, length, source, "MLSC")
        put_resp = put.get_response(self.app)
        # A PUT refused before it read the output leaves it open (Swift's
        # FileLikeIter does not close what it wraps).
        close_if_possible(resp.app_iter)
        if not is_success(put_resp.status_int):
            close_if_possible(put_resp.app_iter)
            return self._error(
                req,
                protocol.FAILED,
                storlet,
                source,
                "its output could not be written: %s" % put_resp.status,
                dest,
            )(req.environ, start_response)
        put_resp.headers["X-Copied-From"] = _object_name(source)
        put_resp.headers["X-Storlet-Executed"] = storlet
        if protocol.RAN_ON_HEADER in resp.headers:
            put_resp.headers[protocol.RAN_ON_HEADER] = resp.headers[protocol.RAN_ON_HEADER]
        put_resp.headers.update(_log_headers(resp.headers))
        return put_resp(req.environ, start_response)

    def handle_extract(self, req, source, dest, resp, length, start_response):
        """Extract the storlet's tar output under ``dest``."""
        mode = req.headers[protocol.EXTRACT_HEADER]
        if mode not in (protocol.EXTRACT_TAR, protocol.EXTRACT_MANY):
            close_if_possible(resp.app_iter)
            return HTTPBadRequest(
                body=b"%s must be tar or many\n" % protocol.EXTRACT_HEADER.encode(), request=req
            )(req.environ, start_response)
        # Bulk copies the user metadata of this request to every object.
        headers = {
            k: v
            for k, v in req.headers.items()
            if k.lower().startswith(protocol.OBJECT_META.lower())
        }
        extract = _output_put(req, dest, headers, resp, length, source, "MLSX")

        # Only its extraction is used, through a guard of this request's
        # own: the limits of the bulk filter apply too.
        report = None
        if mode == protocol.EXTRACT_MANY:
            report = dest.rstrip("/") + "/" + protocol.MANY_REPORT
        guard = MemberGuard(self.app, self.max_extract_members, report)
        bulker = Bulk(guard, self.conf)

        def extracting():
            try:
                for chunk in bulker.handle_extract_iter(
                    extract, "", out_content_type="application/json"
                ):
                    # Bulk's heartbeats are blanks; its summary comes last.
                    if report is None or not chunk.strip():
                        yield chunk
                    else:
                        yield with_report(chunk, guard.report, _inputs(req, source))
            finally:
                # Bulk may stop before the end of the tar (too many
                # failures): the storlet's response is closed anyway.
                close_if_possible(resp.app_iter)

        out = Response(
            status=200, request=req, content_type="application/json", app_iter=extracting()
        )
        out.headers["X-Copied-From"] = _object_name(source)
        out.headers["X-Storlet-Executed"] = req.headers["X-Run-Storlet"]
        out.headers.update(_log_headers(resp.headers))
        return out(req.environ, start_response)


def with_report(summary, report, inputs):
    """Bulk's JSON ``summary`` of a many-object extraction with the
    storlet's ``report`` folded in: ``Refused``, a list of ``[input,
    reason]``, and ``Complete``, true when the report came whole (so every
    member before it was written or named in ``Errors``); the report
    member is not counted as created.

    The report is the storlet's word, so it is checked: valid JSON, each
    refused name one of the call's ``inputs``, each reason one line of at
    most :data:`~mlstorlets.sandbox.protocol.MAX_REASON` characters.  A
    report missing or broken fails the answer (``502``), the members
    written before it staying as the summary says.
    """
    head = summary[: len(summary) - len(summary.lstrip())]
    answer = json.loads(summary)
    refused, problem = [], None
    if report is None:
        problem = "the storlet's report is missing (its output was cut short)"
    else:
        answer["Number Files Created"] = max(0, answer.get("Number Files Created", 0) - 1)
        try:
            entries = protocol.storlet_json(report)["refused"]
            for name, reason in entries:
                if name not in inputs or not isinstance(reason, str):
                    raise ValueError(name)
                refused.append([name, " ".join(reason.split())[: protocol.MAX_REASON]])
            if len(refused) > len(inputs):
                raise ValueError("too many")
        except (ValueError, TypeError, KeyError):
            refused, problem = [], "the storlet's report is malformed"
    answer["Refused"] = refused
    # Every member was read and is either written, in Errors or refused:
    # the client may take the others as done even when one failed.
    answer["Complete"] = problem is None
    if problem and answer.get("Response Status", "").startswith("2"):
        answer["Response Status"] = "502 Bad Gateway"
        answer["Response Body"] = problem
    return head + json.dumps(answer).encode("utf-8")


def _log_headers(headers):
    """Where the invocation's log went: the protocol's log headers of an
    answer, or the engine's metadata of an output (:data:`LOG_KEYS`)."""
    found = protocol.log_headers(headers)
    for header, key in LOG_KEYS.items():
        if key in headers and header not in found:
            found[header] = headers[key]
    return found


def _inputs(req, source):
    """The ``container/object`` names of the call's inputs: its source and
    extra resources."""
    names = {_text_name(source)}
    for path in req.headers.get("X-Storlet-Extra-Resources", "").split(","):
        if path.strip():
            names.add(wsgi_to_str(wsgi_unquote(path.strip())).lstrip("/"))
    return names


def _output_put(req, dest, headers, resp, length, source, swift_source):
    """A PUT subrequest of ``dest`` whose body is the storlet's output
    ``resp``, checked against its declared ``length``."""
    headers = dict(headers, **{"X-Auth-Token": req.headers.get("X-Auth-Token", "")})
    put = make_subrequest(
        req.environ, method="PUT", path=wsgi_quote(dest), headers=headers, swift_source=swift_source
    )
    put.environ["wsgi.input"] = FileLikeIter(LengthCheckedInput(resp.app_iter, length, source))
    if length is None:
        put.headers["Transfer-Encoding"] = "chunked"
    else:
        put.content_length = length
    return put


def _text_name(path):
    """:func:`_object_name` as text (a WSGI string holds UTF-8 bytes)."""
    return wsgi_to_str(_object_name(path))


def _object_name(path):
    """``container/object`` of a ``/v1/account/container/object`` path."""
    return wsgi_unquote(path).lstrip("/").split("/", 2)[-1]


def _reason(resp, body):
    if resp.status_int == 404:
        return "source object not found"
    if not body or body.startswith("<"):
        # Swift's stock error pages say no more than their status.
        return resp.status
    return body.splitlines()[0][:200]


def filter_factory(global_conf, **local_conf):
    conf = dict(global_conf, **local_conf)
    # Published, so that clients plan by this cluster's limits rather than
    # by constants of their own.
    register_swift_info(
        protocol.INFO_KEY,
        sbus_datagram_limit=int(conf.get("sbus_datagram_limit", protocol.SBUS_DATAGRAM_LIMIT)),
        max_extract_members=int(conf.get("max_extract_members", DEFAULT_MAX_EXTRACT_MEMBERS)),
    )

    def storlet_copy_filter(app):
        return StorletCopyMiddleware(app, conf)

    return storlet_copy_filter
