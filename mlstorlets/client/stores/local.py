"""``file:///path``: local files.

Writes are atomic: the body goes to a temporary file in the destination's
own directory (so that the rename does not cross file systems), is synced,
then renamed over the name.  A reader sees the old file or the new one,
never part of one; a failure removes the temporary file.

User metadata, content headers (Content-Type, Content-Disposition) and the
body's MD5 are kept in one record with the file's inode, size and
modification time, so that a record that no longer matches its file (the
file was replaced by something else) is ignored, and the MD5 is then
computed from the file, once, when something first asks for it (a
listing does not).  The record is the file's extended attribute
``user.mlstorlets``, set before the rename: a destination holds the files
written and nothing else, as ``aws s3 cp`` and rclone leave it.  With
``sidecars=True`` (``MLSTORLETS_FILE_METADATA=sidecar``) it is a sidecar
file, ``DIR/.mlstorlets/NAME.json``, which survives what drops extended
attributes (some network file systems, archives, plain copies); a record
over the file system's size for an attribute (about 4 KB on ext4) goes to
a sidecar too.  Where the file system refuses extended attributes and no
sidecar was asked for, the metadata is not kept (a warning says so once):
resumed runs then redo those outputs.  Both are read, and listings never include the
``.mlstorlets`` directories.
"""

import errno
import hashlib
import io
import json
import os
import tempfile
import threading
import warnings

from mlstorlets.client.errors import NotFound, StoreError
from mlstorlets.client.stores.base import (
    CHUNK,
    INTERNAL_PREFIX,
    Entry,
    Progress,
    Reader,
    Store,
    content_headers,
    is_internal,
    normalize_metadata,
)

TEMP_PREFIX = INTERNAL_PREFIX + "-tmp-"
#: The extended attribute that holds a file's record.
XATTR = "user.mlstorlets"
#: Set to "sidecar" to keep records in sidecar files.
METADATA_VARIABLE = "MLSTORLETS_FILE_METADATA"
# MD5s of files without a record computed by this process, by stat.
_md5s = {}
# Directories this process has cleaned of abandoned temporary files.
_cleaned = set()
_cleaned_lock = threading.Lock()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes 0600 files; a file put here gets the mode open() would give.
FILE_MODE = 0o666 & ~_umask()


