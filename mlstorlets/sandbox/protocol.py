"""The storlet protocol: the names that storlets, the servers' middleware
and the client use to talk about an invocation.

One module, importable everywhere (it imports only the standard library), so that no layer
matches another's free text.

Inside the cluster a storlet speaks through its output metadata:

* ``Storlet-Error``: the storlet refused its input (bad object, bad
  parameter); the value is the reason.  No body follows.
* ``Storlet-Error-Object``: with it, the input the storlet refused (a
  call may read several objects), when it named one.
* ``Storlet-Output-Length``: the exact length of the body that follows, so
  that an output cut short is never stored.

To the client, the proxy answers a storlet that did not produce its output
with a status and two headers:

==========  ==========  ====================================================
status      ``kind``    meaning
==========  ==========  ====================================================
422         refused     the storlet refused the object or a parameter
502         failed      the storlet raised, died or broke the protocol
504         timed-out   the storlet ran past the engine's storlet timeout
507         out-of-     the account's sandbox went over its memory budget
            memory      (the kernel killed a process of it)
503         unavailable the account's sandbox could not start on the server
                        that was to run it (its log says why)
==========  ==========  ====================================================

``X-Mlstorlets-Error`` carries the kind, ``X-Mlstorlets-Reason`` the
reason (one line, UTF-8, percent-quoted where not ASCII) and, for a
refusal that named an input, ``X-Mlstorlets-Object`` that input (quoted
the same way).  The body repeats them for a human.
"""

import base64
import binascii
import functools
import hashlib
import json
import math
import os
import re
from urllib.parse import quote, unquote

# Names the project keeps for itself inside user containers (shards, job
# objects, temporary state): never listed as data, never a batch's source.
INTERNAL_PREFIX = ".mlstorlets"

# Output metadata keys, as a storlet sets them (the engine prefixes them with
# X-Object-Meta- on the way out).  Never stored on an object.
ERROR_KEY = "Storlet-Error"
ERROR_OBJECT_KEY = "Storlet-Error-Object"
# For a refusal of a parameter's value (the same for every object).
ERROR_PARAMETER_KEY = "Storlet-Error-Parameter"
LENGTH_KEY = "Storlet-Output-Length"

# The storlets engine hands an invocation to the sandbox in one SBus
# datagram, received into a buffer of this size (MAX_MSG_LENGTH in
# storlets' sbus.c): each input's metadata and the parameters must fit.
SBUS_DATAGRAM_LIMIT = 4096
# The project's own sandbox agent (mlstorlets.server.agent, the default of
# the bubblewrap gateway) receives it into a buffer of this size: room for
# the inputs of many small objects in one call, or a model's state.
AGENT_DATAGRAM_LIMIT = 65536
TASK_ID_LENGTH = 8


# Asked on every invocation, for a few storlets at a time.
@functools.lru_cache(maxsize=4096)
def door_path(sbus_path):
    """The socket beside a storlet's SBus socket ``sbus_path`` from which
    the workers of the project's agent take ``EXECUTE`` commands
    themselves (:mod:`mlstorlets.server.agent.daemon`).  Short whatever the
    storlet's name (a socket's path has at most 107 bytes), and no
    storlet's: ``@`` is in no class name."""
    directory, name = os.path.split(sbus_path)
    return os.path.join(directory, "@" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:16])


