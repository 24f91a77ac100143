"""The client's errors: what a caller catches, what the CLI reports.

Every failure the client expects is an :class:`Error`, reported by the CLI
in one line with exit status 2 and no traceback; anything else is a bug and
keeps its traceback.  Failures about one object (:class:`ObjectFailed`)
name it, whether the work ran in the cluster or on the client, so a batch
records them per object and goes on:

- :class:`StoreError`: a store refused or failed a request
  (:class:`NotFound`, and Swift's :class:`~mlstorlets.client.swift.SwiftError`);
- :class:`StorletFailed`: a storlet raised, timed out, ran out of memory
  or answered what the engine would not store;
- :class:`Refused`: a storlet refused its input (the input is bad).

Only :class:`UsageError`, an argument the caller passed, is a
``ValueError``, as Python's and scikit-learn's argument checks are.  A bad
object found by code the storlets also run (reading a model, a table)
raises the sandbox's :class:`~mlstorlets.sandbox.errors.ObjectError`, of
which :class:`ObjectFailed` is one.
"""

import contextlib
from collections.abc import Callable, Iterator

from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.errors import ObjectError


class Error(Exception):
    """A failure the client expects and reports."""


class UsageError(Error, ValueError):
    """An argument is wrong (a URI, a parameter, an option): nothing was
    tried."""


class ObjectFailed(Error, ObjectError):
    """Work on one object failed.

    Parameters
    ----------
    name : str
        The object (a URI, or ``container/object``).
    reason : str
        One line, for a human.
    status : int or None
        The HTTP status of the answer, when there was one.
    kind : {'refused', 'failed', 'timed-out', 'out-of-memory', 'unavailable'} or None
        For a storlet's work, what became of it
        (:data:`mlstorlets.sandbox.protocol.STATUS`).
    obj : str or None
        For a call over several inputs, the one the storlet named
        (:data:`mlstorlets.sandbox.protocol.OBJECT_HEADER`).
    parameter : str or None
        For a refusal of a parameter's value, the parameter
        (:data:`mlstorlets.sandbox.protocol.PARAMETER_HEADER`): the same
        for every object, so a batch stops at the first.
    detail : str or None
        From the cluster, the storlet's own words
        (:data:`mlstorlets.sandbox.protocol.DETAIL_HEADER`).
    """

    def __init__(
        self,
        name: str,
        reason: str,
        status: int | None = None,
        kind: str | None = None,
        obj: str | None = None,
        parameter: str | None = None,
        detail: str | None = None,
    ):
        ObjectError.__init__(self, name, reason)
        self.status = status
        self.kind = kind
        self.object = obj
        self.parameter = parameter
        self.detail = detail

    @property
    def uri(self):
        return self.name


class StoreError(ObjectFailed):
    """A store refused or failed a request."""


class NotFound(StoreError):
    """The object, container or bucket does not exist."""


class Refused(ObjectFailed):
    """A storlet refused its input: the object is bad for it."""


class StorletFailed(ObjectFailed):
    """A storlet raised, timed out, ran out of memory, answered what the
    engine would not store, or could not run (its account's sandbox did
    not start); the cluster answers it 502, 504, 507 or 503."""


def storlet_failure(
    name: str,
    storlet: str,
    kind: str,
    reason: str,
    status: int | None = None,
    obj: str | None = None,
    parameter: str | None = None,
) -> ObjectFailed:
    """The error of ``storlet`` over ``name``, worded the same whether it
    ran in the cluster or on the client: a :class:`Refused` or a
    :class:`StorletFailed`."""
    if kind == protocol.REFUSED:
        # The storlet may refuse another input than the request's object:
        # a model, an extra resource; then it is named.
        subject = "it" if not obj or name == obj or name.endswith("/" + obj) else obj
        words = "storlet %s refused %s: %s" % (storlet, subject, reason)
        return Refused(name, words, status, kind, obj, parameter, reason)
    words = "storlet %s %s: %s" % (storlet, protocol.outcome(kind), reason)
    return StorletFailed(name, words, status, kind, obj, parameter, reason)


def storlet_error(storlet: str, err: ObjectFailed, name: str | None = None) -> ObjectFailed:
    """``err``, a failed storlet request to the cluster, as the client
    runner would raise it over the same object.

    Parameters
    ----------
    storlet : str
    err : ObjectFailed
        What the gateway raised (:class:`~mlstorlets.client.swift.SwiftError`).
    name : str, optional
        The object to name, when not ``err.name`` (a URI where the request
        named ``container/object``).

    Returns
    -------
    ObjectFailed
        A :class:`Refused` or :class:`StorletFailed` when the storlet
        produced no output (``err.kind``), the status kept in ``status``
        rather than in the words; else ``err`` itself, renamed.
    """
    name = err.name if name is None else name
    if err.kind is None:
        return type(err)(name, err.reason, err.status, err.kind, err.object, err.parameter)
    reason = err.detail or err.reason
    if err.status is not None and reason.startswith("%d " % err.status):
        reason = reason[len("%d " % err.status) :]
    return storlet_failure(name, storlet, err.kind, reason, err.status, err.object, err.parameter)


@contextlib.contextmanager
def removed_after(remove: Callable[[], object], what: str) -> Iterator[None]:
    """Call ``remove()`` when the block ends, never hiding an error.

    Temporary state (a payload object, training shards) must go whether
    the work succeeded or not.  When the block succeeded, a failure to
    remove is raised; when the block raised, that error stays the one
    raised and the failure to remove is added to it as a note (the CLI
    prints notes), so neither is lost.

    Parameters
    ----------
    remove : callable
    what : str
        What ``remove`` removes, for the note.
    """
    try:
        yield
    except BaseException as err:
        try:
            remove()
        except Exception as failed:
            err.add_note("%s was not removed: %s" % (what, failed))
        raise
    remove()
