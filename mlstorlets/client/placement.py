"""Run a storlet, or copy, wherever the data is: in place when possible.

* When source and destination are both in the cluster (``swift://``, or
  ``s3://`` through the cluster's own S3 API), the storlet runs in place,
  next to the data, with copy semantics (:func:`mlstorlets.client.batch.run_batch`)
  and a copy is a server-side copy: no data passes through the client.
* Otherwise the same storlet module runs here (:mod:`mlstorlets.client.local_storlet`):
  each source object is streamed from its store into the storlet, whose
  output is spooled then streamed to the destination, and a copy streams
  from store to store: memory stays bounded whatever the object's size.
  Every byte that moves is counted.  Content headers (Content-Type,
  Content-Disposition) and user metadata go with the body.

Either way every output records its source's hash (metadata
``Source-Etag``), so that a second run skips what is up to date and does
the rest: a failure (a refusal, a broken connection) is per object, never
leaves a partial output, and is listed in the summary with its reason.
"""

import contextlib
import dataclasses
import hashlib

from mlstorlets.client.batch import RUN_KEY, BatchSummary, execute, run_batch, run_digest
from mlstorlets.client.local_storlet import load_storlet, stream
from mlstorlets.client.stores.base import SOURCE_ETAG, Counted, NotFound
from mlstorlets.client.stores.registry import Stores
from mlstorlets.client.swift import check_parameters
from mlstorlets.client.uri import output_type_for, parse, plan_keys

COPY = 'copy'


@dataclasses.dataclass
class _Task:
    source: object  # Entry
    dest_key: str
    label: str  # the source's URI

    @property
    def size(self):
        return self.source.size


def run_anywhere(storlet, src, dest, params=None, concurrency=4, resume=True,
                 *, stores=None, storlets_dir=None, extra_resources=None,
                 progress=None, dry_run=False, output_type=None):
    """Run ``storlet`` over every object named by ``src`` into ``dest``.

    Parameters
    ----------
    storlet : str
        The storlet module, e.g. ``'extract_face.py'``: deployed in the
        cluster, and in ``storlets_dir`` for the client.
    src, dest : str
        URIs of any store (see :mod:`mlstorlets.client.uri`); a prefix names every
        object under it.
    params : dict, optional
        Storlet parameters; the source's name is always passed as
        ``source``.
    concurrency : int
        Objects in flight at once.
    resume : bool
        Skip sources whose output exists for the same source content.
    stores : Stores, optional
        The connectors (default: from the environment).
    storlets_dir : str, optional
        Where the storlet module is loaded from when it runs on the client
        (default: the project's ``storlets/``).
    extra_resources : list of str, optional
        ``/container/object`` paths in the cluster that every invocation
        also reads.
    progress : bool, optional
        Show a progress bar; default: when stderr is a terminal.
    dry_run : bool
        Say what would be done, and where; do nothing.
    output_type : (str, str) or callable, optional
        ``(suffix, content type)`` of the outputs, or a callable of the
        source key giving it; see
        :func:`mlstorlets.client.batch.run_batch`.

    Returns
    -------
    mlstorlets.client.batch.BatchSummary
        With ``placement`` ``'cluster'`` or ``'client'``.

    Raises
    ------
    ValueError
        A bad URI, a destination naming one object for several sources, or
        a parameter the storlet does not declare.
    StoreError
        A store cannot be reached or refused the credentials, the source or
        the destination bucket does not exist; the message names the URI.
    """
    if concurrency < 1:
        raise ValueError('concurrency must be at least 1')
    stores = stores or Stores()
    src, dest = parse(src), parse(dest)
    if stores.in_cluster(src) and stores.in_cluster(dest):
        summary = run_batch(stores.swift_connection(), storlet,
                            str(stores.as_swift(src)),
                            str(stores.as_swift(dest)), params=params,
                            concurrency=concurrency, resume=resume,
                            extra_resources=extra_resources,
                            progress=progress, dry_run=dry_run,
                            output_type=output_type)
        summary.placement = 'cluster'
        return summary

    cls = load_storlet(storlet, storlets_dir)
    check_parameters(storlet, params, getattr(cls, 'parameters', None))
    extras = _extra_inputs(stores, extra_resources)
    src_store, _ = stores.open(src)

    def transform(entry, source, body):
        inputs = [(body, source.metadata)] + extras
        # The same parameter the batch runner gives: where the source is.
        task_params = dict(params or {}, source=src_store.uri(entry.name))
        out_metadata, body, length = stream(cls, inputs, task_params,
                                            src_store.uri(entry.name),
                                            storlet)
        # In the cluster, the output keeps its source's metadata under what
        # the storlet sets (see mlstorlets.server.middleware.storlet_copy).
        return body, dict(source.metadata, **out_metadata), length

    run = run_digest(storlet, params,
                     [hashlib.md5(data).hexdigest() for data, _ in extras])
    return _on_client(storlet, stores, src, dest, transform, concurrency,
                      resume, progress, dry_run, same_content_is_done=False,
                      run=run, output_type=output_type)


