"""Run a storlet over every object of a set, with copy semantics.

For each source object ``A`` under ``src`` the runner asks the cluster to
make ``B`` (under ``dest``) the storlet's output over ``A``: a ``PUT`` of
``B`` with ``X-Copy-From: A`` and ``X-Run-Storlet``.  The data never passes
through the client; only requests, answers and (for listings) names do.

* Concurrency is bounded: ``concurrency`` requests in flight, each worker
  thread with its own connection (a swiftclient ``Connection`` is not
  thread-safe), sharing one token.
* It resumes: every output records its source's ETag
  (``X-Object-Meta-Source-Etag``), and an output that already exists for the
  same source content is skipped.
* A failure is per object: the summary lists each with the server's reason,
  and the other objects go on.
"""

import dataclasses
import hashlib
import json
import threading
import time
from urllib.parse import quote
from concurrent.futures import ThreadPoolExecutor, as_completed

from swiftclient.client import Connection
from swiftclient.exceptions import ClientException

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.client.uri import parse_uri, plan_keys

SOURCE_ETAG = 'X-Object-Meta-Source-Etag'
# What made an output besides its source: the storlet, its parameters and
# the content of its other inputs (a model, say).  An output is up to date
# only if both match.
RUN_KEY = 'Mlstorlets-Run'
# Objects the project keeps for itself inside user containers.
INTERNAL_PREFIX = '.mlstorlets'
# Failures a summary prints one by one; the rest are counted.
MAX_LISTED = 20


@dataclasses.dataclass
class Task:
    """One invocation: the storlet over ``source``, written to ``dest``."""

    container: str
    name: str
    etag: str
    size: int
    dest_container: str
    dest_name: str

    @property
    def source(self):
        return '%s/%s' % (self.container, self.name)

    @property
    def dest(self):
        return '%s/%s' % (self.dest_container, self.dest_name)


@dataclasses.dataclass
class BatchSummary:
    """What a batch did.

    ``placement`` says where the work ran: ``'cluster'`` (next to the data,
    with copy semantics) or ``'client'`` (downloaded, computed and uploaded
    by this process, see :mod:`mlstorlets.client.placement`).  ``client_bytes``
    counts the body bytes that went through the client: in the cluster,
    only the error messages of the storlet requests; on the client, every
    byte downloaded and uploaded.  ``source_bytes`` is the data the work
    read.
    """

    storlet: str
    done: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    failed: list = dataclasses.field(default_factory=list)
    client_bytes: int = 0
    source_bytes: int = 0
    seconds: float = 0.0
    placement: str = 'cluster'

    @property
    def ok(self):
        return not self.failed

    def format(self):
        where = 'in the cluster' if self.placement == 'cluster' \
            else 'on the client'
        lines = ['%s: %d done, %d skipped, %d failed in %.1f s %s; %d bytes '
                 'through the client for %d bytes of data'
                 % (self.storlet, len(self.done), len(self.skipped),
                    len(self.failed), self.seconds, where, self.client_bytes,
                    self.source_bytes)]
        for name, reason in self.failed[:MAX_LISTED]:
            lines.append('  failed %s: %s' % (name, reason))
        if len(self.failed) > MAX_LISTED:
            lines.append('  ... and %d more failures'
                         % (len(self.failed) - MAX_LISTED))
        return '\n'.join(lines)


def list_objects(conn, uri):
    """(container, prefix, entries) of every object named by ``uri``.

    ``swift://c/o`` names one object; ``swift://c/p/`` or ``swift://c`` all
    the objects whose names start with the prefix.  Entries are listing
    dicts (name, hash, bytes, content_type).
    """
    container, prefix = parse_uri(uri)
    if prefix and not prefix.endswith('/'):
        try:
            headers = conn.head_object(container, prefix)
        except ClientException as err:
            if err.http_status == 404:
                raise ObjectError(uri, 'no such object (to name every '
                                  'object under a prefix, end it with /)')
            raise
        return container, prefix, [{
            'name': prefix, 'hash': headers['etag'],
            'bytes': int(headers['content-length']),
            'content_type': headers.get('content-type', '')}]
    try:
        _, listing = conn.get_container(container, prefix=prefix or None,
                                        full_listing=True)
    except ClientException as err:
        if err.http_status == 404:
            raise ObjectError(uri, 'no such container') from None
        raise
    return container, prefix, [e for e in listing
                                if not e['name'].startswith(INTERNAL_PREFIX)]


def plan(src, dest, entries, src_container, src_prefix):
    """The tasks that make ``dest`` from the listed ``entries`` of ``src``.

    A prefix ``dest`` (ending in ``/``, or a bare container) receives each
    source under its name relative to the source prefix; a ``dest`` naming
    one object is allowed only for one source.
    """
    dest_container, _ = parse_uri(dest)
    pairs = plan_keys(src, dest, [e['name'] for e in entries])
    return [Task(src_container, entry['name'], entry['hash'], entry['bytes'],
                 dest_container, name)
            for entry, (_, name) in zip(entries, pairs)]


def run_digest(storlet, params=None, extra_etags=()):
    """A short digest of everything but the source that made an output."""
    params = {k: str(v) for k, v in (params or {}).items() if k != 'source'}
    text = json.dumps([storlet, sorted(params.items()), list(extra_etags)])
    return hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]


def storlet_headers(storlet, params=None, extra_resources=None):
    """Request headers that run ``storlet`` with ``params``."""
    headers = {'X-Run-Storlet': storlet}
    for i, (key, value) in enumerate(sorted((params or {}).items()), 1):
        headers['X-Storlet-Parameter-%d' % i] = '%s:%s' % (key, value)
    if extra_resources:
        headers['X-Storlet-Extra-Resources'] = ','.join(extra_resources)
    return headers


