"""What every store connector offers.

A connector is bound to one location (a container, a bucket, a file system,
a Dropbox account) and names objects by keys inside it.  It streams
objects: ``reader`` opens a body as a file-like :class:`Reader` (with the
object's metadata), ``write`` consumes one in chunks and either stores the
whole object or nothing, so that a job that fails half-way never leaves a
partial output behind, and memory stays bounded whatever the object's size.
``get`` and ``put`` are the same over bytes in memory.

Besides user metadata, an object carries the content headers of
:data:`CONTENT_HEADERS` (``Content-Type``, ``Content-Disposition``) where
its store can keep them (Swift and S3 natively, local files and Dropbox in
the sidecar).

User metadata is a dict of str to str whose keys are spelled the way Swift
spells them (``'Source-Etag'``, ``str.title`` of the key): that is how a
storlet sees the metadata of its input in the cluster, so a storlet running
on the client sees the same.
"""

import dataclasses
import io
import os
import queue
import threading

from mlstorlets.client.errors import StoreError
from mlstorlets.sandbox import protocol

# Names the project keeps for itself (sidecars, temporary state): one rule
# for every store and the Swift gateway.
from mlstorlets.sandbox.protocol import INTERNAL_PREFIX, is_internal  # noqa: F401

# The user metadata key every output records its source's hash in: an output
# whose Source-Etag matches its source is up to date (resume, skip).  A local
# file's copy to S3, or to Swift in one PUT, records none: its ETag tells
# (S3Store.upload_etag, SwiftStore.upload_etag).
SOURCE_ETAG = protocol.SOURCE_ETAG_KEY
# The system headers an object keeps across stores, besides user metadata.
CONTENT_HEADERS = ("Content-Type", "Content-Disposition")
# Bytes read or written at once when streaming a body.
CHUNK = 1 << 20


@dataclasses.dataclass
class Entry:
    """One object in a listing.

    Attributes
    ----------
    name : str
        Its key in the store.
    size : int
        Bytes of its body.
    etag : str or None
        Its content hash, of the kind the store's ``etag_kind`` names.
    metadata : dict or None
        Its user metadata, when the store gives it cheaply; None when
        unknown (ask ``head``).
    headers : dict or None
        Its content headers (keys of :data:`CONTENT_HEADERS`) that are set,
        when known.
    path : str or None
        The local file it is, for a store of local files; else None.
    """

    name: str
    size: int
    etag: str = None
    metadata: dict = None
    headers: dict = None
    path: str = None

    @property
    def known_etag(self):
        """``etag``, when knowing it costs nothing (a local file's entry
        computes it from the file when asked, see its own)."""
        return self.etag


class Reader(io.RawIOBase):
    """The body of one object, read in chunks; a readable file object.

    Parameters
    ----------
    uri : str
        For errors.
    chunks : iterable of bytes
        The body as the store's client yields it.
    entry : Entry
        The object: size, etag, metadata, content headers.
    check : (hash object, str), optional
        A hash to update with every byte and the hex digest it must end
        with; a body that does not raises :class:`StoreError` at its end,
        before the reader says EOF, so that a destination written from it
        is never committed.
    close : callable, optional
        Releases the connection.
    path : str, optional
        The local file the body is, for a writer that uploads files by
        path (in parallel segments, without buffering).
    """

    def __init__(self, uri, chunks, entry, check=None, close=None, path=None):
        super().__init__()
        self.uri = uri
        self.path = path
        self.entry = entry
        self._chunks = iter(chunks)
        self._pending, self._offset = b"", 0
        self._check = check
        self._hasher = None if check is None else _Hasher(check[0])
        self._checked = False
        self._release = close
        self.bytes_read = 0

    @property
    def metadata(self):
        return self.entry.metadata

    @property
    def headers(self):
        return self.entry.headers or {}

    def readable(self):
        return True

    @property
    def checks_md5(self):
        """Whether the body is checked against its MD5 (:attr:`md5` is
        then its MD5 once read whole); a store may check another hash."""
        return self._check is not None and getattr(self._check[0], "name", None) == "md5"

    @property
    def md5(self):
        """The body's MD5, checked, once it was read to its end; else
        None."""
        return self._check[1] if self._checked and self.checks_md5 else None

    @property
    def file_md5(self):
        """The MD5 of the local file the body is (``path``), when its store
        knows it without reading the file (its record, or a hash made
        before), for a writer that sends it; else None."""
        return self.entry.known_etag if self.path is not None else None

    def _fill(self):
        """Make the next chunk pending; False at the body's end."""
        while self._offset >= len(self._pending):
            try:
                self._pending, self._offset = next(self._chunks), 0
            except StopIteration:
                self._end()
                return False
            except StoreError:
                raise
            except Exception as err:
                # Each client has its own (urllib3, botocore, requests).
                raise StoreError(self.uri, "the download broke off: %s" % (err,)) from None
            if self._hasher is not None:
                self._hasher.update(self._pending)
        return True

    def readinto(self, buf):
        if not self._fill():
            return 0
        n = min(len(buf), len(self._pending) - self._offset)
        buf[:n] = memoryview(self._pending)[self._offset : self._offset + n]
        self._offset += n
        self.bytes_read += n
        return n

    def read(self, size=-1):
        """Up to ``size`` bytes: the chunks as the store's client yields
        them, not copied, when ``size`` holds them."""
        if size is None or size < 0:
            return self.readall()
        if self.closed:
            raise ValueError("read of a closed body")
        if not size or not self._fill():
            return b""
        if self._offset == 0 and len(self._pending) <= size:
            data = self._pending
        else:
            data = self._pending[self._offset : self._offset + size]
        self._offset += len(data)
        self.bytes_read += len(data)
        return data

    def _end(self):
        if self.entry.size is not None and self.bytes_read != self.entry.size:
            raise StoreError(
                self.uri,
                "the download ended after %d of %d bytes" % (self.bytes_read, self.entry.size),
            )
        if self._hasher is not None and self._hasher.hexdigest() != self._check[1]:
            raise StoreError(self.uri, "the download arrived damaged (hash mismatch)")
        self._checked = self._check is not None

    def close(self):
        if not self.closed:
            if self._hasher is not None:
                self._hasher.stop()
            if self._release is not None:
                self._release()
        super().close()