def copy(src, dest, concurrency=4, resume=True, *, stores=None,
         progress=None, dry_run=False):
    """Copy every object named by ``src`` to ``dest``, between any stores.

    Within the cluster the copy is server-side; otherwise the data goes
    through the client.  The outputs keep their sources' metadata and
    record their hashes.

    Parameters
    ----------
    src, dest : str
        URIs of any store; a prefix copies every object under it.
    concurrency : int
    resume : bool
        Skip outputs that exist with the same content: same hash when the
        two stores use the same kind of hash, or made from this source's
        content (``Source-Etag``).
    stores : Stores, optional
    progress : bool, optional
    dry_run : bool
        Say what would be copied; copy nothing.

    Returns
    -------
    mlstorlets.client.batch.BatchSummary
        ``storlet`` is ``'copy'``.
    """
    if concurrency < 1:
        raise ValueError('concurrency must be at least 1')
    stores = stores or Stores()
    src, dest = parse(src), parse(dest)
    if stores.in_cluster(src) and stores.in_cluster(dest):
        return _in_cluster_copy(stores, stores.as_swift(src),
                                stores.as_swift(dest), concurrency, resume,
                                progress, dry_run)
    return _on_client(COPY, stores, src, dest,
                      lambda entry, source, body: (
                          body, dict(source.metadata), source.entry.size),
                      concurrency, resume, progress, dry_run,
                      same_content_is_done=True)


def _on_client(label, stores, src, dest, transform, concurrency, resume,
               progress, dry_run, same_content_is_done, run=None,
               output_type=None):
    """Stream every source object through ``transform(entry, reader,
    body) -> (body file, metadata, size)`` to its destination; ``body``
    reads ``reader`` counting the bytes."""
    src_store, dest_store, tasks, existing = _open(
        stores, src, dest, resume, dry_run,
        lambda name: output_type_for(output_type, name)[0])
    kinds_match = src_store.etag_kind == dest_store.etag_kind

    def up_to_date(task):
        found = existing.get(task.dest_key)
        if found is None:
            return False
        if same_content_is_done and kinds_match and found.etag and \
                found.etag == task.source.etag:
            return True
        if found.metadata is None:
            found = dest_store.head(task.dest_key)
        return found is not None and \
            found.metadata.get(SOURCE_ETAG) == task.source.etag and \
            (run is None or found.metadata.get(RUN_KEY) == run)

    def work(task, job):
        with contextlib.ExitStack() as stack:
            source = stack.enter_context(src_store.reader(task.source.name))
            # Every byte downloaded, then every byte uploaded (a failed
            # upload moved bytes too).
            body, out_metadata, size = transform(
                task.source, source, Counted(source, job.count))
            stack.enter_context(contextlib.closing(body))
            out_metadata[SOURCE_ETAG] = task.source.etag
            if run is not None:
                out_metadata[RUN_KEY] = run
            job.checkpoint()
            headers = source.headers
            content_type = output_type_for(output_type, task.source.name)[1]
            if content_type:
                headers = {k: v for k, v in headers.items()
                           if k.lower() != 'content-type'}
                headers['Content-Type'] = content_type
            dest_store.write(task.dest_key, Counted(body, job.count),
                             out_metadata, headers, size)

    return execute(BatchSummary(label, placement='client'), tasks, work,
                   concurrency, progress, up_to_date, dry_run)


def _in_cluster_copy(stores, src, dest, concurrency, resume, progress,
                     dry_run):
    """A server-side copy of every source object (no data moves)."""
    src_store, dest_store, tasks, existing = _open(stores, src, dest,
                                                   resume, dry_run)

    def up_to_date(task):
        found = existing.get(task.dest_key)
        return found is not None and found.etag == task.source.etag

    def work(task, job):
        dest_store.copy_from(src.location, task.source.name, task.dest_key,
                             {SOURCE_ETAG: task.source.etag})

    return execute(BatchSummary(COPY, placement='cluster'), tasks, work,
                   concurrency, progress, up_to_date, dry_run)


def _open(stores, src, dest, resume, dry_run=False, suffix=None):
    """The two stores, the tasks, and the outputs already there (for a
    resume) of a job from ``src`` to ``dest``."""
    src_store, _ = stores.open(src)
    dest_store, _ = stores.open(dest)
    tasks = _plan(src_store, src, dest, suffix)
    if dest_store.scheme == 's3':
        dest_store.check()  # outputs can be written: the bucket exists
    if not tasks:
        raise NotFound(src, 'no objects under this prefix')
    if dest_store.scheme == 'swift' and not dry_run:
        dest_store.ensure_container()  # as run_batch and swift upload do
    return src_store, dest_store, tasks, (
        _existing(dest_store, dest) if resume else {})


def _plan(src_store, src, dest, suffix=None):
    """The tasks of a job: every listed source and its output's key."""
    if src.is_prefix:
        entries = src_store.list(src.key)
    else:
        entry = src_store.head(src.key)
        if entry is None:
            raise NotFound(src, 'no such object (to name every object '
                           'under a prefix, end it with /)')
        entries = [entry]
    pairs = plan_keys(src, dest, [e.name for e in entries], suffix)
    return [_Task(entry, key, src_store.uri(entry.name))
            for entry, (_, key) in zip(entries, pairs)]


def _existing(store, dest):
    """{key: Entry} of the outputs already under ``dest``."""
    if not dest.is_prefix:
        entry = store.head(dest.key)
        return {entry.name: entry} if entry else {}
    try:
        return {e.name: e for e in store.list(dest.key)}
    except NotFound:
        # A folder not made yet: put makes it.
        return {}


def _extra_inputs(stores, extra_resources):
    """(body, metadata) of each ``/container/object`` extra resource."""
    inputs = []
    for path in extra_resources or ():
        container, _, name = path.lstrip('/').partition('/')
        store, uri = stores.open('swift://%s/%s' % (container, name))
        inputs.append(store.get(uri.key))
    return inputs

