"""Running storlets here, over objects of any store.

The storlet module runs in this process (:mod:`mlstorlets.client.local_storlet`):
each source object is streamed from its store into the storlet, whose
output is spooled then streamed to the destination, and a copy streams
from store to store: memory stays bounded whatever the object's size.
Every byte that moves is counted.  Content headers (Content-Type,
Content-Disposition) and user metadata go with the body.
"""

import contextlib
import dataclasses
import hashlib
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor

from mlstorlets.client import batch
from mlstorlets.client.errors import NotFound, StorletFailed
from mlstorlets.client.local_storlet import invoke, load_storlet, stream
from mlstorlets.client.stores.base import SOURCE_ETAG, Counted
from mlstorlets.client.swift import check_parameters
from mlstorlets.client.uri import output_type_for, parse, plan_keys
from mlstorlets.sandbox import protocol

COPY = "copy"


@dataclasses.dataclass
class Task:
    """One object of a batch: ``source`` (an Entry) written to ``dest_key``."""

    source: object
    dest_key: str
    label: str  # the source's URI
    output: str = ""  # the output's URI

    @property
    def size(self):
        return self.source.size


# Inputs of one call read at once.
_READERS = 8
#: Largest member an extraction may write (a frame: the AVI reader's bound).
MAX_MEMBER_BYTES = 32 << 20


