"""Batches of small objects, many objects per storlet call.

Swift's cost per request dwarfs a cheap storlet's work on a small object,
so a batch maps many small objects in one call when the storlet declares
``many = True`` (:mod:`mlstorlets.sandbox.many`): one ``PUT`` of the
destination prefix with ``X-Copy-From`` (the first source),
``X-Storlet-Extra-Resources`` (the other sources, then the shared inputs)
and ``X-Mlstorlets-Extract: many``; the proxy extracts the storlet's tar,
one object per output, with Swift's bulk extraction.

:func:`plan` cuts the pending objects into such calls, within what one call
can carry (the engine's SBus datagram, the header line, the descriptors a
sandbox takes, the bytes one call reads); :func:`run` makes one call and
says what became of each object.  Each output is written whole or not at
all; a refused object is reported by the storlet and the others are made;
a call that fails as a whole (a storlet that died, a datagram over its
budget after all) is split in two and each half tried again, down to one
object per call, so that every object ends with its own outcome.
"""

import json
import posixpath
import time
from urllib.parse import unquote

from mlstorlets.client.errors import storlet_error
from mlstorlets.client.runners import budget
from mlstorlets.client.swift import SwiftError
from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.many import plain_name

__all__ = [
    "MAX_OBJECT_BYTES",
    "MAX_CALL_BYTES",
    "MAX_OBJECTS",
    "UNKNOWN",
    "plan",
    "run",
    "split",
    "unknown",
]

#: Objects up to this size are mapped many per call.  Past it, a
#: request's cost is small beside the object's own work, which one call per
#: object spreads over the object servers holding the data, where a call
#: over many runs on the proxy (``benchmarks/many_objects.py --sweep``
#: measures where the two cross).
MAX_OBJECT_BYTES = 128 << 10
#: Bytes of sources one call reads: the storlet answers once it has made
#: every output, within the engine's storlet timeout.
MAX_CALL_BYTES = 32 << 20
#: Inputs of one call.
MAX_OBJECTS = protocol.MAX_INPUTS


def directory(task):
    """The destination directory the call writes ``task``'s output under
    (``''``: the container)."""
    head = posixpath.dirname(task.dest_name)
    return head + "/" if head else ""


def member(task):
    """``task``'s output name relative to :func:`directory`."""
    return task.dest_name[len(directory(task)) :]


def entry(task):
    """``task``'s line of the call's plan: source, output, source ETag."""
    return [task.source, member(task), task.etag]


def call_parameters(params, tasks, content_type):
    """The parameters of one call over ``tasks``."""
    found = {k: v for k, v in params.items() if k != protocol.SOURCE_PARAMETER}
    found[protocol.MANY_PARAMETER] = json.dumps([entry(t) for t in tasks], ensure_ascii=False)
    if content_type:
        found[protocol.MANY_TYPE_PARAMETER] = content_type
    return found