def new_task_id():
    """A task id as the project's agent gives one (upstream's: the first 8
    characters of a UUID), for the host to name a task it hands over."""
    return os.urandom(TASK_ID_LENGTH // 2).hex()


def is_task_id(value):
    """Whether ``value`` is a task id of :func:`new_task_id`'s form."""
    return (
        isinstance(value, str)
        and len(value) == TASK_ID_LENGTH
        and all(c in "0123456789abcdef" for c in value)
    )


# Inputs of one invocation (the object and its extra resources): the agent
# hands a worker at most 64 descriptors, the logger's among them.
MAX_INPUTS = 60
# What the proxy publishes in Swift's /info under this key: the limits a
# client plans its requests by (sbus_datagram_limit, max_extract_members).
INFO_KEY = "mlstorlets"

# Swift stores metadata in xattrs and caps a header at 8 KiB: a reason is
# for a human to read, not a dump.
MAX_REASON = 1024
# How a sandbox's daemon factory begins its answer when the storlet's module
# could not be loaded; what follows is the storlet's own exception, one line.
NOT_LOADED = "the storlet could not be loaded: "

# The proxy's answer to the client when a storlet produced no output.
ERROR_HEADER = "X-Mlstorlets-Error"
REASON_HEADER = "X-Mlstorlets-Reason"
OBJECT_HEADER = "X-Mlstorlets-Object"
PARAMETER_HEADER = "X-Mlstorlets-Parameter"
# The storlet's own words, without the sentence REASON_HEADER puts them in
# ("storlet x refused c/o: <detail>"): what a client words its own way.
DETAIL_HEADER = "X-Mlstorlets-Detail"
# The prefix of an object's user metadata in a request or response.
OBJECT_META = "X-Object-Meta-"
# User metadata of an output: the ETag of the source it was made from.
SOURCE_ETAG_KEY = "Source-Etag"
REFUSED, FAILED, TIMED_OUT = "refused", "failed", "timed-out"
OUT_OF_MEMORY = "out-of-memory"
# The server could not run the storlet at all (its account's sandbox did not
# start there): nothing of the storlet's doing.
UNAVAILABLE = "unavailable"
STATUS = {REFUSED: 422, FAILED: 502, TIMED_OUT: 504, OUT_OF_MEMORY: 507, UNAVAILABLE: 503}
# What became of a storlet that produced no output, in the words of the
# proxy's reason and of the client's errors alike ("storlet x timed out
# over c/o"); a refusal is worded with what it refused.
OUTCOME = {
    FAILED: "failed",
    TIMED_OUT: "timed out",
    OUT_OF_MEMORY: "ran out of memory",
    UNAVAILABLE: "could not run",
}


def outcome(kind):
    """What became of a storlet whose failure is of ``kind``, in words
    (:data:`OUTCOME`); an unknown kind reads as a failure."""
    return OUTCOME.get(kind, OUTCOME[FAILED])


# -- output metadata -------------------------------------------------------
# What a storlet's output metadata may hold before it becomes response
# headers (``X-Object-Meta-<key>: <value>``) on the object server and the
# proxy, and an object's metadata on a copy.  The bounds are Swift's default
# metadata constraints (swift.common.constraints), which a stored copy must
# meet anyway; a header name is an HTTP token, a value has no control
# character (a CR or LF would end the header and start another).
MAX_META_NAME_LENGTH = 128
MAX_META_VALUE_LENGTH = 256
MAX_META_COUNT = 90
MAX_META_OVERALL_SIZE = 4096
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# C0 and C1 controls and DEL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def output_metadata_problem(
    metadata,
    name_length=MAX_META_NAME_LENGTH,
    value_length=MAX_META_VALUE_LENGTH,
    count=MAX_META_COUNT,
    overall=MAX_META_OVERALL_SIZE,
):
    """The rule that a storlet's output ``metadata`` breaks, or None.

    Parameters
    ----------
    metadata : dict of str to str
        As the storlet set it (text; lengths are counted in UTF-8 bytes, as
        Swift counts them).
    name_length, value_length, count, overall : int
        The cluster's metadata constraints.

    Returns
    -------
    str or None
        One line naming the key and the rule, for the client's reason.
    """
    if len(metadata) > count:
        return "more than %d metadata keys (%d)" % (count, len(metadata))
    size = 0
    for key, value in metadata.items():
        if _TOKEN.fullmatch(key) is None:
            return (
                "metadata key %s is not an HTTP token (letters, digits "
                "and !#$%%&'*+-.^_`|~ only)" % repr(key[:40])
            )
        if _CONTROL.search(value):
            return "metadata value of %s holds a control character" % repr(key[:40])
        try:
            key_bytes, value_bytes = len(key.encode()), len(value.encode())
        except UnicodeEncodeError:
            # A lone surrogate, which JSON's "\\udc80" decodes to.
            return "metadata value of %s is not text" % repr(key[:40])
        if key_bytes > name_length:
            return "metadata key %s is over %d bytes" % (repr(key[:40]), name_length)
        # A refusal is never stored: it has a bound of its own.
        refusal = key in (ERROR_KEY, ERROR_OBJECT_KEY, ERROR_PARAMETER_KEY)
        limit = 4 * MAX_REASON if refusal else value_length
        if value_bytes > limit:
            return "metadata value of %s is over %d bytes (%d)" % (
                repr(key[:40]),
                limit,
                value_bytes,
            )
        if not refusal:
            size += key_bytes + value_bytes
    if size > overall:
        return "metadata over %d bytes in all (%d)" % (overall, size)
    return None