class _Hasher:
    """A hash of a body read in chunks: updated here for its first
    ``INLINE`` bytes, then in a thread of its own (hashlib lets go of the
    GIL), so that hashing a large download overlaps receiving and writing
    it, a few chunks behind."""

    INLINE = 8 * CHUNK
    BEHIND = 8

    def __init__(self, hash):
        self.hash = hash
        self._inline = 0
        self._queue = self._thread = None

    def update(self, chunk):
        if self._thread is None:
            if self._inline < self.INLINE:
                self._inline += len(chunk)
                self.hash.update(chunk)
                return
            self._queue = queue.Queue(self.BEHIND)
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        self._queue.put(chunk)

    def _run(self):
        for chunk in iter(self._queue.get, None):
            self.hash.update(chunk)

    def hexdigest(self):
        self.stop()
        return self.hash.hexdigest()

    def stop(self):
        """End the thread once it hashed what it was given."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join()
        self._thread = None


class Counted(io.RawIOBase):
    """A readable that calls ``count(n)`` for every ``n`` bytes read from
    ``raw`` (bytes through the client).  A writer that uploads ``path``
    instead of reading calls ``count`` itself."""

    def __init__(self, raw, count):
        super().__init__()
        self.raw, self._count = raw, count
        self.path = getattr(raw, "path", None)

    # What ``raw`` knows of its content (see :class:`Reader`).
    checks_md5 = property(lambda self: getattr(self.raw, "checks_md5", False))
    md5 = property(lambda self: getattr(self.raw, "md5", None))
    file_md5 = property(lambda self: getattr(self.raw, "file_md5", None))

    def count(self, nbytes):
        """Count ``nbytes`` moved by path, as if read through every
        layer."""
        self._count(nbytes)
        inner = getattr(self.raw, "count", None)
        if inner is not None:
            inner(nbytes)

    def readable(self):
        return True

    def read(self, size=-1):
        data = self.raw.read(size)
        if data:
            self._count(len(data))
        return data

    def readinto(self, buf):
        data = self.raw.read(len(buf))
        n = len(data)
        buf[:n] = data
        if n:
            self._count(n)
        return n


class Tally:
    """Bytes moved, passed on to ``count(n)`` a MiB or so at a time (the
    rest by :meth:`finish`), from any thread: progress that costs little
    however small the reads of a client are, and stops (``count``
    raising) at the next MiB."""

    def __init__(self, count, every=CHUNK):
        self._count, self._every = count, every
        self._uncounted = 0
        self._lock = threading.Lock()

    def add(self, nbytes):
        with self._lock:
            self._uncounted += nbytes
            if self._uncounted < self._every:
                return
            nbytes, self._uncounted = self._uncounted, 0
            self._count(nbytes)

    def finish(self):
        """Pass on what is not counted yet."""
        with self._lock:
            nbytes, self._uncounted = self._uncounted, 0
            if nbytes:
                self._count(nbytes)


class Progress:
    """A local file whose reads are counted (a :class:`Tally` of
    ``count``), for a client that reads it in small pieces; seekable, for
    a client that retries a request from its start."""

    def __init__(self, f, count):
        self.f = f
        self.tally = Tally(count)

    def read(self, size=-1):
        data = self.f.read(size)
        self.tally.add(len(data))
        return data

    def finish(self):
        self.tally.finish()

    def seek(self, offset, whence=os.SEEK_SET):
        return self.f.seek(offset, whence)

    def tell(self):
        return self.f.tell()


def local_path(body):
    """The local file ``body`` reads, if any, and a function to call with
    the bytes a writer uploaded from it by path."""
    return getattr(body, "path", None), getattr(body, "count", None) or (lambda n: None)


def read_full(body, size):
    """Up to ``size`` bytes of ``body``: fewer only at its end (a raw
    stream's ``read`` may return fewer at any time)."""
    parts, got = [], 0
    while got < size:
        part = body.read(size - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class FullReads:
    """``body`` whose ``read(n)`` returns ``n`` bytes unless at its end,
    as clients that take a short read for the end expect (s3transfer)."""

    def __init__(self, body):
        self.body = body

    def read(self, size=-1):
        if size is None or size < 0:
            return b"".join(iter(lambda: self.body.read(CHUNK), b""))
        return read_full(self.body, size)


def content_headers(headers):
    """The :data:`CONTENT_HEADERS` set in ``headers`` (any case), spelled
    as in :data:`CONTENT_HEADERS`."""
    lower = {str(k).lower(): v for k, v in (headers or {}).items()}
    return {k: str(lower[k.lower()]) for k in CONTENT_HEADERS if lower.get(k.lower())}


def normalize_metadata(metadata):
    """User metadata with keys spelled the way Swift spells them."""
    return {str(k).title(): str(v) for k, v in (metadata or {}).items()}


class Store:
    """The interface of a connector bound to one location.

    Subclasses set ``scheme`` and ``etag_kind`` and implement ``list``,
    ``head``, ``reader``, ``write`` and ``delete``; they must be safe to
    call from several threads at once.
    """

    scheme = None
    # What Entry.etag holds: two stores' hashes are compared only when the
    # kinds are equal ('md5' for Swift, S3 and local files; 'dropbox' for
    # Dropbox's content_hash).
    etag_kind = "md5"
    location = ""

    def etag_is_upload_of(self, size):
        """Whether the ETag this store gives a local file's upload of
        ``size`` bytes is told by the file alone (:meth:`upload_etag`),
        so that the copy is known by it rather than by a ``Source-Etag``,
        which would need the file read whole before its first byte is
        sent."""
        return False

    def uri(self, key=""):
        """The URI of ``key`` in this store."""
        from mlstorlets.client.uri import URI

        return str(URI(self.scheme, self.location, key))

    def list(self, prefix=""):
        """[Entry] of every object whose key starts with ``prefix``.

        Raises
        ------
        NotFound
            The container or bucket does not exist.
        """
        raise NotImplementedError

    def head(self, key):
        """The Entry of ``key``, with its metadata; None if it does not
        exist."""
        raise NotImplementedError

    def reader(self, key):
        """The body of ``key``: a :class:`Reader` to read and close.

        Raises
        ------
        NotFound
        StoreError
        """
        raise NotImplementedError

    def write(self, key, body, metadata=None, headers=None, size=None):
        """Store what ``body`` reads as ``key``, whole or not at all.

        Parameters
        ----------
        key : str
        body : readable file object
            Read in chunks up to its end; memory stays bounded.
        metadata : dict, optional
            User metadata.
        headers : dict, optional
            Content headers (:data:`CONTENT_HEADERS`); others are ignored.
        size : int, optional
            The body's length when known (it picks single or segmented
            uploads up front).

        Returns
        -------
        Entry
            The stored object.
        """
        raise NotImplementedError

    def get(self, key):
        """(body bytes, metadata dict) of ``key``, read into memory.

        Raises
        ------
        NotFound
        StoreError
        """
        with self.reader(key) as body:
            return body.read(), body.metadata

    def put(self, key, data, metadata=None, headers=None):
        """Store ``data`` as ``key`` with ``metadata``, whole or not at all.

        Returns
        -------
        Entry
            The stored object.
        """
        return self.write(key, io.BytesIO(data), metadata, headers, size=len(data))

    def delete(self, key):
        """Remove ``key``; removing a missing key is not an error."""
        raise NotImplementedError

    def exists(self, key):
        return self.head(key) is not None
