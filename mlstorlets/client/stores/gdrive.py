"""``gdrive://path``: files in Google Drive, through Google's official client.

Keys are paths below a folder (``GDRIVE_FOLDER_ID``, default ``root``, My
Drive); each ``/`` is a Drive folder, made on the first write below it.
Credentials come from the environment, never from an object:
``GDRIVE_CREDENTIALS`` (or ``GOOGLE_APPLICATION_CREDENTIALS``) names a
service-account key or an OAuth authorized-user token file (the JSON
``type`` says which; no other kind is accepted), loaded by google-auth,
which refreshes the access token as it expires, or
``GDRIVE_ACCESS_TOKEN`` is a bare access token.  ``GDRIVE_API_ENDPOINT``
points the client at another Drive v3 endpoint (Private Google Access, a
proxy, the tests' server).  The Drive v3 description is the one
google-api-python-client ships (static discovery: no request for it).

A file up to ``UPLOAD_CHUNK`` bytes goes up in one multipart request; a
bigger one in a resumable upload of ``UPLOAD_CHUNK`` chunks, read from the
body as they are sent (two chunks in memory).  Drive creates the file, or
the new revision of an existing one, only when the last chunk arrived.
Downloads are ranged requests of ``DOWNLOAD_CHUNK`` bytes
(``MediaIoBaseDownload``), checked against the file's ``md5Checksum`` at
their end.

Content-Type is the file's ``mimeType``; user metadata and
Content-Disposition are ``appProperties`` (private to the OAuth client:
at most 30, 124 bytes for key and value; Drive refuses more, and the error
names the object).  Google Docs, Sheets and other files without bytes are
not listed.  Drive allows several files of one name in a folder: the
connector reads the most recently modified and replaces or removes all.
"""

import hashlib
import io
import json
import threading
from http.client import HTTPException

import httplib2
from google.auth import exceptions as auth_exceptions
from google.oauth2 import service_account
from google.oauth2.credentials import Credentials
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient import discovery
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaIoBaseDownload, MediaIoBaseUpload, MediaUpload, build_http

from mlstorlets.client.errors import NotFound, StoreError
from mlstorlets.client.stores.base import (
    Entry,
    Reader,
    Store,
    content_headers,
    is_internal,
    normalize_metadata,
    read_full,
)

SCOPES = ["https://www.googleapis.com/auth/drive"]
FOLDER = "application/vnd.google-apps.folder"
# Resumable chunks must be multiples of 256 KiB.
UPLOAD_CHUNK = 8 << 20
DOWNLOAD_CHUNK = 8 << 20
RETRIES = 2
FIELDS = "id, name, mimeType, size, md5Checksum, appProperties, modifiedTime"
# appProperties keys that are not user metadata: lower case, which
# normalize_metadata never produces.
DISPOSITION = "content-disposition"


def make_client(environ, ca_certs=None):
    """A function returning a new Drive v3 service, for one thread each.

    Parameters
    ----------
    environ : mapping
    ca_certs : str, optional
        The CA bundle to check the endpoint against (default httplib2's, or
        ``HTTPLIB2_CA_CERTS``).

    Raises
    ------
    StoreError
        No credentials in ``environ``, or a credentials file that cannot be
        used.
    """
    path = environ.get("GDRIVE_CREDENTIALS") or environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if path:
        credentials = _from_file(path)
    elif environ.get("GDRIVE_ACCESS_TOKEN"):
        credentials = Credentials(environ["GDRIVE_ACCESS_TOKEN"])
    else:
        raise StoreError(
            "gdrive://",
            "no Google Drive credentials: set "
            "GDRIVE_CREDENTIALS (a service-account key or an "
            "OAuth token file) or GDRIVE_ACCESS_TOKEN",
        )
    endpoint = environ.get("GDRIVE_API_ENDPOINT")
    options = {"api_endpoint": endpoint} if endpoint else None

    def connect():
        http = build_http()  # no redirect on 308, the resumable status
        if ca_certs:
            http.ca_certs = ca_certs
        return discovery.build(
            "drive",
            "v3",
            static_discovery=True,
            http=AuthorizedHttp(credentials, http=http),
            client_options=options,
        )

    return connect


def _from_file(path):
    """The credentials of a service-account key or an authorized-user
    token file, and of no other kind (an external account file could make
    google-auth run a command or read any URL)."""
    try:
        with open(path) as f:
            kind = json.load(f).get("type")
        if kind == "service_account":
            return service_account.Credentials.from_service_account_file(path, scopes=SCOPES)
        if kind == "authorized_user":
            return Credentials.from_authorized_user_file(path, SCOPES)
        reason = "type %r is neither service_account nor authorized_user" % (kind,)
    except (OSError, ValueError, AttributeError) as err:
        reason = err
    raise StoreError("gdrive://", "cannot use the credentials file %s: %s" % (path, reason))