# -- parameters ------------------------------------------------------------
# The storlets engine reads ``X-Storlet-Parameter-N: key:value`` headers and
# percent-unquotes each once (storlets.swift_middleware.handlers.base), then
# splits at the first colon.  Quoting key and value here, once, is what lets
# any name or value (``%20``, ``&``, ``=``, CR/LF, non-ASCII) reach the
# storlet exactly.
PARAMETER_HEADER = "X-Storlet-Parameter-%d"
# Passed to every storlet a batch runs: the source object's name.  Never
# declared by a storlet, always accepted.
SOURCE_PARAMETER = "source"
# Object metadata of a deployed storlet (``X-Object-Meta-`` + this): the
# names of the parameters its class declares, comma-separated.  Absent: not
# declared.
PARAMETERS_KEY = "Mlstorlets-Parameters"
# And the declarations with a type or bounds, as declared (see
# parse_parameter): a key of their own, which clients that only know
# names never read.
PARAMETER_TYPES_KEY = "Mlstorlets-Parameter-Types"
# And the suffix and content type of its outputs, "<suffix> <type>" (".png
# image/png"), when they do not depend on the input.  Absent: as the source.
OUTPUT_TYPE_KEY = "Mlstorlets-Output-Type"


def output_type_value(output_type):
    """The :data:`OUTPUT_TYPE_KEY` value of ``(suffix, content type)``."""
    suffix, content_type = output_type
    return "%s %s" % (suffix, content_type)


def parse_output_type(value):
    """``(suffix, content type)`` of an :data:`OUTPUT_TYPE_KEY` value, or
    None for none or a malformed one."""
    suffix, _, content_type = (value or "").strip().partition(" ")
    if not (suffix.startswith(".") and "/" in content_type and " " not in content_type):
        return None
    return suffix, content_type


def parameter_headers(params):
    """``X-Storlet-Parameter-N`` headers that carry ``params`` exactly.

    Parameters
    ----------
    params : dict
        Names and values (made ``str``); a name must be non-empty and hold
        no colon, which the engine splits at.

    Returns
    -------
    dict of str
        ASCII header values.
    """
    headers = {}
    for i, (key, value) in enumerate(sorted(params.items()), 1):
        key = str(key)
        if not key or ":" in key:
            raise ValueError(
                "storlet parameter name %r: it must be non-empty and hold no colon" % key
            )
        headers[PARAMETER_HEADER % i] = "%s:%s" % (quote(key, safe=""), quote(str(value), safe=""))
    return headers


