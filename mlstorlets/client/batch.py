"""The batch engine: one job over every object of a set.

:func:`execute` runs a job, in the cluster or on the client (see
:mod:`mlstorlets.client.placement`): bounded concurrency, a progress bar, a
summary of what was done, skipped or failed and why, resume, ``--dry-run``,
and Ctrl-C (the work not started is cancelled, the work in flight stops at
its next step, the summary so far is returned; running the job again
completes it).

:func:`run_batch` is the job that runs a storlet inside the cluster: for
each source object ``A`` under ``src`` it asks the cluster to make ``B``
(under ``dest``) the storlet's output over ``A``, a ``PUT`` of ``B`` with
``X-Copy-From: A`` and ``X-Run-Storlet``.  The data never passes through
the client; only requests, answers and (for listings) names do.

* It resumes: every output records its source's ETag
  (``X-Object-Meta-Source-Etag``) and the digest of everything else that
  made it (``Mlstorlets-Run``); an output that already exists for the same
  source and run is skipped.
* A failure is per object: the summary lists each with the server's reason,
  and the other objects go on.
"""

import dataclasses
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

from mlstorlets.client import many_calls
from mlstorlets.client.errors import NotFound, UsageError, storlet_error
from mlstorlets.client.runners import budget
from mlstorlets.client.swift import Connection, Swift, SwiftError, user_metadata
from mlstorlets.client.uri import format_uri, output_type_for, parse_uri, plan_keys
from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.errors import ObjectError

SOURCE_ETAG_HEADER = protocol.OBJECT_META + protocol.SOURCE_ETAG_KEY
# What made an output besides its source: the storlet, its parameters and
# the content of its other inputs (a model, say).  An output is up to date
# only if both match.
RUN_KEY = "Mlstorlets-Run"
# Failures (and, in a dry run, planned objects) a summary prints one by
# one; the rest are counted.
MAX_LISTED = 20


class Cancelled(Exception):
    """The job was interrupted before this object's work was complete."""


@dataclasses.dataclass
class Task:
    """One invocation: the storlet over ``source``, written to ``dest``."""

    container: str
    name: str
    etag: str
    size: int
    dest_container: str
    dest_name: str
    #: The source's content type, as listed.
    content_type: str = ""

    @property
    def source(self):
        """``container/object``: what the storlet is told its source is."""
        return "%s/%s" % (self.container, self.name)

    @property
    def label(self):
        """The source's URI: how summaries name it, wherever it ran."""
        return format_uri(self.container, self.name)

    @property
    def dest(self):
        return "%s/%s" % (self.dest_container, self.dest_name)

    @property
    def output(self):
        """The output's URI."""
        return format_uri(self.dest_container, self.dest_name)


@dataclasses.dataclass
class BatchSummary:
    """What a batch did.

    ``placement`` says where the work ran: ``'cluster'`` (next to the data,
    with copy semantics) or ``'client'`` (downloaded, computed and uploaded
    by this process, see :mod:`mlstorlets.client.placement`).  ``client_bytes``
    counts the body bytes that went through the client: in the cluster,
    only the error messages of the storlet requests; on the client, every
    byte downloaded and uploaded.  ``source_bytes`` is the data the work
    read.  ``planned`` lists what a dry run would do; ``cancelled`` counts
    the objects an interrupted run did not finish.
    """

    storlet: str
    done: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    failed: list = dataclasses.field(default_factory=list)
    planned: list = dataclasses.field(default_factory=list)
    cancelled: int = 0
    interrupted: bool = False
    dry_run: bool = False
    client_bytes: int = 0
    source_bytes: int = 0
    seconds: float = 0.0
    placement: str = "cluster"
    #: Each source's output, by the source's URI (where a job writes one).
    outputs: dict = dataclasses.field(default_factory=dict)

    @property
    def ok(self):
        return not self.failed and not self.interrupted

    def format(self):
        where = "in the cluster" if self.placement == "cluster" else "on the client"
        if self.dry_run:
            lines = [
                "%s (dry run, %s): %d to do, %d up to date, %d bytes "
                "of data"
                % (self.storlet, where, len(self.planned), len(self.skipped), self.source_bytes)
            ]
            lines += [
                "  would do %s%s"
                % (
                    printable(name),
                    " -> " + printable(self.outputs[name]) if name in self.outputs else "",
                )
                for name in self.planned[:MAX_LISTED]
            ]
            if len(self.planned) > MAX_LISTED:
                lines.append("  ... and %d more" % (len(self.planned) - MAX_LISTED))
            return "\n".join(lines)
        lines = [
            "%s: %d done, %d skipped, %d failed in %.1f s %s; %d bytes "
            "through the client for %d bytes of data"
            % (
                self.storlet,
                len(self.done),
                len(self.skipped),
                len(self.failed),
                self.seconds,
                where,
                self.client_bytes,
                self.source_bytes,
            )
        ]
        for name, reason in self.failed[:MAX_LISTED]:
            lines.append("  failed %s: %s" % (printable(name), printable(reason)))
        if len(self.failed) > MAX_LISTED:
            lines.append("  ... and %d more failures" % (len(self.failed) - MAX_LISTED))
        if self.interrupted:
            lines.append(
                "interrupted: %d not done; run the same command "
                "again to complete it" % self.cancelled
            )
        return "\n".join(lines)

    def as_dict(self):
        """The summary as plain data (``--json``)."""
        found = dataclasses.asdict(self)
        found["failed"] = [{"name": n, "reason": r} for n, r in self.failed]
        found["ok"] = self.ok
        return found

    def to_json(self):
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False)