class StreamUpload(MediaUpload):
    """A resumable upload of a stream that cannot seek, of unknown length:
    chunks are read as they are sent, the last one kept for a resend and
    the next one read ahead, so that the size is known before the last
    chunk goes (Drive wants it there).  ``head`` is what was already read
    of ``body``."""

    def __init__(self, body, mimetype, chunksize, head=b""):
        self._body, self._mimetype, self._chunksize = body, mimetype, chunksize
        self._data, self._base, self._next, self._eof = head, 0, 0, False
        self.md5 = hashlib.md5(head)

    def _fill(self, end):
        while not self._eof and self._base + len(self._data) < end:
            more = read_full(self._body, end - self._base - len(self._data))
            self._eof = not more
            self.md5.update(more)
            self._data += more

    def chunksize(self):
        return self._chunksize

    def mimetype(self):
        return self._mimetype

    def resumable(self):
        return True

    def size(self):
        self._fill(self._next + self._chunksize + 1)
        return self._base + len(self._data) if self._eof else None

    def getbytes(self, begin, length):
        self._data, self._base = self._data[begin - self._base :], begin
        self._fill(begin + length)
        self._next = begin + min(length, len(self._data))
        return self._data[:length]


class GDriveStore(Store):
    """Files below one Drive folder, keys being paths without the leading
    ``/``.

    Parameters
    ----------
    connect : callable
        Returns a new Drive v3 service; called once per thread
        (httplib2 connections are not shared between threads).
    root : str
        The ID of the folder keys start in (``'root'`` is My Drive).
    """

    scheme = "gdrive"
    creates_parents = True

    def __init__(self, connect, root="root"):
        self._connect = connect
        self._local = threading.local()
        self._folders = {"": root}
        self._folders_lock = threading.Lock()

    def _files(self):
        service = getattr(self._local, "service", None)
        if service is None:
            service = self._local.service = self._connect()
        return service.files()

    def _call(self, key, request):
        try:
            return request.execute(num_retries=RETRIES)
        except Exception as err:
            raise self._error(key, err) from None

    def _error(self, key, err):
        uri = self.uri(key)
        if isinstance(err, HttpError):
            if err.status_code == 404:
                return NotFound(uri, "not found")
            if err.status_code in (401, 403):
                return StoreError(
                    uri, "Google Drive refused access (%s %s)" % (err.status_code, err.reason)
                )
            return StoreError(uri, "Google Drive refused: %s %s" % (err.status_code, err.reason))
        if isinstance(err, auth_exceptions.GoogleAuthError):
            return StoreError(uri, "Google Drive refused the credentials (%s)" % (err,))
        if isinstance(err, (httplib2.HttpLib2Error, HTTPException, OSError)):
            return StoreError(uri, "cannot reach Google Drive: %s" % (err,))
        return err

    # -- names -----------------------------------------------------------
    def _children(self, key, folder, name=None, folders_only=False):
        """Every item in ``folder`` (of that ``name``), newest first."""
        query = ["'%s' in parents" % _quote(folder), "trashed = false"]
        if name is not None:
            query.append("name = '%s'" % _quote(name))
        if folders_only:
            query.append("mimeType = '%s'" % FOLDER)
        files = self._files()
        request = files.list(
            q=" and ".join(query),
            pageSize=1000,
            orderBy="modifiedTime desc",
            fields="nextPageToken, files(%s)" % FIELDS,
            supportsAllDrives=True,
            includeItemsFromAllDrives=True,
        )
        while request is not None:
            page = self._call(key, request)
            for item in page.get("files", ()):
                if name is None or item["name"] == name:
                    yield item
            request = files.list_next(request, page)

    def _folder(self, key, path, create=False):
        """The ID of the folder ``path`` ('a/b'), or None."""
        if path in self._folders:
            return self._folders[path]
        parent_path, _, name = path.rpartition("/")
        parent = self._folder(key, parent_path, create)
        if parent is None:
            return None
        with self._folders_lock:  # two threads must not make two folders
            if path not in self._folders:
                found = next(self._children(key, parent, name, True), None)
                if found is None and create:
                    found = self._call(
                        key,
                        self._files().create(
                            body={"name": name, "mimeType": FOLDER, "parents": [parent]},
                            fields="id",
                            supportsAllDrives=True,
                        ),
                    )
                if found is None:
                    return None
                self._folders[path] = found["id"]
            return self._folders[path]

    def _lookup(self, key, create=False):
        """(parent folder ID, [files named ``key``, newest first])."""
        folder, _, name = key.rpartition("/")
        parent = self._folder(key, folder, create)
        if parent is None:
            return None, []
        return parent, [
            item for item in self._children(key, parent, name) if item["mimeType"] != FOLDER
        ]

    # -- the Store interface ---------------------------------------------
    def list(self, prefix=""):
        folder = prefix.rpartition("/")[0]
        top = self._folder(prefix, folder)
        if top is None:
            raise NotFound(self.uri(prefix), "no such folder")
        entries, pending = [], [(folder, top)]
        while pending:
            path, folder_id = pending.pop()
            for item in self._children(prefix, folder_id):
                key = path + "/" + item["name"] if path else item["name"]
                if item["mimeType"] == FOLDER:
                    if (key + "/").startswith(prefix[: len(key) + 1]):
                        pending.append((key, item["id"]))
                elif "md5Checksum" in item and key.startswith(prefix) and not is_internal(key):
                    entries.append(self._entry(key, item))
        entries.sort(key=lambda e: e.name)
        return entries

    def _entry(self, key, item):
        properties = dict(item.get("appProperties") or {})
        headers = {
            "Content-Type": item["mimeType"],
            "Content-Disposition": properties.pop(DISPOSITION, None),
        }
        return Entry(
            key,
            int(item["size"]),
            item["md5Checksum"],
            normalize_metadata(properties),
            content_headers(headers),
        )

    def head(self, key):
        _, found = self._lookup(key)
        if not found or "md5Checksum" not in found[0]:
            return None
        return self._entry(key, found[0])

    def reader(self, key):
        _, found = self._lookup(key)
        if not found:
            raise NotFound(self.uri(key), "not found")
        if "md5Checksum" not in found[0]:
            raise StoreError(self.uri(key), "a %s has no content to read" % found[0]["mimeType"])
        entry = self._entry(key, found[0])
        request = self._files().get_media(fileId=found[0]["id"], supportsAllDrives=True)
        return Reader(self.uri(key), self._chunks(key, request), entry, (hashlib.md5(), entry.etag))

    def _chunks(self, key, request):
        buf = io.BytesIO()
        download = MediaIoBaseDownload(buf, request, chunksize=DOWNLOAD_CHUNK)
        done = False
        while not done:
            try:
                _, done = download.next_chunk(num_retries=RETRIES)
            except (HttpError, auth_exceptions.GoogleAuthError) as err:
                raise self._error(key, err) from None
            # Others (a connection lost) the Reader reports as a download
            # that broke off.
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()

    def write(self, key, body, metadata=None, headers=None, size=None):
        metadata = normalize_metadata(metadata)
        headers = content_headers(headers)
        mimetype = headers.get("Content-Type", "application/octet-stream")
        properties = dict(metadata)
        if "Content-Disposition" in headers:
            properties[DISPOSITION] = headers["Content-Disposition"]
        parent, found = self._lookup(key, create=True)
        first = read_full(body, UPLOAD_CHUNK + 1)
        if len(first) <= UPLOAD_CHUNK:
            media = MediaIoBaseUpload(io.BytesIO(first), mimetype, resumable=False)
            md5 = hashlib.md5(first)
        else:
            media = StreamUpload(body, mimetype, UPLOAD_CHUNK, first)
            md5 = media.md5
        files = self._files()
        if found:
            # A new revision of the newest: its ID and sharing stay.  Keys
            # it had and this write lacks are removed by setting them null.
            old = found[0].get("appProperties") or {}
            properties.update({k: None for k in old if k not in properties})
            request = files.update(
                fileId=found[0]["id"],
                media_body=media,
                fields=FIELDS,
                body={"mimeType": mimetype, "appProperties": properties},
                supportsAllDrives=True,
            )
        else:
            request = files.create(
                media_body=media,
                fields=FIELDS,
                supportsAllDrives=True,
                body={
                    "name": key.rpartition("/")[2],
                    "parents": [parent],
                    "mimeType": mimetype,
                    "appProperties": properties,
                },
            )
        item = self._call(key, request)
        if item.get("md5Checksum") != md5.hexdigest():
            self._remove(key, item["id"])
            raise StoreError(self.uri(key), "the upload arrived damaged (MD5 mismatch); removed")
        for duplicate in found[1:]:
            self._remove(key, duplicate["id"])
        return self._entry(key, item)

    def delete(self, key):
        for item in self._lookup(key)[1]:
            self._remove(key, item["id"])

    def _remove(self, key, file_id):
        try:
            self._call(key, self._files().delete(fileId=file_id, supportsAllDrives=True))
        except NotFound:
            pass


def _quote(value):
    """``value`` inside single quotes of a Drive query."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