def parse_parameter(entry):
    """``(name, kind, values)`` of a declared parameter.

    A declaration is ``name`` (any value), ``name:int:LOW:HIGH`` or
    ``name:float:LOW:HIGH`` (a number within the bounds, either of which
    may be empty), or ``name:one-of:A|B|C``; so that the client refuses a
    value the storlet would refuse before any call.

    Raises
    ------
    ValueError
        A malformed declaration.
    """
    name, _, spec = str(entry).partition(":")
    if not name or "," in entry or len(entry.encode("utf-8")) > MAX_META_VALUE:
        raise ValueError(
            "parameter declaration %r: a name, no comma, at most %d bytes"
            % (entry[:80], MAX_META_VALUE)
        )
    if not spec:
        return name, None, None
    kind, _, rest = spec.partition(":")
    if kind == "one-of" and rest:
        return name, kind, tuple(rest.split("|"))
    if kind in ("int", "float"):
        bounds = rest.split(":") if rest else ["", ""]
        if len(bounds) == 2:
            number = int if kind == "int" else float
            try:
                values = tuple(number(b) if b else None for b in bounds)
                if all(v is None or math.isfinite(v) for v in values):
                    return name, kind, values
            except ValueError:
                pass
    raise ValueError(
        "parameter declaration %r: expected name, name:int:LOW:HIGH, "
        "name:float:LOW:HIGH or name:one-of:A|B" % entry
    )


#: Swift's bound on a metadata value (max_meta_value_length): a storlet's
#: declarations longer than this go on further keys, PARAMETERS_KEY-2...
MAX_META_VALUE = 256


def _spread(key, entries):
    """``entries`` comma-separated under ``key``, ``key-2``...: values of
    at most :data:`MAX_META_VALUE` bytes."""
    values, current = [], ""
    for entry in entries:
        joined = entry if not current else current + "," + entry
        if len(joined.encode("utf-8")) > MAX_META_VALUE and current:
            values.append(current)
            joined = entry
        current = joined
    values.append(current)
    return {key if i == 0 else "%s-%d" % (key, i + 1): v for i, v in enumerate(values)}


def _gathered(lowered, key):
    found, n, key = [], 1, key.lower()
    name = key
    while name in lowered:
        found += [p for p in lowered[name].split(",") if p]
        n += 1
        name = "%s-%d" % (key, n)
    return found


def parameters_metadata(declared):
    """Metadata (keys without ``X-Object-Meta-``) recording ``declared``:
    the names under :data:`PARAMETERS_KEY`, the typed declarations under
    :data:`PARAMETER_TYPES_KEY`."""
    parsed = [(entry, parse_parameter(entry)) for entry in declared]
    metadata = _spread(PARAMETERS_KEY, [name for _, (name, _, _) in parsed])
    typed = [entry for entry, (_, kind, _) in parsed if kind is not None]
    if typed:
        metadata.update(_spread(PARAMETER_TYPES_KEY, typed))
    return metadata


def parameters_from_metadata(metadata):
    """The declarations :func:`parameters_metadata` recorded in
    ``metadata`` (keys without ``X-Object-Meta-``, in any case), or None
    when there are none."""
    lowered = {k.lower(): v for k, v in metadata.items()}
    if PARAMETERS_KEY.lower() not in lowered:
        return None
    typed = {}
    for entry in _gathered(lowered, PARAMETER_TYPES_KEY):
        try:
            typed[parse_parameter(entry)[0]] = entry
        except ValueError:
            pass  # a kind of declaration this version does not know: a name
    return tuple(typed.get(name, name) for name in _gathered(lowered, PARAMETERS_KEY))


def declared_names(declared):
    """The parameter names of declarations ``declared``."""
    return {parse_parameter(entry)[0] for entry in declared}


def undeclared(params, declared):
    """The names in ``params`` that a storlet declaring ``declared`` does
    not take (sorted); none when it declares nothing (``None``)."""
    if declared is None:
        return []
    return sorted(
        set(params)
        - declared_names(declared)
        - {SOURCE_PARAMETER, MANY_PARAMETER, MANY_TYPE_PARAMETER}
    )