class ClientRunner:
    """Runs storlet modules here, over objects of any store.

    Parameters
    ----------
    stores : mlstorlets.client.stores.registry.Stores
    storlets_dir : str, optional
        Where storlet modules are loaded from (default: the project's
        ``storlets/``).

    Attributes
    ----------
    placements : list of str
        ``'client'`` for each call.
    client_bytes : int
        Body bytes of the data the calls read through the client.
    """

    placement = "client"

    def __init__(self, stores, storlets_dir=None):
        self.stores = stores
        self.storlets_dir = storlets_dir
        self.placements = []
        self.client_bytes = 0
        self._extras = {}
        self._lock = threading.Lock()

    # -- names -------------------------------------------------------------
    def locate(self, uri):
        return str(parse(uri))

    def source_name(self, uri):
        """What a storlet is told its source is: its URI."""
        return self.locate(uri)

    def list_objects(self, source):
        """URIs named by ``source``: a URI, a list of URIs, or a prefix
        ending in ``/``; internal names never included."""
        uris = []
        for item in [source] if isinstance(source, str) else source:
            store, uri = self.stores.open(item)
            if uri.key and not uri.is_prefix:
                if store.head(uri.key) is None:
                    raise NotFound(item, "no such object")
                uris.append(store.uri(uri.key))
                continue
            entries = [e for e in store.list(uri.key) if not protocol.is_internal(e.name)]
            if not entries:
                raise NotFound(item, "no objects under this prefix")
            uris.extend(store.uri(e.name) for e in entries)
        return uris

    def known_size(self, uri):
        return None

    def require(self, uri):
        store, parsed = self.stores.open(uri)
        if store.head(parsed.key) is None:
            raise NotFound(str(parsed), "not found")

    def check_storlet(self, storlet, params=None):
        check_parameters(
            storlet, params, getattr(load_storlet(storlet, self.storlets_dir), "parameters", None)
        )

    # -- calls -------------------------------------------------------------
    def plan(self, uris, params, objects_per_call=None, max_group_bytes=None):
        """A call per object: the data is read here anyway."""
        return [[uri] for uri in uris]

    def invoke(self, storlet, uris, params, payload=None, extras=()):
        """Run ``storlet`` over the one object of ``uris``, with ``payload``
        in the parameters and the objects ``extras`` (read once, kept)
        after it; (metadata with lower-case keys, body)."""
        ((uri,),) = (uris,)
        cls = load_storlet(storlet, self.storlets_dir)
        store, parsed = self.stores.open(uri)
        if payload is not None:
            params = dict(params, **protocol.state_parameters(payload))
        reader = store.reader(parsed.key)
        try:
            metadata, body = invoke(
                cls,
                [(reader, reader.metadata or {})] + [self._extra(e) for e in extras],
                params,
                store.uri(parsed.key),
                storlet,
            )
            with self._lock:
                self.client_bytes += reader.bytes_read
        finally:
            reader.close()
        self.placements.append(self.placement)
        return {k.lower(): v for k, v in metadata.items()}, body

    def _extra(self, uri):
        with self._lock:
            if uri not in self._extras:
                store, parsed = self.stores.open(uri)
                self._extras[uri] = store.get(parsed.key)
            return self._extras[uri]

    @contextlib.contextmanager
    def staged(self, payload, params, sources):
        """Parameters giving ``payload`` to every call: here, no datagram
        bounds them."""
        yield dict(params, **protocol.state_parameters(payload)), None

    def describe(self, uris, concurrency=1):
        """{uri: (size, user metadata)} of each object, metadata keys lower
        case as :meth:`ClusterRunner.describe
        <mlstorlets.client.runners.cluster.ClusterRunner.describe>` gives
        them."""

        def head(uri):
            store, parsed = self.stores.open(uri)
            entry = store.head(parsed.key)
            if entry is None:
                raise NotFound(uri, "source object not found")
            metadata = {k.lower(): v for k, v in (entry.metadata or {}).items()}
            return uri, (entry.size, metadata)

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return dict(pool.map(head, uris))

    def limits(self):
        """None: a call here reads its inputs from memory, bounded by no
        datagram or header."""
        return None

    def ensure_location(self, uri):
        """Nothing: a store's write makes its folders."""

    def put(self, uri, body, content_type):
        """Write ``body`` as ``uri``."""
        store, parsed = self.stores.open(uri)
        store.put(parsed.key, body, {}, {"Content-Type": content_type})

    def produce(self, storlet, uris, dest, params, metadata=None, content_type=None):
        """Write ``dest`` as ``storlet``'s output over ``uris`` (read here,
        in order), whole or not at all; see :meth:`ClusterRunner.produce
        <mlstorlets.client.runners.cluster.ClusterRunner.produce>`."""
        cls = load_storlet(storlet, self.storlets_dir)

        def read(uri):
            store, parsed = self.stores.open(uri)
            return store.get(parsed.key)

        with ThreadPoolExecutor(max_workers=_READERS) as pool:
            inputs = list(pool.map(read, uris))
        with self._lock:
            self.client_bytes += sum(len(body) for body, _ in inputs)
        out_metadata, body, _ = stream(cls, inputs, params, str(uris[0]), storlet)
        with body:
            store, parsed = self.stores.open(dest)
            store.write(
                parsed.key,
                body,
                dict(out_metadata, **(metadata or {})),
                {"Content-Type": content_type} if content_type else None,
            )
        self.placements.append(self.placement)

    def extract_limit(self):
        """None: here, :meth:`extract` is bounded only by what it is asked."""
        return None

    def extract(self, storlet, src, dest_prefix, params, max_members):
        """Write the members of the tar ``storlet`` outputs over ``src`` as
        objects under ``dest_prefix``, with the metadata of their pax
        headers, as Swift's bulk extraction does; returns how many.
        Members past ``max_members``, or larger than
        :data:`MAX_MEMBER_BYTES`, fail the call."""
        cls = load_storlet(storlet, self.storlets_dir)
        store, parsed = self.stores.open(src)
        reader = store.reader(parsed.key)
        try:
            _, body, _ = stream(
                cls, [(reader, reader.metadata or {})], params, str(parsed), storlet
            )
            with self._lock:
                self.client_bytes += reader.bytes_read
        finally:
            reader.close()
        with body:
            created = _write_members(body, self.stores, parse(dest_prefix), max_members, src)
        self.placements.append(self.placement)
        return created

    def delete(self, uris, concurrency=1):
        """Remove ``uris``; a missing one is not an error."""

        def remove(uri):
            store, parsed = self.stores.open(uri)
            store.delete(parsed.key)

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            list(pool.map(remove, uris))

    # -- batches -----------------------------------------------------------
    def run_storlet(
        self,
        storlet,
        src,
        dest,
        params=None,
        concurrency=4,
        resume=True,
        *,
        extra_resources=None,
        extras=(),
        progress=None,
        dry_run=False,
        output_type=None,
        storlets_dir=None,
    ):
        """A storlet over every object of ``src`` into ``dest``, run here;
        see :meth:`ClusterRunner.run_storlet
        <mlstorlets.client.runners.cluster.ClusterRunner.run_storlet>`."""
        cls = load_storlet(storlet, storlets_dir or self.storlets_dir)
        check_parameters(storlet, params, getattr(cls, "parameters", None))
        if output_type is None:
            output_type = getattr(cls, "output_type", None)
        extras = [
            self._extra("swift://%s" % path.lstrip("/")) for path in extra_resources or ()
        ] + [self._extra(uri) for uri in extras]
        src = parse(src)
        src_store, _ = self.stores.open(src)

        def transform(entry, source, body):
            inputs = [(body, source.metadata)] + extras
            # The same parameter the cluster gives: where the source is.
            task_params = dict(params or {}, source=src_store.uri(entry.name))
            out_metadata, body, length = stream(
                cls, inputs, task_params, src_store.uri(entry.name), storlet
            )
            # In the cluster, the output keeps its source's metadata under
            # what the storlet sets (mlstorlets.server.middleware.storlet_copy).
            return body, dict(source.metadata, **out_metadata), length

        run = batch.run_digest(
            storlet, params, [hashlib.md5(data).hexdigest() for data, _ in extras]
        )
        return self._stream(
            storlet,
            src,
            parse(dest),
            transform,
            concurrency,
            resume,
            progress,
            dry_run,
            same_content_is_done=False,
            run=run,
            output_type=output_type,
        )

    def copy(self, src, dest, concurrency=4, resume=True, *, progress=None, dry_run=False):
        """Every object of ``src`` streamed to ``dest`` through here.

        An output records its source's hash (``Source-Etag``), but for a
        local file copied to S3, or to Swift in one ``PUT``, whose upload
        starts without the file read before: a later run compares the
        object's ETag with the one the file's upload gets
        (:meth:`S3Store.upload_etag
        <mlstorlets.client.stores.s3.S3Store.upload_etag>`,
        :meth:`SwiftStore.upload_etag
        <mlstorlets.client.stores.swift.SwiftStore.upload_etag>`: the
        file's MD5, computed only when the object exists).  Swift's copy is
        checked as it is made: the file's MD5, computed as it is sent, must
        be the ETag Swift answers, and the file must not change meanwhile;
        else the object is removed and the copy fails.
        """
        return self._stream(
            COPY,
            parse(src),
            parse(dest),
            lambda entry, source, body: (body, dict(source.metadata), source.entry.size),
            concurrency,
            resume,
            progress,
            dry_run,
            same_content_is_done=True,
        )

    def _stream(
        self,
        label,
        src,
        dest,
        transform,
        concurrency,
        resume,
        progress,
        dry_run,
        same_content_is_done,
        run=None,
        output_type=None,
    ):
        """Stream every source object through ``transform(entry, reader,
        body) -> (body file, metadata, size)`` to its destination; ``body``
        reads ``reader`` counting the bytes."""
        src_store, _ = self.stores.open(src)
        dest_store, _ = self.stores.open(dest)
        tasks = tasks_of(src_store, src, dest, lambda name: output_type_for(output_type, name)[0])
        if dest_store.scheme == "s3":
            dest_store.check()  # outputs can be written: the bucket exists
        if not tasks:
            raise NotFound(src, "no objects under this prefix")
        if dest_store.scheme == "swift" and not dry_run:
            dest_store.ensure_container()
        found = existing(dest_store, dest) if resume else {}
        kinds_match = src_store.etag_kind == dest_store.etag_kind

        def by_upload_etag(task):
            # A local file copied to S3, or to Swift in one PUT: the
            # object's ETag, which the file's bytes tell, is the copy's
            # identity.  Metadata goes with the first byte (S3 takes it only
            # before the first part, Swift in the PUT's headers), so a
            # Source-Etag would have the file read whole before its first
            # byte is sent (2 s a GiB).
            return (
                same_content_is_done
                and task.source.path is not None
                and dest_store.etag_is_upload_of(task.source.size)
            )

        def up_to_date(task):
            entry = found.get(task.dest_key)
            if entry is None:
                return False
            if by_upload_etag(task):
                if entry.etag and entry.etag == dest_store.upload_etag(task.source):
                    return True
            elif (
                same_content_is_done
                and kinds_match
                and entry.etag
                and entry.etag == task.source.etag
            ):
                return True
            if entry.metadata is None:
                entry = dest_store.head(task.dest_key)
            # The source is hashed only for an output that records a hash:
            # a local file's copy to S3, or to Swift in one PUT, records
            # none, unless an older one.
            recorded = entry.metadata.get(SOURCE_ETAG) if entry is not None else None
            return (
                recorded is not None
                and recorded == task.source.etag
                and (run is None or entry.metadata.get(batch.RUN_KEY) == run)
            )

        def work(task, job):
            with contextlib.ExitStack() as stack:
                source = stack.enter_context(src_store.reader(task.source.name))
                # Every byte downloaded, then every byte of an output
                # uploaded (a failed upload moved bytes too); a copy's
                # bytes count once.
                downloaded = Counted(source, job.read)
                body, out_metadata, size = transform(task.source, source, downloaded)
                stack.enter_context(contextlib.closing(body))
                if by_upload_etag(task):
                    # Nor the one the file's own record carries over.
                    out_metadata.pop(SOURCE_ETAG, None)
                else:
                    out_metadata[SOURCE_ETAG] = task.source.etag
                if run is not None:
                    out_metadata[batch.RUN_KEY] = run
                job.checkpoint()
                headers = source.headers
                content_type = output_type_for(output_type, task.source.name)[1]
                if content_type:
                    headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
                    headers["Content-Type"] = content_type
                upload = body if body is downloaded else Counted(body, job.count)
                dest_store.write(task.dest_key, upload, out_metadata, headers, size)

        return batch.execute(
            batch.BatchSummary(label, placement=self.placement),
            tasks,
            work,
            concurrency,
            progress,
            up_to_date,
            dry_run,
        )