class FileStore(Store):
    """Files under ``root`` (``/`` for ``file://`` URIs).

    Parameters
    ----------
    root : str
        The directory keys are relative to.
    sidecars : bool, default=False
        Keep each file's metadata in a sidecar file rather than in an
        extended attribute.
    """

    scheme = "file"
    creates_parents = True

    def __init__(self, root="/", sidecars=False):
        self.root = os.path.abspath(root)
        self.sidecars = sidecars
        self._warned = False

    def uri(self, key=""):
        return "file://" + self.path(key)

    def path(self, key):
        return os.path.join(self.root, key)

    def _sidecar(self, path):
        head, tail = os.path.split(path)
        return os.path.join(head, INTERNAL_PREFIX, tail + ".json")

    def _record(self, path):
        """The record of the file at ``path``: its attribute, else its sidecar."""
        try:
            return json.loads(os.getxattr(path, XATTR))
        except (OSError, ValueError):
            pass
        try:
            with open(self._sidecar(path), "rb") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _entry(self, key, path, st):
        """The Entry of a file, trusting its record only if it matches."""
        metadata, etag, headers = {}, None, {}
        try:
            record = self._record(path)
            if record.get("stat") == _stat_key(st):
                metadata, etag = record["metadata"], record["md5"]
                headers = content_headers(record.get("headers"))
        except (KeyError, TypeError, AttributeError):
            pass
        return FileEntry(key, st.st_size, etag, normalize_metadata(metadata), headers, path, st)

    def list(self, prefix=""):
        base = self.path(prefix if prefix.endswith("/") or not prefix else os.path.dirname(prefix))
        if not os.path.isdir(base):
            raise NotFound(self.uri(prefix), "no such directory")
        entries = []
        for top, dirs, files in os.walk(base, onerror=self._walk_error):
            dirs[:] = sorted(d for d in dirs if not is_internal(d))
            for name in sorted(files):
                path = os.path.join(top, name)
                key = os.path.relpath(path, self.root)
                if is_internal(name) or not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue  # removed while listing
                if os.path.isfile(path):
                    entries.append(self._entry(key, path, st))
        entries.sort(key=lambda e: e.name)
        return entries

    def _walk_error(self, err):
        raise StoreError("file://" + (err.filename or self.root), err.strerror or str(err))

    def head(self, key):
        path = self.path(key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StoreError(self.uri(key), err.strerror) from None
        if not os.path.isfile(path):
            return None
        return self._entry(key, path, st)

    def reader(self, key):
        path = self.path(key)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise NotFound(self.uri(key), "no such file") from None
        except IsADirectoryError:
            raise StoreError(
                self.uri(key), "a directory (end the URI with / to name the files under it)"
            ) from None
        except OSError as err:
            raise StoreError(self.uri(key), err.strerror) from None
        try:
            entry = self._entry(key, path, os.fstat(f.fileno()))
        except BaseException:
            f.close()
            raise
        return Reader(
            self.uri(key), iter(lambda: f.read(CHUNK), b""), entry, close=f.close, path=path
        )

    def write(self, key, body, metadata=None, headers=None, size=None):
        path = self.path(key)
        metadata = normalize_metadata(metadata)
        headers = content_headers(headers)
        digest = hashlib.md5(usedforsecurity=False)

        kept = []

        def md5():
            return body.md5 if checked else digest.hexdigest()

        def record(st):
            return json.dumps(
                {
                    "md5": md5(),
                    "stat": _stat_key(st),
                    "metadata": metadata,
                    "headers": headers,
                },
                sort_keys=True,
            ).encode("utf-8")

        # A body checked against its MD5 (a download) is not hashed twice.
        checked = getattr(body, "checks_md5", False)

        def copy(f):
            syncing = _Syncing(f)
            try:
                for chunk in iter(lambda: body.read(CHUNK), b""):
                    if not checked:
                        digest.update(chunk)
                    f.write(chunk)
                    syncing.wrote(len(chunk))
            finally:
                syncing.wait()
            if not self.sidecars:
                # Set before the rename, the file appears with its record.
                f.flush()
                kept.append(_set_attribute(f.fileno(), record(os.fstat(f.fileno()))))

        try:
            st = _atomic_write(path, copy)
            if self.sidecars or (kept[0] is None and (metadata or headers)):
                # After the body: a sidecar left over from an older body no
                # longer matches the new file's inode and is ignored.  One
                # record too big for an attribute goes there too.
                _atomic_write(self._sidecar(path), lambda f: f.write(record(st)))
            else:
                self._drop_sidecar(path)
                if kept[0] is False and (metadata or headers):
                    self._warn_unkept(key)
        except OSError as err:
            raise StoreError(self.uri(key), err.strerror or str(err)) from None
        return Entry(key, st.st_size, md5(), metadata, headers, path)

    def _drop_sidecar(self, path):
        """Remove the sidecar an older write left, and its emptied folder."""
        sidecar = self._sidecar(path)
        try:
            os.unlink(sidecar)
        except OSError:
            return
        self._prune(os.path.dirname(sidecar))

    def _warn_unkept(self, key):
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"{self.uri(key)}: the file system refuses extended attributes, so "
                f"metadata is not kept; {METADATA_VARIABLE}=sidecar keeps it in "
                f"{INTERNAL_PREFIX}/ folders",
                stacklevel=3,
            )

    def delete(self, key):
        path = self.path(key)
        for name in (path, self._sidecar(path)):
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
            except OSError as err:
                raise StoreError(self.uri(key), err.strerror) from None
        self._prune(os.path.dirname(self._sidecar(path)))

    def _prune(self, directory):
        """Remove the project's own folders (a finished training's shards,
        an emptied sidecar folder) once empty; a user's folders stay."""
        while directory != self.root and is_internal(os.path.relpath(directory, self.root)):
            try:
                os.rmdir(directory)
            except FileNotFoundError:  # no sidecar folder: its parent may go
                pass
            except OSError:  # not empty
                return
            directory = os.path.dirname(directory)


class FileEntry(Entry):
    """The Entry of a local file, whose MD5, unless its record holds it, is
    computed from the file when ``etag`` is first read, not when the file
    is listed: a copy that does not need it (to S3, whose own ETag
    identifies the copy) sends the file's first byte without reading it
    whole before.

    Parameters
    ----------
    name, size, etag, metadata, headers
        As :class:`~mlstorlets.client.stores.base.Entry`'s; ``etag`` None
        when the record does not hold it.
    path : str
        The file.
    st : os.stat_result
        Its stat when it was listed: the MD5 is of that file (computed once
        a process, whatever asks first).
    """

    def __init__(self, name, size, etag, metadata, headers, path, st):
        self._stat = st
        super().__init__(name, size, etag, metadata, headers, path)

    @property
    def etag(self):
        if self._etag is None:
            self._etag = _file_md5(self.path, self._stat)
        return self._etag

    @etag.setter
    def etag(self, value):
        self._etag = value

    @property
    def known_etag(self):
        """The file's MD5 if known without reading the file (its record,
        or a hash of it this process made); else None."""
        if self._etag is None:
            return _md5s.get((self.path, *_stat_key(self._stat)))
        return self._etag