def refused_values(params, declared):
    """What is wrong with the values in ``params`` of the parameters
    ``declared`` types or bounds, one sentence each, as the storlet's own
    checks word it."""
    problems = []
    for entry in declared or ():
        name, kind, values = parse_parameter(entry)
        raw = params.get(name)
        if kind is None or raw in (None, ""):
            continue
        raw = str(raw)
        if kind == "one-of":
            if raw not in values:
                problems.append(
                    "parameter %s must be one of %s, got %r" % (name, ", ".join(values), raw)
                )
            continue
        try:
            value = int(raw) if kind == "int" else float(raw)
        except ValueError:
            problems.append(
                "parameter %s must be %s, got %r"
                % (name, "an integer" if kind == "int" else "a number", raw)
            )
            continue
        low, high = values
        if kind == "float" and not math.isfinite(value):
            problems.append("parameter %s must be finite, got %r" % (name, raw))
        elif (low is not None and value < low) or (high is not None and value > high):
            problems.append(
                "parameter %s must be in [%s, %s], got %s"
                % (name, "" if low is None else low, "" if high is None else high, raw)
            )
    return problems


# -- many objects in one call ----------------------------------------------
# A storlet declaring ``many = True`` (recorded as MANY_KEY on its object)
# maps each input of one call to an output of its own
# (:mod:`mlstorlets.sandbox.many`).  MANY_PARAMETER holds, as JSON, one
# ``[source, member, source etag]`` per mapped input, in input order; inputs
# past them are shared by every object (a model).  The output is a tar of
# the members, extracted by the proxy (EXTRACT_HEADER: EXTRACT_MANY), whose
# last member, MANY_REPORT, lists the inputs refused and why; the proxy
# reads it instead of storing it and answers it in bulk's summary as
# ``Refused``.
MANY_KEY = "Mlstorlets-Many"
MANY_PARAMETER = "mlstorlets_many"
# The content type of every output of such a call, when the client knows it.
MANY_TYPE_PARAMETER = "mlstorlets_type"
MANY_REPORT = INTERNAL_PREFIX + "-report.json"
# Bytes of a report the proxy reads, and of one reason in it.
MAX_MANY_REPORT = 1 << 20


# -- state -----------------------------------------------------------------
# A model's state (bytes) rides in parameters as URL-safe base64, in chunks
# of at most STATE_CHUNK characters (far below any header line limit):
# ``state_parts`` says how many, ``state_0`` ... hold them.  The request's
# other limits (the engine's 4 KiB SBus datagram holds every parameter) are
# the caller's ``budget``: a state over it travels as an object instead.
STATE_PARTS = "state_parts"
STATE_CHUNK = 4000


def state_parameters(blob, budget=None):
    """Parameters carrying ``blob`` exactly, or None if its encoding is
    over ``budget`` characters (None: no budget)."""
    text = base64.urlsafe_b64encode(blob).decode("ascii")
    if budget is not None and len(text) > budget:
        return None
    chunks = [text[i : i + STATE_CHUNK] for i in range(0, len(text), STATE_CHUNK)] or [""]
    params = {STATE_PARTS: str(len(chunks))}
    params.update(("state_%d" % i, c) for i, c in enumerate(chunks))
    return params


def read_state_parameters(params, limit):
    """The blob :func:`state_parameters` carried in ``params``; None when
    there is none.

    Raises
    ------
    ValueError
        Missing or malformed chunks, or a blob over ``limit`` bytes.
    """
    if STATE_PARTS not in params:
        return None
    try:
        parts = int(params[STATE_PARTS])
        if not 0 < parts <= limit // STATE_CHUNK + 1:
            raise ValueError("%d parts: over %d bytes" % (parts, limit))
        text = "".join(params["state_%d" % i] for i in range(parts))
        if len(text) > (limit + 2) // 3 * 4:
            raise ValueError("over %d bytes" % limit)
        return base64.urlsafe_b64decode(text.encode("ascii"))
    except (KeyError, ValueError, UnicodeEncodeError, binascii.Error) as err:
        raise ValueError("bad state parameters (%s)" % err) from None


# -- extraction ------------------------------------------------------------
# On a PUT with X-Copy-From and X-Run-Storlet to /container/prefix: the
# storlet's output is a tar (the only value is ``tar``), and the proxy's
# storlet_copy middleware extracts it under the prefix, one object per
# member, as Swift's bulk extract-archive does with an uploaded tar.  The
# answer is bulk's JSON summary (``Number Files Created``, ``Errors``,
# ``Response Status``).
EXTRACT_HEADER = "X-Mlstorlets-Extract"
EXTRACT_TAR = "tar"
EXTRACT_MANY = "many"