def tasks_of(src_store, src, dest, suffix=None):
    """The tasks of a job: every listed source and its output's key."""
    if src.is_prefix:
        entries = src_store.list(src.key)
    else:
        entry = src_store.head(src.key)
        if entry is None:
            raise NotFound(
                src, "no such object (to name every object under a prefix, end it with /)"
            )
        entries = [entry]
    pairs = plan_keys(src, dest, [e.name for e in entries], suffix)
    return [
        Task(entry, key, src_store.uri(entry.name), str(dest.with_key(key)))
        for entry, (_, key) in zip(entries, pairs)
    ]


def existing(store, dest):
    """{key: Entry} of the outputs already under ``dest``."""
    if not dest.is_prefix:
        entry = store.head(dest.key)
        return {entry.name: entry} if entry else {}
    try:
        return {e.name: e for e in store.list(dest.key)}
    except NotFound:
        # A folder not made yet: put makes it.
        return {}


def _write_members(body, stores, prefix, max_members, src):
    """Store each regular member of the tar ``body`` as ``prefix`` + its
    name, with user metadata from its ``SCHILY.xattr.user.meta.*`` pax
    headers and its type from ``SCHILY.xattr.user.mime_type``; bounded in
    members and in bytes a member."""
    store, _ = stores.open(prefix)
    created = 0
    try:
        with tarfile.open(fileobj=body, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name
                if created >= max_members or member.size > MAX_MEMBER_BYTES:
                    raise StorletFailed(
                        src,
                        "the extraction's tar holds over %d members, or %s is over %d bytes"
                        % (max_members, name, MAX_MEMBER_BYTES),
                    )
                if name.startswith("/") or ".." in name.split("/") or protocol.is_internal(name):
                    raise StorletFailed(src, "the extraction's tar names %r" % name)
                headers = member.pax_headers
                metadata = {
                    k[len(protocol.PAX_META) :]: v
                    for k, v in headers.items()
                    if k.startswith(protocol.PAX_META)
                }
                content_type = headers.get(protocol.PAX_TYPE) or "application/octet-stream"
                data = tar.extractfile(member).read(member.size)
                store.put(prefix.key + name, data, metadata, {"Content-Type": content_type})
                created += 1
    except tarfile.TarError as err:
        raise StorletFailed(src, "the extraction's tar is unreadable: %s" % err) from None
    return created
