"""``swift://``: a container of the default cluster, through swiftclient.

Every request goes through the client's Swift gateway
(:class:`mlstorlets.client.swift.Swift`): a connection per thread sharing one
token, one rule for internal names, errors as one-line reasons.

Bodies stream both ways.  A download is read in chunks and checked against
the object's MD5 at its end (not for a Static or Dynamic Large Object,
whose ETag is not its body's hash).  An upload goes through swiftclient's
``SwiftService``, as ``swift upload`` does: a body up to the segment size
is one streamed ``PUT`` that Swift commits only when all of it arrived and
whose MD5 swiftclient checks; a bigger one is written as a Static Large
Object, segments under ``<container>_segments`` (SwiftService's layout)
and the manifest last, so that the object appears whole or not at all.
Without an explicit ``segment_size``, only objects Swift could not hold
whole (over ``MAX_OBJECT``, Swift's default ``max_file_size``) are
segmented, in segments of ``DEFAULT_SEGMENT`` (more if the manifest would
exceed ``MAX_SEGMENTS``).  A local file of one PUT is read as it is sent:
its MD5, when its store knows it without reading the file, is sent for
Swift to check; otherwise, as ``swift upload`` does, it is computed as the
file is sent and compared with the ETag Swift answers, and the file's stat
compared before and after: an object whose ETag differs, or of a file that
changed while it was sent, is removed (:meth:`SwiftStore.write` raises).
The MD5 is then kept for the file, so that a later check of the copy
(:meth:`SwiftStore.upload_etag`, resume) does not read it again.  No read
of the file before its first byte is sent.  A larger one is uploaded by
path, its segments read from the file, ``SEGMENT_THREADS`` at once.  Either
way its bytes are counted as they go (each MiB, each segment), and a count
that raises (Ctrl-C) stops the upload there.  SwiftService buffers one
segment of any other stream in memory.

A server-side copy (``copy_from``) copies a large object's manifest
(``multipart-manifest=get``) instead of its concatenated body: the copy
shares the source's segments, and objects over 5 GB copy too.
"""

import contextlib
import hashlib
import json
import os
from urllib.parse import quote

from swiftclient.client import ClientException
from swiftclient.multithreading import MultiThreadingManager
from swiftclient.service import SwiftError, SwiftService, SwiftUploadObject

from mlstorlets.client.errors import NotFound, StoreError
from mlstorlets.client.stores.base import (
    CHUNK,
    Entry,
    Progress,
    Reader,
    Store,
    content_headers,
    is_internal,
    local_path,
    normalize_metadata,
)
from mlstorlets.client.stores.local import HashedFile
from mlstorlets.client.swift import Swift, clone_connection, reason_of
from mlstorlets.sandbox import protocol

# Swift's default max_file_size and max_manifest_segments (constraints).
MAX_OBJECT = 5 << 30
MAX_SEGMENTS = 1000
# Segments of a local file uploaded at once.
SEGMENT_THREADS = 4
# SwiftService holds a segment of a stream in memory, twice at times.
DEFAULT_SEGMENT = 32 << 20

# What SwiftService (as the swift CLI) records on every upload, for its own
# use: a file's mtime.  Not the user's metadata: a copy elsewhere leaves it.
SWIFT_CLI_MTIME = protocol.OBJECT_META.lower() + "mtime"