class HashedFile(Progress):
    """A local file read once, from its start, to be sent: its MD5 is
    computed as it is read, as ``swift upload`` does, not in a read of its
    own before (2 s a GiB), and its reads are counted (:class:`Progress`).

    :meth:`end` gives the MD5 once the file was read whole, if the file did
    not change meanwhile (the same inode, size and modification time before
    and after): a file written to during the copy would otherwise be
    stored part old, part new, under the MD5 of what was read.  :meth:`keep`
    records the MD5 for the file's stat, so that a later check of the copy
    (resume) does not read the file again.

    Parameters
    ----------
    f : binary file object
        The file, open at its start.
    path : str
    count : callable
        Called with the bytes read, a MiB or so at a time.
    """

    def __init__(self, f, path, count):
        super().__init__(f, count)
        self.path = path
        self._stat = os.fstat(f.fileno())
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._bytes = 0

    def read(self, size=-1):
        data = super().read(size)
        self._md5.update(data)
        self._bytes += len(data)
        return data

    def seek(self, offset, whence=os.SEEK_SET):
        # A client that retries a request reads the body again from its
        # start: the hash starts again too.  Nothing else would hash it.
        if (offset, whence) != (0, os.SEEK_SET):
            raise io.UnsupportedOperation("a file being hashed seeks to its start only")
        self._md5, self._bytes = hashlib.md5(usedforsecurity=False), 0
        return super().seek(offset, whence)

    def end(self):
        """The MD5 of the file, read whole.

        Raises
        ------
        StoreError
            The file changed (or was replaced, or removed) while it was
            read.
        """
        self.finish()
        try:
            now = _stat_key(os.stat(self.path))
        except OSError:
            now = None
        if now != _stat_key(self._stat) or self._bytes != self._stat.st_size:
            raise StoreError("file://" + self.path, "changed while being copied")
        return self._md5.hexdigest()

    def keep(self):
        """Record the MD5 :meth:`end` gave, for the file's stat."""
        _remember(self.path, _stat_key(self._stat), self._md5.hexdigest())


def _set_attribute(fd, value):
    """Whether the file system kept ``value`` as the file's record: True,
    False when it has no extended attributes, None when this one is over
    its size (ext4 keeps about 4 KB)."""
    try:
        os.setxattr(fd, XATTR, value)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.E2BIG, errno.ERANGE):
            return None
        return False
    return True


class _Syncing:
    """Syncs a large file's data to disk in a thread while it is being
    written, ``EVERY`` bytes or so, so that its final sync has little left
    to wait for: as durable as before, the wait overlapped with the
    transfer (1.7 s of a 1 GiB download here).  ``wait`` before closing."""

    EVERY = 64 << 20

    def __init__(self, f):
        self.f, self.fd = f, f.fileno()
        self._unsynced, self._thread = 0, None

    def wrote(self, nbytes):
        self._unsynced += nbytes
        if self._unsynced < self.EVERY or (self._thread and self._thread.is_alive()):
            return
        self._unsynced = 0
        self.f.flush()
        self._thread = threading.Thread(target=self._sync, daemon=True)
        self._thread.start()

    def _sync(self):
        try:
            getattr(os, "fdatasync", os.fsync)(self.fd)
        except OSError:
            pass  # the final sync reports it

    def wait(self):
        if self._thread is not None:
            self._thread.join()


def _stat_key(st):
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _file_md5(path, st):
    """The MD5 of the file at ``path`` whose stat is ``st``, computed once
    a process for the same file (a copy heads its source, then reads it)."""
    found = _md5s.get((path, *_stat_key(st)))
    if found is None:
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            # Asked for later than the stat was taken (entries hash when
            # asked): a file replaced since is hashed as it is now, kept
            # under its own stat, not under the one it no longer has.
            hashed = _stat_key(os.fstat(f.fileno()))
            for chunk in iter(lambda: f.read(CHUNK), b""):
                digest.update(chunk)
        found = _remember(path, hashed, digest.hexdigest())
    return found


def _remember(path, stat_key, md5):
    """Keep ``md5`` as the MD5 of the file at ``path`` while its stat is
    the one of ``stat_key`` (:func:`_stat_key`); the oldest of over 4096
    are dropped."""
    _md5s[(path, *stat_key)] = md5
    while len(_md5s) > 4096:
        _md5s.pop(next(iter(_md5s)), None)
    return md5


def _atomic_write(path, fill):
    """Write what ``fill(file)`` writes to ``path`` through a temporary file
    and a rename; returns the new file's stat."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    # Named after the writer, so that what a killed writer left (kill -9
    # during a large download) is removed by the next process writing here.
    _remove_abandoned(directory)
    fd, temp = tempfile.mkstemp(dir=directory, prefix="%s%d-" % (TEMP_PREFIX, os.getpid()))
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        st = os.stat(temp)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    return st


def _remove_abandoned(directory):
    """Remove the temporary files that dead writers left in ``directory``,
    the first time this process writes there."""
    with _cleaned_lock:
        if directory in _cleaned:
            return
        _cleaned.add(directory)
    try:
        found = [e for e in os.scandir(directory) if e.name.startswith(TEMP_PREFIX)]
    except OSError:
        return
    for entry in found:
        pid = entry.name[len(TEMP_PREFIX) :].partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's: not ours to remove
    return True
