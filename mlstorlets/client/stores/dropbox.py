"""``dropbox://path``: files of a Dropbox account, through the official SDK.

The access token comes from ``DROPBOX_ACCESS_TOKEN``, or a refresh token
(``DROPBOX_REFRESH_TOKEN`` with ``DROPBOX_APP_KEY`` and, unless PKCE was
used, ``DROPBOX_APP_SECRET``).  A file up to ``UPLOAD_CHUNK`` bytes goes up
with ``files/upload``; a bigger one through an upload session, whose
``finish`` commits the whole file at once.  Either way Dropbox creates the
file only when all of it arrived (mode ``overwrite``), and the SDK sends
each request's ``content_hash`` for Dropbox to check.

Bodies stream: an upload reads its body a chunk at a time (two chunks in
memory), a download is read in chunks and checked against the file's
content hash at its end.

Dropbox files have no free-form metadata, so the user metadata and the
content headers (Content-Type, Content-Disposition) live in a sidecar,
``DIR/.mlstorlets/NAME.json``, which records the file's
``content_hash``: a sidecar that no longer matches its file is ignored.
ETags are Dropbox content hashes (``etag_kind = 'dropbox'``).
"""

import hashlib
import io
import json
import posixpath
import threading

import dropbox
import requests
from dropbox import exceptions, files

from mlstorlets.client.errors import NotFound, StoreError
from mlstorlets.client.stores.base import (
    CHUNK,
    INTERNAL_PREFIX,
    Entry,
    Reader,
    Store,
    content_headers,
    is_internal,
    normalize_metadata,
    read_full,
)

# Dropbox's limit for one request is 150 MiB; smaller requests retry
# cheaper.
UPLOAD_CHUNK = 8 << 20
BLOCK = 4 << 20


class ContentHasher:
    """Dropbox's content hash, fed in pieces: SHA-256 over the SHA-256 of
    each 4 MiB block.

    https://www.dropbox.com/developers/reference/content-hash
    """

    def __init__(self):
        self._outer, self._block, self._filled = hashlib.sha256(), hashlib.sha256(), 0

    def update(self, data):
        view = memoryview(data)
        while view:
            take = min(len(view), BLOCK - self._filled)
            self._block.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == BLOCK:
                self._outer.update(self._block.digest())
                self._block, self._filled = hashlib.sha256(), 0

    def hexdigest(self):
        outer = self._outer.copy()
        if self._filled:
            outer.update(self._block.digest())
        return outer.hexdigest()


def content_hash(data):
    """Dropbox's content hash of ``data``."""
    hasher = ContentHasher()
    hasher.update(data)
    return hasher.hexdigest()


def make_client(environ, session=None, **kwargs):
    """A ``dropbox.Dropbox`` from the variables in ``environ``.

    Parameters
    ----------
    environ : mapping
    session : requests.Session, optional
        The HTTP session the SDK sends its requests through.
    **kwargs
        More arguments of ``dropbox.Dropbox``.

    Raises
    ------
    StoreError
        No credentials in ``environ``.
    """
    token = environ.get("DROPBOX_ACCESS_TOKEN")
    refresh = environ.get("DROPBOX_REFRESH_TOKEN")
    if not token and not refresh:
        raise StoreError(
            "dropbox://",
            "no Dropbox credentials: set "
            "DROPBOX_ACCESS_TOKEN, or DROPBOX_REFRESH_TOKEN "
            "with DROPBOX_APP_KEY (and DROPBOX_APP_SECRET)",
        )
    kwargs.setdefault("max_retries_on_error", 2)
    kwargs.setdefault("timeout", 60)
    return dropbox.Dropbox(
        oauth2_access_token=token,
        oauth2_refresh_token=refresh,
        app_key=environ.get("DROPBOX_APP_KEY"),
        app_secret=environ.get("DROPBOX_APP_SECRET"),
        session=session,
        **kwargs,
    )