def printable(text):
    """``text`` on one line: a name may hold CR, LF or other controls."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# -- the engine ------------------------------------------------------------
class Job:
    """What a job's ``work`` function gets besides its task."""

    def __init__(self, summary, cancel, lock, bar=None):
        self._summary = summary
        self._cancel = cancel
        self._lock = lock
        self._bar = bar
        #: Bytes of this task's source read so far (shown as they come).
        self.read_bytes = 0

    def count(self, nbytes):
        """Count ``nbytes`` moved through the client."""
        with self._lock:
            self._summary.client_bytes += nbytes

    def read(self, nbytes):
        """Count ``nbytes`` of the task's source read through the client,
        and show them on the progress bar; stop there (:class:`Cancelled`)
        if the job was interrupted, so that Ctrl-C stops a large object's
        transfer at its next chunk, its output never written."""
        self.checkpoint()
        self.count(nbytes)
        self.read_bytes += nbytes
        if self._bar is not None:
            self._bar.update(nbytes)

    def checkpoint(self):
        """Stop here (raise :class:`Cancelled`) if the job was interrupted."""
        if self._cancel.is_set():
            raise Cancelled()


def execute(
    summary,
    tasks,
    work,
    concurrency=4,
    progress=None,
    up_to_date=None,
    dry_run=False,
    calls=None,
    work_many=None,
):
    """Run ``work(task, job)`` over ``tasks`` into ``summary``.

    Parameters
    ----------
    summary : BatchSummary
    tasks : list
        Each with a ``label`` (its name in the summary) and a ``size``.
    work : callable
        ``work(task, job)`` does one object; :class:`Job` counts the bytes
        it moves and stops it at a checkpoint when the job is interrupted.
        An :class:`~mlstorlets.sandbox.errors.ObjectError` (or any error)
        fails this object only; a refusal of a parameter's value (an error
        with ``parameter``) stops the batch and raises a
        :class:`~mlstorlets.client.errors.UsageError`.
    concurrency : int
    progress : bool, optional
        Show a progress bar; default: when stderr is a terminal.
    up_to_date : callable, optional
        ``up_to_date(task) -> bool``: skip the object.
    dry_run : bool
        List in ``summary.planned`` what would be done; do nothing.
    calls : list of list, optional
        ``tasks`` cut into calls: a call of one task is ``work``'s, a call
        of several is ``work_many``'s (``up_to_date`` is not asked for
        them).  By default, a call per task.
    work_many : callable, optional
        ``work_many(tasks, job) -> {label: None or reason}``: does
        several objects at once; an error fails them all, except a
        refusal of a parameter's value, which stops the batch.

    Returns
    -------
    BatchSummary
        ``summary``, its lists in the order of ``tasks``; ``interrupted`` when Ctrl-C
        stopped it.
    """
    if concurrency < 1:
        raise UsageError("concurrency must be at least 1")
    started = time.monotonic()
    summary.dry_run = dry_run
    summary.source_bytes = sum(t.size for t in tasks)
    summary.outputs = {t.label: t.output for t in tasks if getattr(t, "output", None)}
    cancel = threading.Event()
    lock = threading.Lock()
    # In bytes of source data when the sizes are known (a rate and an ETA
    # that mean something, and a single large object that moves); else in
    # objects.
    in_bytes = summary.source_bytes > 0
    bar = _progress(
        summary.source_bytes if in_bytes else len(tasks), summary.storlet, progress, in_bytes
    )

    refusals = []

    def one(task):
        job = Job(summary, cancel, lock, bar if in_bytes else None)
        try:
            job.checkpoint()
            if up_to_date is not None and up_to_date(task):
                return "skipped", None
            if dry_run:
                return "planned", None
            work(task, job)
            return "done", None
        except Cancelled:
            return "cancelled", None
        except ObjectError as err:
            if getattr(err, "parameter", None):
                # The caller's parameter, the same for every object: one
                # refusal stops the batch.
                refusals.append(err)
                cancel.set()
            elif cancel.is_set():
                # Stopped in a library that wraps what it meets (a storlet
                # reading its input, a store's transfer): not done.
                return "cancelled", None
            return "failed", err.reason if err.name == task.label else str(err)
        except Exception as err:  # one object's failure, whatever it is
            if cancel.is_set():
                return "cancelled", None
            return "failed", "%s: %s" % (type(err).__name__, err)
        finally:
            if bar is not None:
                bar.update(max(0, task.size - job.read_bytes) if in_bytes else 1)

    def many(group):
        job = Job(summary, cancel, lock)
        try:
            job.checkpoint()
            if dry_run:
                return {t.label: ("planned", None) for t in group}
            found = work_many(group, job)
            return {
                label: ("done", None) if reason is None else ("failed", reason)
                for label, reason in found.items()
            }
        except Cancelled:
            return {t.label: ("cancelled", None) for t in group}
        except ObjectError as err:
            if getattr(err, "parameter", None):
                refusals.append(err)
                cancel.set()
            return {t.label: ("failed", str(err)) for t in group}
        except Exception as err:  # the call's failure, whatever it is
            if cancel.is_set():
                return {t.label: ("cancelled", None) for t in group}
            return {t.label: ("failed", "%s: %s" % (type(err).__name__, err)) for t in group}
        finally:
            if bar is not None:
                bar.update(sum(t.size for t in group) if in_bytes else len(group))

    def unit(group):
        if len(group) == 1:
            return {group[0].label: one(group[0])}
        return many(group)

    pool = ThreadPoolExecutor(max_workers=concurrency)
    futures, outcomes = {}, {}
    try:
        # Submitted inside: a Ctrl-C while tasks are still being queued
        # (the first ones already running) is handled as any other.
        for group in calls if calls is not None else [[t] for t in tasks]:
            futures[pool.submit(unit, group)] = group
        for future in as_completed(futures):
            outcomes.update(future.result())
    except KeyboardInterrupt:
        # Ctrl-C: nothing more starts, what runs stops at its next
        # checkpoint, and the summary says what was done.
        cancel.set()
        summary.interrupted = True
        for future in futures:
            future.cancel()
        for future in futures:
            if not future.cancelled():
                outcomes.update(future.result())
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if bar is not None:
            bar.close()
    summary.cancelled = len(tasks) - len(outcomes)
    for name, (status, reason) in outcomes.items():
        if status == "failed":
            summary.failed.append((name, reason))
        elif status == "cancelled":
            summary.cancelled += 1
        else:
            getattr(summary, status).append(name)
    # Ctrl-C after the last object was under way and finished anyway: the
    # job is complete, and says so.
    summary.interrupted = summary.interrupted and summary.cancelled > 0
    # In the order of the tasks: a listing's, or a video's frame ranges
    # (by name, "frames 100-" would come before "frames 50-99").
    position = {t.label: i for i, t in enumerate(tasks)}
    for names in (summary.done, summary.skipped, summary.planned):
        names.sort(key=lambda name: position.get(name, len(position)))
    summary.failed.sort(key=lambda failure: position.get(failure[0], len(position)))
    summary.seconds = time.monotonic() - started
    if refusals:
        err = refusals[0]
        raise UsageError(
            "%s: %s (the value of parameter %s; %d object(s) done, nothing more tried)"
            % (summary.storlet, err.detail or err.reason, err.parameter, len(summary.done))
        )
    return summary