# -- the request body as an input -------------------------------------------
# A GET with X-Run-Storlet and BODY_INPUT_HEADER: true gives the storlet its
# request body as its second input, before the extra resources, streamed
# from the client (mlstorlets.server.middleware.body_input): a caller's own
# data (a model's state) reaches the storlet without being stored.  The
# proxy publishes the largest body it takes in /info (INFO_KEY), under
# MAX_BODY_INPUT_KEY; a cluster that publishes none takes none.
BODY_INPUT_HEADER = "X-Mlstorlets-Body-Input"
MAX_BODY_INPUT_KEY = "max_body_input_bytes"
DEFAULT_MAX_BODY_INPUT = 128 << 20
# On a 503 with Retry-After: the engine ran nothing of the call (a proxy
# holding enough bodies read none of this one), which may be sent again.
NOT_RUN_HEADER = "X-Mlstorlets-Not-Run"
# On an answer made on an object server (with the extra resources it holds,
# mlstorlets.server.middleware.local_resources): where the storlet ran.
RAN_ON_HEADER = "X-Mlstorlets-Ran-On"
RAN_ON_OBJECT_SERVER = "object-server"

# -- errors ----------------------------------------------------------------
# Output metadata the sandbox's agent sets, in place of a storlet's, when the
# storlet raised: ``<exception type>: <message>`` (:func:`one_line`).  The
# host turns it into the client's ``502`` and never into a header of its
# own; a storlet setting it only words its own failure.
FAILURE_KEY = "Mlstorlets-Failure"

# With ``X-Storlet-Generate-Log: True`` (upstream's request header), the
# invocation's log (the storlet's log lines and the traceback of what it
# raised) is stored as one object of at most MAX_LOG bytes in the account's
# log container, which LOG_OBJECT_HEADER names (``container/object``,
# quoted as a reason); when it could not be stored, LOG_ERROR_HEADER says
# why and the request goes on.  On a storlet's output, the engine carries the
# headers as output metadata (LOG_KEYS), which the proxy moves to the
# headers and never stores; a storlet cannot set them.
GENERATE_LOG_HEADER = "X-Storlet-Generate-Log"
LOG_OBJECT_HEADER = "X-Mlstorlets-Log-Object"
LOG_ERROR_HEADER = "X-Mlstorlets-Log-Error"
LOG_HEADERS = (LOG_OBJECT_HEADER, LOG_ERROR_HEADER)
# The output metadata that carries each of them on a storlet's output.
LOG_KEYS = {
    LOG_OBJECT_HEADER: "Mlstorlets-Log-Object",
    LOG_ERROR_HEADER: "Mlstorlets-Log-Error",
}
MAX_LOG = 1 << 20