def error_reason(err):
    """The server's reason for a failed request, in one line."""
    body = err.http_response_content or b''
    if isinstance(body, bytes):
        body = body.decode('utf-8', 'replace')
    body = ' '.join(body.split())
    if err.http_status:
        return '%s %s' % (err.http_status, body or err.http_reason)
    return str(err)


def clone_connection(conn):
    """A connection like ``conn`` that shares its token.

    swiftclient connections are not thread-safe: each worker thread of a
    batch uses its own clone.
    """
    url, token = (conn.url, conn.token) if conn.url and conn.token else \
        conn.get_auth()
    return Connection(authurl=conn.authurl, user=conn.user, key=conn.key,
                      auth_version=conn.auth_version,
                      os_options=conn.os_options, preauthurl=url,
                      preauthtoken=token, retries=1, insecure=conn.insecure,
                      timeout=conn.timeout)


class _Connections(threading.local):
    """One clone of a connection per thread."""

    def __init__(self, conn):
        self.parent = conn

    def get(self):
        conn = getattr(self, 'conn', None)
        if conn is None:
            conn = self.conn = clone_connection(self.parent)
        return conn


def parallel(conn, fn, items, concurrency):
    """``[fn(connection, item) for item in items]``, ``concurrency`` at a
    time, each thread with its own clone of ``conn``."""
    if concurrency < 1:
        raise ValueError('concurrency must be at least 1')
    connections = _Connections(conn)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(lambda item: fn(connections.get(), item),
                             items))


def run_batch(conn, storlet, src, dest, params=None, concurrency=4,
              resume=True, extra_resources=None, progress=None,
              per_object_params=None):
    """Run ``storlet`` over every object named by ``src`` into ``dest``.

    Parameters
    ----------
    conn : swiftclient.client.Connection
    storlet : str
        The storlet object's name, e.g. ``'extract_face.py'``.
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
    per_object_params : callable, optional
        ``task -> dict`` of parameters particular to one source.

    Returns
    -------
    BatchSummary
    """
    if concurrency < 1:
        raise ValueError('concurrency must be at least 1')
    started = time.monotonic()
    summary = BatchSummary(storlet)
    src_container, src_prefix, entries = list_objects(conn, src)
    tasks = plan(src, dest, entries, src_container, src_prefix)
    summary.source_bytes = sum(t.size for t in tasks)
    existing = _existing_outputs(conn, dest)
    if not resume:
        existing = {}
    extra_etags = [_etag(conn, path) for path in extra_resources or ()]
    connections = _Connections(conn)
    lock = threading.Lock()

    def invoke(task):
        task_params = dict(params or {}, source=task.source)
        if per_object_params:
            task_params.update(per_object_params(task))
        run = run_digest(storlet, task_params, extra_etags)
        if task.dest_name in existing and _made_from(
                connections.get(), task) == (task.etag, run):
            return task.source, 'skipped', None
        headers = storlet_headers(storlet, task_params, extra_resources)
        # The proxy unquotes it: a name with % or ? must be quoted.
        headers['X-Copy-From'] = quote('/%s/%s' % (task.container,
                                                   task.name))
        headers[SOURCE_ETAG] = task.etag
        headers['X-Object-Meta-' + RUN_KEY] = run
        try:
            connections.get().put_object(
                task.dest_container, task.dest_name, b'', headers=headers)
        except ClientException as err:
            with lock:
                summary.client_bytes += len(err.http_response_content or b'')
            return task.source, 'failed', error_reason(err)
        return task.source, 'done', None

    record(summary, tasks, invoke, concurrency, progress)
    summary.seconds = time.monotonic() - started
    return summary


def record(summary, tasks, work, concurrency, progress=None):
    """Run ``work(task) -> (name, status, reason)`` over ``tasks``, at most
    ``concurrency`` at a time, with a progress bar, into ``summary``.

    ``status`` is ``'done'``, ``'skipped'`` or ``'failed'`` (with the
    reason); the lists come out sorted by name.
    """
    bar = _progress(len(tasks), summary.storlet, progress)
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for future in as_completed([pool.submit(work, t)
                                        for t in tasks]):
                name, status, reason = future.result()
                if status == 'failed':
                    summary.failed.append((name, reason))
                else:
                    getattr(summary, status).append(name)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    summary.done.sort()
    summary.skipped.sort()
    summary.failed.sort()


def _existing_outputs(conn, dest):
    """{name: etag} of the objects already under ``dest``; creates its
    container if there is none."""
    container, prefix = parse_uri(dest)
    try:
        _, listing = conn.get_container(container, prefix=prefix or None,
                                        full_listing=True)
    except ClientException as err:
        if err.http_status != 404:
            raise
        conn.put_container(container)
        return {}
    return {e['name']: e['hash'] for e in listing}


def _made_from(conn, task):
    """(source ETag, run digest) an existing output records, or None."""
    try:
        headers = conn.head_object(task.dest_container, task.dest_name)
    except ClientException:
        return None
    return (headers.get(SOURCE_ETAG.lower()),
            headers.get('x-object-meta-' + RUN_KEY.lower()))


def _etag(conn, path):
    """The ETag of ``/container/object`` (an extra resource)."""
    container, _, name = path.lstrip('/').partition('/')
    try:
        return conn.head_object(container, name)['etag']
    except ClientException as err:
        if err.http_status == 404:
            raise ObjectError(path, 'no such object (extra resource)')
        raise


def _progress(total, label, enabled):
    import sys
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=label, unit='obj', file=sys.stderr)
