"""Run a storlet, or copy, wherever the data is: in place when possible.

* When source and destination are both in the cluster (``swift://``, or
  ``s3://`` through the cluster's own S3 API), the storlet runs in place,
  next to the data, with copy semantics, and a copy is a server-side copy:
  no data passes through the client
  (:class:`~mlstorlets.client.runners.cluster.ClusterRunner`).
* Otherwise the same storlet module runs here, each object streamed from
  its store into the storlet and its output to the destination
  (:class:`~mlstorlets.client.runners.client.ClientRunner`).

Which of the two is chosen once, by
:func:`mlstorlets.client.runners.runner_for`.

Either way every output records its source's hash (metadata
``Source-Etag``; a local file copied to S3, or to Swift in one ``PUT``,
is known by its ETag instead, see
:meth:`~mlstorlets.client.stores.s3.S3Store.upload_etag` and
:meth:`~mlstorlets.client.stores.swift.SwiftStore.upload_etag`), so that a
second run skips what is up to date and does the rest: a failure (a
refusal, a broken connection) is per object, never leaves a partial output,
and is listed in the summary with its reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from mlstorlets.client.batch import BatchSummary
from mlstorlets.client.errors import UsageError
from mlstorlets.client.runners import runner_for
from mlstorlets.client.stores.registry import Stores


def run_anywhere(
    storlet: str,
    src: str,
    dest: str,
    params: Mapping[str, object] | None = None,
    concurrency: int = 4,
    resume: bool = True,
    *,
    stores: Stores | None = None,
    storlets_dir: str | None = None,
    extra_resources: Sequence[str] | None = None,
    progress: bool | None = None,
    dry_run: bool = False,
    output_type: tuple[str, str] | Callable | None = None,
    placement: str = "auto",
) -> BatchSummary:
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
    placement : {'auto', 'client', 'cluster'}, default='auto'
        Where to run: see :func:`mlstorlets.client.runners.runner_for`.

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
    _check_concurrency(concurrency)
    runner = runner_for(src, dest, stores=stores, placement=placement)
    return runner.run_storlet(
        storlet,
        src,
        dest,
        params,
        concurrency,
        resume,
        extra_resources=extra_resources,
        progress=progress,
        dry_run=dry_run,
        output_type=output_type,
        storlets_dir=storlets_dir,
    )


def copy(
    src: str,
    dest: str,
    concurrency: int = 4,
    resume: bool = True,
    *,
    stores: Stores | None = None,
    progress: bool | None = None,
    dry_run: bool = False,
    placement: str = "auto",
) -> BatchSummary:
    """Copy every object named by ``src`` to ``dest``, between any stores.

    Within the cluster the copy is server-side; otherwise the data goes
    through the client.  The outputs keep their sources' metadata and
    record their hashes (``Source-Etag``), but for a local file copied to
    S3, or to Swift in one ``PUT``: that would need the file read whole
    before its upload starts.  Swift's copy of a local file is checked
    instead as it is made (the file's MD5, computed as it is sent, against
    the ETag Swift answers; the file unchanged meanwhile): a copy that
    fails a check is removed.

    Parameters
    ----------
    src, dest : str
        URIs of any store; a prefix copies every object under it.
    concurrency : int
    resume : bool
        Skip outputs that exist with the same content: same hash when the
        two stores use the same kind of hash (for a local file to S3 or
        Swift, the ETag its upload gets), or made from this source's content
        (``Source-Etag``).
    stores : Stores, optional
    progress : bool, optional
    dry_run : bool
        Say what would be copied; copy nothing.
    placement : {'auto', 'client', 'cluster'}, default='auto'
        See :func:`mlstorlets.client.runners.runner_for`.

    Returns
    -------
    mlstorlets.client.batch.BatchSummary
        ``storlet`` is ``'copy'``.
    """
    _check_concurrency(concurrency)
    return runner_for(src, dest, stores=stores, placement=placement).copy(
        src, dest, concurrency, resume, progress=progress, dry_run=dry_run
    )


def _check_concurrency(concurrency):
    if concurrency < 1:
        raise UsageError("concurrency must be at least 1")