def storlet_json(data):
    """``json.loads`` of what a storlet wrote, which is never trusted:
    ValueError for anything JSON cannot take, nesting past the parser's
    recursion included (a RecursionError from ``json``)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested past the parser's recursion") from None


# What a line may hold as it is: printable characters.  C0 and C1 controls,
# DEL and the Unicode line and paragraph separators would end or fold it.
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(text, limit=MAX_REASON):
    """``text`` as one line of at most ``limit`` characters.

    Each control character (C0, DEL, C1, U+2028 and U+2029) is written as
    its Python escape (``\\n``, ``\\x1b``), so that nothing of it ends a
    header or a log line and the text can still be read; what is past
    ``limit`` is cut and the cut marked with ``...``.  A line made so is
    made so again unchanged: each layer that passes a storlet's words on
    (the sandbox's agent, the host) applies it, none trusting the one
    before.

    Parameters
    ----------
    text : object
        Made ``str``: what a storlet raised or wrote, any length.
    limit : int

    Returns
    -------
    str
    """
    out, size = [], 0
    for c in str(text):
        if c in _ESCAPES:
            c = _ESCAPES[c]
        elif ord(c) < 32 or 127 <= ord(c) < 160:
            c = "\\x%02x" % ord(c)
        elif c in "\u2028\u2029":
            c = "\\u%04x" % ord(c)
        if size + len(c) > limit:
            # The marker within the limit too, and no escape cut in two.
            while out and size + 3 > limit:
                size -= len(out.pop())
            return "".join(out) + "..."
        out.append(c)
        size += len(c)
    return "".join(out)


def log_headers(headers):
    """The log headers (:data:`LOG_HEADERS`) of a response's ``headers``,
    any case: what a middleware passes on from the answer it replaces."""
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    return {name: lower[name.lower()] for name in LOG_HEADERS if name.lower() in lower}


def quote_reason(reason):
    """``reason`` as the value of :data:`REASON_HEADER`: one line, at most
    :data:`MAX_REASON` characters, percent-quoted where not printable
    ASCII."""
    line = " ".join(str(reason).split())[:MAX_REASON]
    return quote(line, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")


def failure_headers(kind, reason, obj=None, parameter=None, detail=None):
    """The headers of an answer to a storlet that produced no output:
    :data:`ERROR_HEADER` with ``kind``, :data:`REASON_HEADER` with the
    quoted ``reason`` and, when given, :data:`OBJECT_HEADER` with the
    quoted name of the input the storlet refused,
    :data:`PARAMETER_HEADER` with the parameter whose value it refused and
    :data:`DETAIL_HEADER` with the storlet's own words."""
    headers = {ERROR_HEADER: kind, REASON_HEADER: quote_reason(reason)}
    for header, value in (
        (OBJECT_HEADER, obj),
        (PARAMETER_HEADER, parameter),
        (DETAIL_HEADER, detail),
    ):
        if value:
            headers[header] = quote_reason(value)
    return headers


def failed_object(headers):
    """The input a refusal named (:data:`OBJECT_HEADER`), or None."""
    return _quoted_header(headers, OBJECT_HEADER)


def failed_detail(headers):
    """The storlet's own words of a failure (:data:`DETAIL_HEADER`), or None."""
    return _quoted_header(headers, DETAIL_HEADER)


def failed_parameter(headers):
    """The parameter a refusal named (:data:`PARAMETER_HEADER`), or None."""
    return _quoted_header(headers, PARAMETER_HEADER)


def _quoted_header(headers, name):
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    value = lower.get(name.lower())
    return unquote_reason(value) if value else None


def unquote_reason(value):
    """The reason :func:`quote_reason` quoted."""
    return unquote(value)


def storlet_error(status, headers):
    """(kind, reason) of a proxy's answer to a storlet request, or None.

    Reads :data:`ERROR_HEADER` and :data:`REASON_HEADER`; a proxy that does
    not send them is read from the status alone (reason ``None``), but for
    a ``503``: Swift's own, or the engine's for a call it did not run
    (:data:`NOT_RUN_HEADER`), say nothing of a storlet.

    Parameters
    ----------
    status : int
    headers : mapping
        Response headers, any case.
    """
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    kind = lower.get(ERROR_HEADER.lower())
    if kind in STATUS:
        reason = lower.get(REASON_HEADER.lower())
        return kind, unquote_reason(reason) if reason else None
    for kind, code in STATUS.items():
        if status == code and kind != UNAVAILABLE:
            return kind, None
    return None


# -- tar outputs -----------------------------------------------------------
# A storlet whose output is a tar of objects (the frames of a video range)
# gives each member's user metadata and type as pax headers, which Swift's
# bulk extraction (and the client runner, which extracts as it does)
# writes to the objects it makes.
PAX_META = "SCHILY.xattr.user.meta."
PAX_TYPE = "SCHILY.xattr.user.mime_type"


# -- internal names --------------------------------------------------------
# (INTERNAL_PREFIX is defined at the top: other names derive from it.)


def is_internal(name):
    """True for a name the project keeps for itself: one of its path
    components starts with :data:`INTERNAL_PREFIX`."""
    return any(part.startswith(INTERNAL_PREFIX) for part in name.split("/"))