class SwiftStore(Store):
    """Objects of one container.

    Parameters
    ----------
    conn : swiftclient.client.Connection or mlstorlets.client.swift.Swift
    container : str
    segment_size : int, optional
        Write objects bigger than this as Static Large Objects in segments
        of this size (``swift upload --segment-size``); default: only
        objects over ``MAX_OBJECT``.
    """

    scheme = "swift"

    def __init__(self, conn, container, segment_size=None):
        self.swift = conn if isinstance(conn, Swift) else Swift(conn)
        self.conn = self.swift.parent
        self.location = container
        self.segment_size = segment_size

    def _call(self, key, method, *args, **kwargs):
        try:
            return getattr(self.swift.conn, method)(*args, **kwargs)
        except ClientException as err:
            if err.http_status == 404:
                raise NotFound(self.uri(key), "not found") from None
            raise StoreError(self.uri(key), reason_of(err)[1]) from None
        except OSError as err:
            raise StoreError(self.uri(key), "cannot reach Swift: %s" % err) from None

    def list(self, prefix=""):
        try:
            _, listing = self._call(
                prefix, "get_container", self.location, prefix=prefix or None, full_listing=True
            )
        except NotFound:
            raise NotFound(self.uri(prefix), "no such container") from None
        return [
            Entry(e["name"], e["bytes"], e["hash"])
            for e in listing
            if "name" in e and not is_internal(e["name"])
        ]

    def list_folder(self, prefix=""):
        """([Entry] directly under ``prefix``, [sub-folder prefixes]),
        ``/`` being the separator."""
        try:
            _, listing = self._call(
                prefix,
                "get_container",
                self.location,
                prefix=prefix or None,
                delimiter="/",
                full_listing=True,
            )
        except NotFound:
            raise NotFound(self.uri(prefix), "no such container") from None
        return (
            [
                Entry(e["name"], e["bytes"], e["hash"])
                for e in listing
                if "name" in e and not is_internal(e["name"])
            ],
            [
                e["subdir"]
                for e in listing
                if "subdir" in e and not is_internal(e["subdir"].rstrip("/"))
            ],
        )

    def read_range(self, key, start, end):
        """Bytes ``start`` to ``end`` (excluded) of ``key``."""
        if end <= start:
            return b""
        _, body = self._call(
            key,
            "get_object",
            self.location,
            key,
            headers={"Range": "bytes=%d-%d" % (start, end - 1)},
        )
        return body

    def head(self, key):
        try:
            headers = self._call(key, "head_object", self.location, key)
        except NotFound:
            return None
        return _entry(key, headers)

    def reader(self, key):
        headers, body = self._call(key, "get_object", self.location, key, resp_chunk_size=CHUNK)
        entry = _entry(key, headers)
        check = None
        if not _is_manifest(headers):
            check = (hashlib.md5(usedforsecurity=False), entry.etag)
        return Reader(self.uri(key), body, entry, check, close=body.close)

    def write(self, key, body, metadata=None, headers=None, size=None):
        metadata = normalize_metadata(metadata)
        put = dict(
            content_headers(headers), **{"X-Object-Meta-" + k: v for k, v in metadata.items()}
        )
        path, count = local_path(body)
        if path is not None:
            size = os.path.getsize(path)
        segment = self._segment(size)
        # A local file of one PUT is read here (its progress shows, Ctrl-C
        # stops it at a MiB); a bigger one goes by path, SwiftService
        # reading its segments from the file, several at once, buffering
        # none.  Its MD5, when its store knows it, is sent for Swift to
        # check; otherwise it is computed as the file is sent (HashedFile)
        # and compared with the ETag Swift answers, as ``swift upload``
        # does: reading the file whole before would delay its first byte.
        single_file = path is not None and self.one_put(size)
        md5 = getattr(body, "file_md5", None) if single_file else None
        if md5:
            put["Etag"] = md5
        options = {
            "header": ["%s: %s" % kv for kv in put.items()],
            "segment_size": None if single_file else segment,
            "use_slo": True,
            # SwiftService would hash the file again: HashedFile does.
            "checksum": not single_file,
            "leave_segments": False,
        }
        try:
            with contextlib.ExitStack() as stack:
                source = path or body
                if single_file:
                    f = stack.enter_context(open(path, "rb"))
                    source = Progress(f, count) if md5 else HashedFile(f, path, count)
                etag = None
                with _Service(self.conn) as service:
                    for result in service.upload(
                        self.location, [SwiftUploadObject(source, key)], options
                    ):
                        if not result["success"]:
                            raise result["error"]
                        if path is not None and result.get("action") == "upload_segment":
                            count(result["segment_size"])
                        if result.get("action") == "upload_object":
                            etag = result.get("response_dict", {}).get("headers", {}).get("etag")
                if single_file and md5:
                    source.finish()
                elif single_file:
                    self._check_sent(key, source, etag)
        except StoreError:
            self._remove_orphans(key)
            raise
        except (ClientException, SwiftError, OSError) as err:
            self._remove_orphans(key)
            if isinstance(err, ClientException) and err.http_status == 422:
                # Swift refused a body that did not match its Etag.
                raise StoreError(
                    self.uri(key), "the upload arrived damaged (MD5 mismatch); not stored"
                ) from None
            if isinstance(err, SwiftError) and "md5 mismatch" in str(err):
                self.delete(key)
                raise StoreError(
                    self.uri(key), "the upload arrived damaged (MD5 mismatch); removed"
                ) from None
            reason = reason_of(err)[1] if isinstance(err, ClientException) else str(err)
            raise StoreError(self.uri(key), reason) from None
        except BaseException:
            # Stopped (Ctrl-C at a chunk of the source): no segment left.
            self._remove_orphans(key)
            raise
        entry = self.head(key)
        if entry is None:
            raise StoreError(self.uri(key), "missing after its upload")
        return entry

    def _check_sent(self, key, sent, etag):
        """After the PUT of the local file ``sent`` (a HashedFile) as
        ``key``, which Swift answered ``etag``: the object is removed, and
        StoreError raised, if the file changed while it was sent, or if
        Swift stored other bytes than the ones read (an ETag other than
        their MD5).  Else the file's MD5 is kept for a later run's check
        of the copy."""
        try:
            read = sent.end()
        except StoreError as err:
            self.delete(key)
            raise StoreError(err.uri, "%s; %s not kept" % (err.reason, self.uri(key))) from None
        if (etag or "").strip('"') != read:
            self.delete(key)
            raise StoreError(
                self.uri(key),
                "the upload arrived damaged (its ETag %s is not the MD5 %s of %s); removed"
                % (etag, read, sent.path),
            )
        sent.keep()

    def one_put(self, size):
        """Whether an upload of ``size`` bytes is one PUT (else a Static
        Large Object)."""
        segment = self._segment(size)
        return segment is None or (size is not None and size <= segment)

    def etag_is_upload_of(self, size):
        # One PUT's ETag is its body's MD5; a Static Large Object's is not.
        return self.one_put(size)

    def upload_etag(self, entry):
        """The ETag :meth:`write` gives the local file of ``entry``: its
        MD5 (computed from the file unless known) when it is one PUT.

        Parameters
        ----------
        entry : Entry
            A local file's (with its ``path``).

        Returns
        -------
        str or None
            None for an entry that is not a local file, or one uploaded as
            a Static Large Object (whose ETag is not its body's MD5).
        """
        if entry.path is None or not self.one_put(entry.size):
            return None
        return entry.etag

    def _segment(self, size):
        """The segment size of an upload of ``size`` bytes, or None for a
        single streamed PUT."""
        if self.segment_size:
            return self.segment_size
        if size is not None and size <= MAX_OBJECT:
            return None
        # A size not known up front: SwiftService writes one object if the
        # stream ends within the first segment.
        return max(DEFAULT_SEGMENT, -(-(size or 0) // MAX_SEGMENTS))

    def _remove_orphans(self, key):
        """Delete the segments of a failed upload of ``key``: those under
        its SwiftService prefix that its manifest (if any) does not use."""
        segments = self.location + "_segments"
        try:
            _, listing = self._call(
                key, "get_container", segments, prefix=key + "/slo/", full_listing=True
            )
        except StoreError:
            return  # no segments container: nothing was written
        used = set()
        try:
            _, manifest = self._call(
                key, "get_object", self.location, key, query_string="multipart-manifest=get"
            )
            used = {s.get("name", "").lstrip("/") for s in json.loads(manifest)}
        except (StoreError, ValueError, TypeError, AttributeError):
            pass
        for segment in listing:
            if "%s/%s" % (segments, segment["name"]) not in used:
                try:
                    self._call(key, "delete_object", segments, segment["name"])
                except StoreError:
                    pass

    def delete(self, key):
        try:
            self._call(key, "delete_object", self.location, key)
        except NotFound:
            pass

    def copy_from(self, container, name, key, metadata=None):
        """Make ``key`` a server-side copy of ``container/name``, keeping
        its metadata and adding ``metadata`` (no data moves).  A large
        object's manifest is copied, not its concatenation."""
        headers = {"X-Object-Meta-" + k: v for k, v in normalize_metadata(metadata).items()}
        headers["X-Copy-From"] = quote("/%s/%s" % (container, name))
        self._call(
            key,
            "put_object",
            self.location,
            key,
            b"",
            headers=headers,
            query_string="multipart-manifest=get",
        )

    def ensure_container(self):
        """Create the container when it does not exist (as ``swift upload``
        does)."""
        self._call("", "put_container", self.location)


class _Service(SwiftService):
    """A SwiftService whose connections are clones of ``conn`` (same
    authentication, same token), whatever auth ``conn`` uses."""

    def __init__(self, conn):
        super().__init__()
        self.thread_manager = MultiThreadingManager(
            lambda: clone_connection(conn),
            segment_threads=SEGMENT_THREADS,
            object_dd_threads=1,
            object_uu_threads=1,
            container_threads=1,
        )


def _is_manifest(headers):
    return (
        "x-object-manifest" in headers or headers.get("x-static-large-object", "").lower() == "true"
    )


def _entry(key, headers):
    # A Dynamic Large Object of many segments comes without a length.
    size = headers.get("content-length")
    return Entry(
        key,
        int(size) if size is not None else None,
        headers["etag"].strip('"'),
        _metadata(headers),
        content_headers(headers),
    )


def _metadata(headers):
    meta = protocol.OBJECT_META.lower()
    return normalize_metadata(
        {
            k[len(meta) :]: v
            for k, v in headers.items()
            if k.startswith(meta) and k != SWIFT_CLI_MTIME
        }
    )