def _progress(total, label, enabled, in_bytes=False):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    # tqdm.auto: a widget in a notebook, text on a terminal.
    from tqdm.auto import tqdm

    if in_bytes:
        return tqdm(
            total=total,
            desc=label,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
        )
    return tqdm(total=total, desc=label, unit="obj", file=sys.stderr)


# -- storlets in the cluster -----------------------------------------------
def gateway(conn):
    """A :class:`~mlstorlets.client.swift.Swift` gateway over ``conn`` (a
    swiftclient ``Connection``, or a gateway already)."""
    return conn if isinstance(conn, Swift) else Swift(conn)


def list_sources(swift, uri):
    """(container, prefix, entries) of every object named by ``uri``.

    ``swift://c/o`` names one object; ``swift://c/p/`` or ``swift://c`` all
    the objects whose names start with the prefix (internal names left
    out).  Entries are listing dicts (name, hash, bytes, content_type).

    Raises
    ------
    ObjectError
        No such object or container, or nothing under the prefix.
    """
    swift = gateway(swift)
    container, prefix = parse_uri(uri)
    if prefix and not prefix.endswith("/"):
        headers = swift.head(container, prefix)
        if headers is None:
            raise NotFound(
                uri, "no such object (to name every object under a prefix, end it with /)"
            )
        return (
            container,
            prefix,
            [
                {
                    "name": prefix,
                    "hash": headers["etag"],
                    "bytes": int(headers["content-length"]),
                    "content_type": headers.get("content-type", ""),
                }
            ],
        )
    try:
        entries = swift.listing(container, prefix)
    except SwiftError as err:
        if err.status == 404:
            raise NotFound(uri, "no such container") from None
        raise
    if not entries:
        raise NotFound(uri, "no objects under this prefix")
    return container, prefix, entries