def plan(
    tasks,
    params,
    *,
    datagram,
    header,
    metadata_cost,
    shared=(),
    content_type_of=lambda task: None,
    max_objects=MAX_OBJECTS,
    spread=1,
):
    """Cut ``tasks`` (in order) into calls.

    Parameters
    ----------
    tasks : list of mlstorlets.client.batch.Task
    params : dict
        The storlet's parameters, the same for every object.
    datagram, header : int
        The cluster's datagram and header line limits.
    metadata_cost : int
        Datagram bytes assumed for each input's metadata
        (:func:`~mlstorlets.client.runners.budget.input_cost`).
    shared : sequence of str
        ``/container/object`` paths every call also reads (a model).
    content_type_of : callable
        The content type of a task's output, or None.
    max_objects : int
    spread : int
        Make at least this many calls where there are objects enough (the
        batch's concurrency, and more): a few large calls would leave the
        cluster's other workers idle.

    Returns
    -------
    list of list of Task
        Each a call; a large object, or one that fits with no other, is a
        call of its own.
    """
    per_call = min(max_objects - len(shared), max(2, -(-len(tasks) // max(1, spread))))
    shared_paths = [budget.resource_path(*p.lstrip("/").split("/", 1)) for p in shared]
    header_room = (
        header - len("X-Storlet-Extra-Resources: ") - 2 - sum(len(p) + 1 for p in shared_paths)
    )
    fixed = budget.ENGINE_RESERVE + (1 + len(shared)) * metadata_cost

    def fits(group, content_type):
        if len(group) > per_call:
            return False
        if sum(t.size for t in group) > MAX_CALL_BYTES:
            return False
        paths = sum(len(budget.resource_path(t.container, t.name)) + 1 for t in group[1:])
        if paths > header_room:
            return False
        used = fixed + (len(group) - 1) * metadata_cost
        return used + budget.datagram_cost(call_parameters(params, group, content_type)) <= datagram

    calls, group, key = [], [], None
    for task in tasks:
        content_type = content_type_of(task)
        task_key = (task.container, task.dest_container, directory(task), content_type)
        if task.size > MAX_OBJECT_BYTES or not plain_name(member(task)):
            calls += [group, [task]] if group else [[task]]
            group = []
            continue
        if group and (task_key != key or not fits(group + [task], content_type)):
            calls.append(group)
            group = []
        group.append(task)
        key = task_key
    if group:
        calls.append(group)
    return calls


def run(swift, storlet, tasks, params, *, shared=(), headers=None, content_type=None):
    """One call mapping ``tasks`` to their outputs.

    Returns
    -------
    outcomes : dict
        For each task's label: None (its output was written) or the reason
        it was not (refused by the storlet, or its write failed).

    Raises
    ------
    mlstorlets.client.errors.ObjectFailed
        The call failed as a whole (nothing of it is known to be written):
        a parameter refused, a storlet that failed, a call Swift refused.
    """
    first = tasks[0]
    extra = ["/%s/%s" % (t.container, t.name) for t in tasks[1:]] + list(shared)
    try:
        answer = swift.storlet_extract(
            first.container,
            first.name,
            first.dest_container,
            directory(first).rstrip("/"),
            storlet,
            call_parameters(params, tasks, content_type),
            headers=headers,
            extra_resources=extra or None,
            mode=protocol.EXTRACT_MANY,
        )
    except SwiftError as err:
        name = first.label
        if err.object:
            name = next((t.label for t in tasks if t.source == err.object), name)
        raise storlet_error(storlet, err, name) from None
    status = str(answer.get("Response Status", ""))
    refused = {}
    for item in answer.get("Refused") or ():
        refused[item[0]] = "storlet %s refused it: %s" % (storlet, item[1])
    errors = {}
    for path, why in answer.get("Errors") or ():
        # Swift could not write it for now (a node restarting, error
        # limited): tried again, after a pause.
        errors[unquote(path)] = (
            TRANSIENT if str(why).startswith("5") else "its output could not be written: %s" % why
        )
    if not status.startswith("2") and not errors and not refused:
        raise _WholeCall(first.label, "%s: %s" % (status, answer.get("Response Body", "")))
    complete = answer.get("Complete") is True
    outcomes = {}
    for task in tasks:
        reason = refused.get(task.source) or errors.get(task.dest)
        if reason is None and not status.startswith("2") and not complete:
            # Bulk stopped early: whether this one was written is not known.
            reason = UNKNOWN
        outcomes[task.label] = reason
    return outcomes


#: An outcome :func:`run` cannot tell: the caller tries the object again.
UNKNOWN = object()
#: An output Swift answered 5xx for: tried again after a pause, which
#: doubles at each split (Swift's proxy error-limits a node that failed for
#: ``error_suppression_interval``, 60 s by default).
TRANSIENT = object()
RETRY_PAUSE = 1.0
MAX_RETRY_PAUSE = 16.0


def unknown(reason):
    """True for an outcome of :func:`run` that must be tried again."""
    return reason is UNKNOWN or reason is TRANSIENT


def split(group, call, single, checkpoint=lambda: None, pause=RETRY_PAUSE):
    """``{label: None or reason}`` of ``group`` through ``call`` (such as
    :func:`run` over a group), a group that fails as a whole, or whose
    outcome is not known, split in two and each half tried again, down to
    ``single(task)`` over one object.

    A refused parameter (an error with ``parameter``) is the same for every
    object: it is raised.  ``checkpoint()`` runs before each retry (it
    raises to stop); a retry of outputs Swift answered 5xx for waits
    ``pause`` seconds first.
    """
    if len(group) == 1:
        try:
            single(group[0])
            return {group[0].label: None}
        except ObjectError as err:
            if getattr(err, "parameter", None):
                raise
            return {group[0].label: err.reason if err.name == group[0].label else str(err)}
    try:
        found = call(group)
    except ObjectError as err:
        if getattr(err, "parameter", None):
            raise
        found = {t.label: UNKNOWN for t in group}
    again = [t for t in group if unknown(found[t.label])]
    if again:
        checkpoint()
        if any(found[t.label] is TRANSIENT for t in again):
            time.sleep(pause)
            pause = min(2 * pause, MAX_RETRY_PAUSE)
        half = (len(again) + 1) // 2
        for part in (again[:half], again[half:]):
            if part:
                found.update(split(part, call, single, checkpoint, pause))
    return found


class _WholeCall(SwiftError):
    """The extraction failed as a whole."""

    def __init__(self, name, reason):
        super().__init__(name, reason, 502, protocol.FAILED)