class DropboxStore(Store):
    """Files of one Dropbox account, keys being paths without the leading
    ``/``.

    Parameters
    ----------
    client : dropbox.Dropbox
        Each thread uses its own clone (sharing the HTTP session).
    """

    scheme = "dropbox"
    etag_kind = "dropbox"
    creates_parents = True

    def __init__(self, client):
        self.client = client
        self._local = threading.local()

    def _dbx(self):
        dbx = getattr(self._local, "dbx", None)
        if dbx is None:
            dbx = self._local.dbx = self.client.clone()
        return dbx

    def _call(self, key, method, *args, **kwargs):
        try:
            return getattr(self._dbx(), method)(*args, **kwargs)
        except exceptions.ApiError as err:
            if _not_found(err.error):
                raise NotFound(self.uri(key), "not found") from None
            raise StoreError(
                self.uri(key), "Dropbox refused: %s" % (err.user_message_text or err.error)
            ) from None
        except exceptions.AuthError as err:
            tag = getattr(err.error, "_tag", None) or err.error
            raise StoreError(
                self.uri(key), "Dropbox refused the credentials (%s)" % (tag,)
            ) from None
        except exceptions.DropboxException as err:
            raise StoreError(self.uri(key), "Dropbox failed: %s" % (err,)) from None
        except (requests.RequestException, OSError) as err:
            raise StoreError(self.uri(key), "cannot reach Dropbox: %s" % (err,)) from None

    def list(self, prefix=""):
        folder = prefix if prefix.endswith("/") or not prefix else posixpath.dirname(prefix)
        try:
            page = self._call(prefix, "files_list_folder", _path(folder), recursive=True)
        except NotFound:
            raise NotFound(self.uri(prefix), "no such folder") from None
        entries = []
        while True:
            for md in page.entries:
                if not isinstance(md, files.FileMetadata):
                    continue
                key = md.path_display.lstrip("/")
                if key.lower().startswith(prefix.lower()) and not is_internal(key):
                    entries.append(Entry(key, md.size, md.content_hash))
            if not page.has_more:
                break
            page = self._call(prefix, "files_list_folder_continue", page.cursor)
        entries.sort(key=lambda e: e.name)
        return entries

    def head(self, key):
        try:
            md = self._call(key, "files_get_metadata", _path(key))
        except NotFound:
            return None
        if not isinstance(md, files.FileMetadata):
            return None
        return Entry(key, md.size, md.content_hash, *self._sidecar(key, md.content_hash))

    def _sidecar(self, key, file_hash):
        """(metadata, content headers) of the sidecar, if it describes this
        content."""
        try:
            _, response = self._call(key, "files_download", _sidecar(key))
            try:
                sidecar = json.loads(response.content)
            finally:
                response.close()
        except NotFound:
            return {}, {}
        except (ValueError, requests.RequestException):
            return {}, {}
        if not isinstance(sidecar, dict) or sidecar.get("content_hash") != file_hash:
            return {}, {}
        return (
            normalize_metadata(sidecar.get("metadata")),
            content_headers(sidecar.get("headers")),
        )

    def reader(self, key):
        md, response = self._call(key, "files_download", _path(key))
        try:
            entry = Entry(key, md.size, md.content_hash, *self._sidecar(key, md.content_hash))
        except BaseException:
            response.close()
            raise
        check = (ContentHasher(), md.content_hash) if md.content_hash else None
        return Reader(
            self.uri(key), response.iter_content(CHUNK), entry, check, close=response.close
        )

    def write(self, key, body, metadata=None, headers=None, size=None):
        metadata = normalize_metadata(metadata)
        headers = content_headers(headers)
        md = self._upload(key, _path(key), body)
        if metadata or headers:
            sidecar = json.dumps(
                {"content_hash": md.content_hash, "metadata": metadata, "headers": headers},
                sort_keys=True,
            )
            self._upload(key, _sidecar(key), io.BytesIO(sidecar.encode("utf-8")))
        return Entry(key, md.size, md.content_hash, metadata, headers)

    def _upload(self, key, path, body):
        mode = files.WriteMode.overwrite
        hasher = ContentHasher()

        def chunk():
            data = read_full(body, UPLOAD_CHUNK)
            hasher.update(data)
            return data

        data, following = chunk(), chunk()
        if not following:
            return self._call(key, "files_upload", data, path, mode=mode, mute=True)
        # Nothing is visible at ``path`` until finish commits: a session
        # that breaks off leaves no file behind (Dropbox expires it).
        start = self._call(key, "files_upload_session_start", data)
        offset = len(data)
        data, following = following, chunk()
        while following:
            cursor = files.UploadSessionCursor(start.session_id, offset)
            self._call(key, "files_upload_session_append_v2", data, cursor)
            offset += len(data)
            data, following = following, chunk()
        cursor = files.UploadSessionCursor(start.session_id, offset)
        md = self._call(
            key,
            "files_upload_session_finish",
            data,
            cursor,
            files.CommitInfo(path, mode=mode, mute=True),
        )
        if md.content_hash != hasher.hexdigest():
            self.delete(key)
            raise StoreError(
                self.uri(key), "the upload arrived damaged (content hash mismatch); removed"
            )
        return md

    def delete(self, key):
        for path in (_path(key), _sidecar(key)):
            try:
                self._call(key, "files_delete_v2", path)
            except NotFound:
                pass


def _path(key):
    """The Dropbox API path of a key ('' is the root)."""
    key = key.rstrip("/")
    return "/" + key if key else ""


def _sidecar(key):
    head, tail = posixpath.split(_path(key))
    return "%s/%s/%s.json" % (head.rstrip("/"), INTERNAL_PREFIX, tail)


def _not_found(error):
    """True for the route errors that mean 'no such path'."""
    for attr in ("get_path", "get_path_lookup"):
        try:
            lookup = getattr(error, attr)()
        except (AttributeError, TypeError):
            continue
        if hasattr(lookup, "is_not_found") and lookup.is_not_found():
            return True
    return False