def plan(src, dest, entries, src_container, src_prefix, suffix=None):
    """The tasks that make ``dest`` from the listed ``entries`` of ``src``.

    A prefix ``dest`` (ending in ``/``, or a bare container) receives each
    source under its name relative to the source prefix (its extension
    replaced by ``suffix``, if given); a ``dest`` naming one object is
    allowed only for one source.
    """
    dest_container, _ = parse_uri(dest)
    pairs = plan_keys(src, dest, [e["name"] for e in entries], suffix)
    return [
        Task(
            src_container,
            entry["name"],
            entry["hash"],
            entry["bytes"],
            dest_container,
            name,
            entry.get("content_type", ""),
        )
        for entry, (_, name) in zip(entries, pairs)
    ]


def run_digest(storlet, params=None, extra_etags=()):
    """A short digest of everything but the source that made an output."""
    params = {k: str(v) for k, v in (params or {}).items() if k != "source"}
    text = json.dumps([storlet, sorted(params.items()), list(extra_etags)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def run_batch(
    conn: Connection | Swift,
    storlet: str,
    src: str,
    dest: str,
    params: dict | None = None,
    concurrency: int = 4,
    resume: bool = True,
    extra_resources: list[str] | None = None,
    progress: bool | None = None,
    dry_run: bool = False,
    output_type: tuple[str, str] | Callable | None = None,
    objects_per_call: int | None = None,
) -> BatchSummary:
    """Run ``storlet`` over every object named by ``src`` into ``dest``.

    Small objects go many per call when the storlet declares it maps them
    so (:mod:`mlstorlets.client.many_calls`); each output is still written
    whole or not at all, and each failure is the object's own.

    Parameters
    ----------
    conn : swiftclient.client.Connection or mlstorlets.client.swift.Swift
    storlet : str
        The storlet object's name, e.g. ``'extract_face.py'``.  It is
        checked once, before any call: it must be deployed and declare
        every key of ``params``.
    src, dest : str
        ``swift://container/object`` or ``swift://container/prefix/``.
    params : dict, optional
        Storlet parameters, the same for every object.  The source's name is
        always passed as ``source``.
    concurrency : int
        Invocations in flight at once.
    resume : bool
        Skip sources whose output exists for the same source content.
    extra_resources : list of str, optional
        ``/container/object`` paths every invocation also reads (the storlet
        then runs on the proxy).
    progress : bool, optional
        Show a progress bar; default: when stderr is a terminal.
    dry_run : bool
        Say what would be done; write nothing, run nothing.
    output_type : (str, str) or callable, optional
        ``(suffix, content type)`` of outputs whose type is the storlet's,
        not the source's: e.g. ``('.png', 'image/png')`` names the output
        of ``train/a.jpeg`` ``a.png``, typed ``image/png``; or a callable of
        the source key giving a pair or None (see
        :func:`mlstorlets.client.uri.output_type_for`).  By default what
        the storlet declares (its class's ``output_type``, which
        ``mlstorlets deploy`` records), else the source's.
    objects_per_call : int, optional
        At most this many objects in one call (1: a call per object); by
        default as many as one call can carry, for a storlet that maps
        many.

    Returns
    -------
    BatchSummary
    """
    if concurrency < 1:
        raise UsageError("concurrency must be at least 1")
    swift = gateway(conn)
    declared = swift.check_storlet(storlet, params)
    if output_type is None:
        output_type = declared.output_type
    src_container, src_prefix, entries = list_sources(swift, src)
    tasks = plan(
        src,
        dest,
        entries,
        src_container,
        src_prefix,
        lambda name: output_type_for(output_type, name)[0],
    )
    # The destination is made alike with or without resume.
    existing = existing_outputs(swift, dest, create=not dry_run)
    if not resume:
        existing = {}
    extra_etags = [_etag(swift, path) for path in extra_resources or ()]

    def task_params(task):
        return dict(params or {}, source=task.source)

    def up_to_date(task):
        return task.dest_name in existing and _made_from(swift, task) == (
            task.etag,
            run_digest(storlet, task_params(task), extra_etags),
        )

    def work(task, job):
        try:
            swift.storlet_copy(
                task.container,
                task.name,
                task.dest_container,
                task.dest_name,
                storlet,
                task_params(task),
                extra_resources,
                headers={
                    SOURCE_ETAG_HEADER: task.etag,
                    protocol.OBJECT_META + RUN_KEY: run_digest(
                        storlet, task_params(task), extra_etags
                    ),
                },
                content_type=output_type_for(output_type, task.name)[1],
            )
        except SwiftError as err:
            job.count(len(err.reason))
            raise storlet_error(storlet, err, task.label) from None

    calls = work_many = None
    if declared.many and objects_per_call != 1 and len(tasks) > 1:
        # Which outputs are up to date is asked first, so that a call
        # maps only objects to do.
        fresh = set()
        known = [t for t in tasks if t.dest_name in existing]
        for task, ok in zip(known, swift.parallel(up_to_date, known, concurrency)):
            if ok:
                fresh.add(task.label)
        pending = [t for t in tasks if t.label not in fresh]

        def fresh_output(task):
            return task.label in fresh

        up_to_date = fresh_output
        calls = [[t] for t in tasks if t.label in fresh] + many_calls.plan(
            pending,
            dict(params or {}),
            datagram=swift.limits().datagram,
            header=swift.limits().header,
            metadata_cost=_metadata_cost(swift, pending),
            shared=extra_resources or (),
            content_type_of=lambda task: _content_type(output_type, task),
            max_objects=objects_per_call or many_calls.MAX_OBJECTS,
            # Calls enough for every worker, twice over: no long tail.
            spread=2 * concurrency,
        )

        def call(group):
            return many_calls.run(
                swift,
                storlet,
                group,
                dict(params or {}),
                shared=extra_resources or (),
                headers={protocol.OBJECT_META + RUN_KEY: run_digest(storlet, params, extra_etags)},
                content_type=_content_type(output_type, group[0]),
            )

        def work_many(group, job):
            return many_calls.split(group, call, lambda task: work(task, job), job.checkpoint)

    return execute(
        BatchSummary(storlet),
        tasks,
        work,
        concurrency,
        progress,
        up_to_date,
        dry_run,
        calls=calls,
        work_many=work_many,
    )


def _content_type(output_type, task):
    """The content type of ``task``'s output: the storlet's, else the
    source's."""
    return output_type_for(output_type, task.name)[1] or task.content_type or None


def _metadata_cost(swift, tasks):
    """Datagram bytes assumed for each input's metadata: the first's, read
    with one HEAD, and a margin (a call over budget is split anyway)."""
    if not tasks:
        return 0
    headers = swift.head(tasks[0].container, tasks[0].name) or {}
    return budget.input_cost(user_metadata(headers)) + 64


def existing_outputs(swift, dest, create=True):
    """{name: etag} of the objects already under ``dest``; creates its
    container if there is none (unless ``create`` is false)."""
    container, prefix = parse_uri(dest)
    if swift.head(container) is None:
        if create:
            swift.ensure_container(container)
        return {}
    return {e["name"]: e["hash"] for e in swift.listing(container, prefix)}


def _made_from(swift, task):
    """(source ETag, run digest) an existing output records, or None."""
    headers = swift.head(task.dest_container, task.dest_name) or {}
    return (
        headers.get(SOURCE_ETAG_HEADER.lower()),
        headers.get((protocol.OBJECT_META + RUN_KEY).lower()),
    )


def _etag(swift, path):
    """The ETag of ``/container/object`` (an extra resource)."""
    container, _, name = path.lstrip("/").partition("/")
    headers = swift.head(container, name)
    if headers is None:
        raise NotFound(path, "no such object (extra resource)")
    return headers["etag"]
