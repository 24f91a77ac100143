"""How many objects one storlet request can read: planning multi-input calls.

A storlet reads more than one object through ``X-Storlet-Extra-Resources``.
Two limits bound how many objects one request can name, and the first one
met is rarely the obvious one:

* Swift (eventlet) refuses a request header line over 8192 bytes, so the
  comma-separated list of ``/container/object`` paths must fit in it;
* the storlets engine hands every input to the sandbox in one SBus datagram
  that ``libsbus`` receives into a 4096-byte buffer.  The datagram holds,
  as JSON, each input's *user metadata* and the invocation parameters; a
  request whose datagram is longer fails (the storlet never starts): with
  metadata on every input, far fewer inputs than the header allows.

The cluster runner owns these budgets; this module is pure logic, so that
the client can plan requests (and the tests check the plans) without a
cluster.
"""

import json
import urllib.parse

from mlstorlets.client.errors import UsageError
from mlstorlets.sandbox import protocol

__all__ = [
    "HEADER_LIMIT",
    "SBUS_LIMIT",
    "RESERVED",
    "ENGINE_RESERVE",
    "datagram_cost",
    "input_cost",
    "resource_path",
    "plan_groups",
]

#: Longest request header line Swift accepts (``max_header_size``).
HEADER_LIMIT = 8192

#: Size of the buffer the sandbox receives an invocation datagram into
#: (``MAX_MSG_LENGTH`` in storlets' ``sbus.c``).
SBUS_LIMIT = protocol.SBUS_DATAGRAM_LIMIT

#: Datagram bytes the engine takes for itself: the output, metadata and
#: logger descriptors and its own parameters, with a margin over what
#: bisection on the embedded cluster found.
ENGINE_RESERVE = 640

#: Datagram bytes kept for what is not an input where the storlet's
#: parameters are not counted one by one: the engine's, and parameters of
#: under 384 bytes (the face storlets').
RESERVED = ENGINE_RESERVE + 384

_HEADER_NAME = "X-Storlet-Extra-Resources: "

# What the engine sends for an input besides its metadata: the JSON
# {"storlets": {"type": "SBUS_FD_INPUT_OBJECT"}, "storage": <metadata>}
# and the ", " separating it from the next descriptor.
_INPUT_OVERHEAD = (
    len(json.dumps({"storlets": {"type": "SBUS_FD_INPUT_OBJECT"}, "storage": None}))
    - len("null")
    + 2
)


def input_cost(metadata):
    """Datagram bytes one input object costs, given its user metadata.

    Parameters
    ----------
    metadata : dict of str to str
        The object's user metadata, keys without ``X-Object-Meta-``; keys
        starting ``Storlet-`` are not sent and not counted.

    Returns
    -------
    cost : int
    """
    sent = {}
    for key, value in metadata.items():
        if key.lower().startswith("storlet-"):
            continue
        # The engine sees WSGI strings (UTF-8 bytes read as Latin-1), which
        # JSON escapes to six characters a non-ASCII byte.
        sent[_wsgi(key)] = _wsgi(value)
    return _INPUT_OVERHEAD + len(json.dumps(sent))


def _wsgi(text):
    return str(text).encode("utf-8").decode("latin-1")


def datagram_cost(params):
    """Bytes the request's parameters take in the engine's SBus datagram.

    The engine sees WSGI strings (UTF-8 bytes read as Latin-1) and sends
    them as JSON, which escapes every non-ASCII byte to six characters.
    """
    return len(json.dumps({_wsgi(k): _wsgi(v) for k, v in params.items()}))


def resource_path(container, obj):
    """``/container/object`` for ``X-Storlet-Extra-Resources``, quoted.

    The engine splits the header on commas and unquotes each path, so
    quoting keeps a comma, ``%`` or non-ASCII character in a name intact.
    """
    return urllib.parse.quote("/%s/%s" % (container, obj), safe="/")


def plan_groups(
    costs,
    paths,
    weights=None,
    max_weight=None,
    budget=SBUS_LIMIT - RESERVED,
    header_limit=HEADER_LIMIT,
    max_count=protocol.MAX_INPUTS - 2,
):
    """Split inputs, in order, into the fewest consecutive requests that fit.

    Every input of a group goes into the request's
    ``X-Storlet-Extra-Resources`` header; the object the request runs on is
    not an input here, and its cost is to be left out of ``budget``.

    Parameters
    ----------
    costs : sequence of int
        :func:`input_cost` of each input.
    paths : sequence of str
        :func:`resource_path` of each input.
    weights : sequence of int, optional
        What each input adds to its group's output (e.g. its faces); by
        default 1 each, so that ``max_weight`` counts inputs.
    max_weight : int, optional
        Largest total weight of a group (e.g. faces in a shard), unless a
        single input weighs more.
    budget : int, default=SBUS_LIMIT - RESERVED
        Datagram bytes the inputs of one request may use.
    header_limit : int, default=HEADER_LIMIT
        Longest header line.
    max_count : int, default=MAX_INPUTS - 2
        Most inputs of a group (room for the request's object and a
        payload).

    Returns
    -------
    groups : list of list of int
        Indices into ``costs``, each group non-empty, in input order.

    Raises
    ------
    ValueError
        If one input alone exceeds the budget (its metadata is too large to
        be read with any other), or ``max_weight`` is below 1.
    """
    if len(costs) != len(paths):
        raise ValueError("costs and paths differ in length")
    if max_weight is not None and max_weight < 1:
        raise ValueError("max_weight must be at least 1")
    if weights is None:
        weights = [1] * len(costs)
    header_room = header_limit - len(_HEADER_NAME) - 2  # CRLF
    groups, group, used, header, weight = [], [], 0, -1, 0
    for index, (cost, path, item_weight) in enumerate(zip(costs, paths, weights)):
        if cost > budget or len(path) > header_room:
            raise UsageError(
                f"input {index} ({path}) cannot be read by a storlet request: it has {cost} "
                f"bytes of metadata to send (budget {budget}) and a path of {len(path)} "
                f"characters (room {header_room})"
            )
        extra_header = len(path) + 1  # and a comma
        full = (
            used + cost > budget
            or header + extra_header > header_room
            or (max_weight is not None and weight + item_weight > max_weight)
            or len(group) >= max_count
        )
        if group and full:
            groups.append(group)
            group, used, header, weight = [], 0, -1, 0
        group.append(index)
        used += cost
        header += extra_header
        weight += item_weight
    if group:
        groups.append(group)
    return groups
