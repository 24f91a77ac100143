"""A local stand-in for the Google Drive API v3, for the gdrive connector's
tests.

It speaks, over HTTPS (a self-signed certificate for 127.0.0.1 that the
tests trust), the endpoints the connector uses, with Drive v3's wire
formats (https://developers.google.com/drive/api/reference/rest/v3/files):

* ``GET /drive/v3/files``: files.list, with the ``q`` terms the connector
  writes (``'ID' in parents``, ``name =``, ``mimeType =``/``!=``,
  ``trashed =``, joined by ``and``, quotes escaped with ``\\``),
  ``orderBy``, ``pageSize`` and ``pageToken`` paging;
* ``GET /drive/v3/files/ID``: files.get, metadata or ``alt=media`` with
  ``Range`` (``206``, ``416`` for an empty file);
* ``POST /drive/v3/files``: files.create without media (folders);
* ``POST /upload/drive/v3/files`` and ``PATCH /upload/drive/v3/files/ID``:
  files.create and files.update with ``uploadType=multipart`` or
  ``resumable`` (a session URI in ``Location``, chunks ``PUT`` with
  ``Content-Range``, ``308`` with ``Range`` until the last, chunks a
  multiple of 256 KiB);
* ``DELETE /drive/v3/files/ID``: files.delete (a folder with its content);
* ``POST /token``: the OAuth 2.0 token endpoint of a service account's
  key file, for its signed JWT (RS256, checked against its public key).

Responses honour ``fields`` (partial responses), ``size`` is a string,
``appProperties`` merge on update (``null`` removes a key) and are limited
as Drive limits them (30 per app, 124 bytes for key and value); errors are
Drive's JSON error bodies.  A request without a token the server issued
gets ``401``.

Faults, for the error tests: :meth:`DriveServer.cut_download` closes the
socket half-way through a download's body, :meth:`cut_upload` half-way
through an upload's request body (no answer).
"""

import base64
import datetime
import email
import email.policy
import hashlib
import ipaddress
import itertools
import json
import re
import ssl
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from local_server import Handler, LocalServer

FOLDER = "application/vnd.google-apps.folder"
DRIVE_SCOPE = "https://www.googleapis.com/auth/drive"
QUANTUM = 256 << 10
# What a service account's assertion names as its audience, whatever
# token_uri it is sent to.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
CLIENT_ID = "test-client.apps.googleusercontent.com"
_QUOTED = r"'((?:[^'\\]|\\.)*)'"


class DriveError(Exception):
    def __init__(self, status, reason, message, location=None):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message
        self.location = location

    def body(self):
        error = {"domain": "global", "reason": self.reason, "message": self.message}
        if self.location:
            error.update(locationType="parameter", location=self.location)
        return {"error": {"errors": [error], "code": self.status, "message": self.message}}


def make_certificate(directory):
    """(certificate path, key path) of a self-signed certificate for
    127.0.0.1."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = "%s/drive-cert.pem" % directory, "%s/drive-key.pem" % directory
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


class DriveServer(LocalServer):
    """The fake service: a Drive of files and folders in memory.

    Parameters
    ----------
    directory : str
        Where the certificate and the credentials files are written.
    page_size : int
        The most entries files.list answers at once.
    """

    def __init__(self, directory, page_size=3):
        super().__init__(_Handler)
        self.directory = directory
        self.ca_certs, key = make_certificate(directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_certs, key)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.page_size = page_size
        self._ids = itertools.count(1)
        self.root = "root-folder-id"
        self.files = {
            self.root: {
                "id": self.root,
                "name": "My Drive",
                "mimeType": FOLDER,
                "parents": [],
                "appProperties": {},
                "data": None,
                "modifiedTime": self._now(),
            }
        }
        self.uploads = {}  # upload id -> session
        self.tokens = set()  # access tokens issued
        self.pages = {}  # page token -> remaining items
        self.requests = []  # (method, path, query, Range) of each request
        self.service_accounts = {}  # client_email -> public key

    @property
    def url(self):
        return "https://127.0.0.1:%d/" % self.server_address[1]

    @property
    def api_endpoint(self):
        return self.url + "drive/v3/"

    # -- credentials -----------------------------------------------------
    def authorized_user_file(self):
        """An OAuth token file (what an installed app's consent flow
        writes), with an access token valid for an hour.  google-auth
        refreshes such a token only at Google's own token endpoint, which
        these tests never reach."""
        token = "ya29.user-%d" % next(self._ids)
        self.tokens.add(token)
        expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        return self._write(
            "token.json",
            {
                "type": "authorized_user",
                "client_id": CLIENT_ID,
                "client_secret": "secret",
                "refresh_token": "refresh",
                "token": token,
                "expiry": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )

    def service_account_file(self):
        """A service account key file (what the Cloud console hands out)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        email_ = "mlstorlets@test-project.iam.gserviceaccount.com"
        self.service_accounts[email_] = key.public_key()
        return self._write(
            "service-account.json",
            {
                "type": "service_account",
                "project_id": "test-project",
                "private_key_id": "key-1",
                "client_email": email_,
                "client_id": "1234",
                "token_uri": self.url + "token",
                "private_key": key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).decode(),
            },
        )

    def _write(self, name, obj):
        path = "%s/%s" % (self.directory, name)
        with open(path, "w") as f:
            json.dump(obj, f)
        return path

    # -- faults ----------------------------------------------------------
    def cut_download(self, name, times=1):
        self.cut("download", name, times)

    def cut_upload(self, name, times=1):
        self.cut("upload", name, times)

    # -- the Drive -------------------------------------------------------
    def _now(self):
        # Strictly increasing, so that orderBy modifiedTime is well defined.
        now = datetime.datetime(2026, 1, 1) + datetime.timedelta(milliseconds=next(self._ids))
        return now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def new_id(self):
        return "1%s" % hashlib.sha1(b"%d" % next(self._ids)).hexdigest()[:20]

    def find(self, path):
        """The item at ``path`` ('a/b.jpg') below the root, or None."""
        item = self.files[self.root]
        for name in path.split("/"):
            matches = [
                f for f in self.files.values() if item["id"] in f["parents"] and f["name"] == name
            ]
            if not matches:
                return None
            item = max(matches, key=lambda f: f["modifiedTime"])
        return item

    def resource(self, item):
        out = {
            "kind": "drive#file",
            "id": item["id"],
            "name": item["name"],
            "mimeType": item["mimeType"],
            "parents": item["parents"],
            "trashed": False,
            "modifiedTime": item["modifiedTime"],
        }
        if item["appProperties"]:
            out["appProperties"] = dict(item["appProperties"])
        if item["data"] is not None:
            out["size"] = str(len(item["data"]))
            out["md5Checksum"] = item.get("md5") or hashlib.md5(item["data"]).hexdigest()
        return out

    def save(self, meta, data, file_id=None):
        """files.create (``file_id`` None) or files.update of ``data`` with
        the request's metadata ``meta``."""
        with self.lock:
            if file_id is None:
                parents = [
                    self.root if p == "root" else p for p in meta.get("parents") or [self.root]
                ]
                for parent in parents:
                    if self.files.get(parent, {}).get("mimeType") != FOLDER:
                        raise DriveError(404, "notFound", "File not found: %s." % parent, "fileId")
                item = {
                    "id": self.new_id(),
                    "name": meta.get("name", "Untitled"),
                    "parents": parents,
                    "appProperties": {},
                    "mimeType": meta.get("mimeType") or "application/octet-stream",
                    "data": None,
                }
            else:
                item = dict(self.get(file_id))
                if "mimeType" in meta:
                    item["mimeType"] = meta["mimeType"]
            properties = dict(item["appProperties"])
            for key, value in (meta.get("appProperties") or {}).items():
                if value is None:
                    properties.pop(key, None)
                else:
                    properties[key] = value
            for key, value in properties.items():
                if len(key.encode()) + len(value.encode()) > 124:
                    raise DriveError(
                        400,
                        "invalidProperty",
                        "The property %s exceeds the limit of 124 bytes for key and value." % key,
                    )
            if len(properties) > 30:
                raise DriveError(
                    400, "maxProperties", "A file can have at most 30 private properties per app."
                )
            item["appProperties"] = properties
            if item["mimeType"] != FOLDER:
                item["data"] = bytes(data or b"")
                item.pop("md5", None)
            item["modifiedTime"] = self._now()
            self.files[item["id"]] = item
            return item

    def get(self, file_id):
        item = self.files.get(self.root if file_id == "root" else file_id)
        if item is None:
            raise DriveError(404, "notFound", "File not found: %s." % file_id, "fileId")
        return item

    def delete(self, file_id):
        with self.lock:
            item = self.get(file_id)
            for child in [f for f in self.files.values() if item["id"] in f["parents"]]:
                self.delete(child["id"])
            del self.files[item["id"]]


def query(server, q):
    """A predicate for files.list's ``q`` (the terms the connector uses)."""
    tokens = re.findall(r"'(?:[^'\\]|\\.)*'|[^\s']+", q or "")
    terms, term = [], []
    for token in tokens + ["and"]:
        if token == "and":
            terms.append(term)
            term = []
        else:
            term.append(token)
    tests = []
    for term in terms:
        text = " ".join(term)
        value = (
            re.fullmatch(_QUOTED, term[0] if term[1:2] == ["in"] else term[-1])
            if len(term) == 3
            else None
        )
        value = value and re.sub(r"\\(.)", r"\1", value.group(1))
        if value is not None and term[1:] == ["in", "parents"]:
            parent = server.root if value == "root" else value
            tests.append(lambda f, p=parent: p in f["parents"])
        elif value is not None and term[0] in ("name", "mimeType") and term[1] in ("=", "!="):
            tests.append(lambda f, k=term[0], op=term[1], v=value: (f[k] == v) == (op == "="))
        elif term == ["trashed", "=", "false"]:
            tests.append(lambda f: True)
        else:
            raise DriveError(400, "invalid", "Invalid Value: %s" % text, "q")
    return lambda f: all(test(f) for test in tests)


def select(obj, fields):
    """The partial response ``fields`` asks for ('a, b(c, d)')."""
    if not fields:
        return obj
    out = {}
    for field in re.findall(r"[\w/]+(?:\([^)]*\))?", fields):
        name, _, sub = field.partition("(")
        if name not in obj:
            continue
        value = obj[name]
        if sub:
            value = [select(v, sub[:-1]) for v in value]
        out[name] = value
    return out


class _Handler(Handler):
    def _route(self, method):
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.server.requests.append((method, parts.path, params, self.headers.get("Range")))
        length = int(self.headers.get("Content-Length") or 0)
        try:
            if parts.path == "/token":
                return self._token(parse_qs(self.rfile.read(length).decode()))
            token = self.headers.get("Authorization", "")[len("Bearer ") :]
            if token not in self.server.tokens:
                self.rfile.read(length)
                return self._json(
                    401,
                    {
                        "error": {
                            "code": 401,
                            "status": "UNAUTHENTICATED",
                            "message": "Request had invalid authentication credentials.",
                            "errors": [
                                {
                                    "message": "Invalid Credentials",
                                    "domain": "global",
                                    "reason": "authError",
                                    "location": "Authorization",
                                    "locationType": "header",
                                }
                            ],
                        }
                    },
                )
            handler = self._handler(method, parts.path, params)
            if handler is None:
                self.rfile.read(length)
                raise DriveError(404, "notFound", "Not Found")
            handler(params, length)
        except DriveError as err:
            self._json(err.status, err.body())

    def _handler(self, method, path, params):
        match = re.fullmatch(r"/(upload/)?drive/v3/files(?:/([^/]+))?", path)
        if not match:
            return None
        upload, file_id = match.groups()
        self.file_id = file_id
        if upload:
            kind = params.get("uploadType")
            if method == "PUT" and "upload_id" in params:
                return self._resumable_chunk
            if method in ("POST", "PATCH") and kind == "multipart":
                return self._multipart
            if method in ("POST", "PATCH") and kind == "resumable":
                return self._resumable_start
            return None
        return {
            ("GET", False): self._list,
            ("GET", True): self._get,
            ("POST", False): self._create,
            ("DELETE", True): self._delete,
        }.get((method, bool(file_id)))

    do_GET = lambda self: self._route("GET")  # noqa: E731
    do_POST = lambda self: self._route("POST")  # noqa: E731
    do_PUT = lambda self: self._route("PUT")  # noqa: E731
    do_PATCH = lambda self: self._route("PATCH")  # noqa: E731
    do_DELETE = lambda self: self._route("DELETE")  # noqa: E731

    # -- OAuth -----------------------------------------------------------
    def _token(self, form):
        form = {k: v[-1] for k, v in form.items()}
        if form.get(
            "grant_type"
        ) != "urn:ietf:params:oauth:grant-type:jwt-bearer" or not self._jwt_ok(
            form.get("assertion", "")
        ):
            return self._json(400, {"error": "invalid_grant", "error_description": "Bad Request"})
        token = "ya29.test-%d" % next(self.server._ids)
        self.server.tokens.add(token)
        self._json(
            200,
            {
                "access_token": token,
                "expires_in": 3599,
                "token_type": "Bearer",
                "scope": DRIVE_SCOPE,
            },
        )

    def _jwt_ok(self, assertion):
        try:
            header, claims, signature = [
                base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
                for part in assertion.split(".")
            ]
            claims = json.loads(claims)
            key = self.server.service_accounts[claims["iss"]]
            key.verify(
                signature, assertion.rsplit(".", 1)[0].encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except Exception:
            return False
        return (
            json.loads(header)["alg"] == "RS256"
            and claims["aud"] == GOOGLE_TOKEN_AUDIENCE
            and DRIVE_SCOPE in claims.get("scope", "").split()
        )

    # -- files -----------------------------------------------------------
    def _list(self, params, length):
        server = self.server
        if "pageToken" in params:
            items = server.pages.pop(params["pageToken"], None)
            if items is None:
                raise DriveError(400, "invalid", "Invalid Value", "pageToken")
        else:
            match = query(server, params.get("q"))
            with server.lock:
                items = [
                    server.resource(f)
                    for f in server.files.values()
                    if f["id"] != server.root and match(f)
                ]
            order = params.get("orderBy", "name")
            if order not in ("name", "modifiedTime desc"):
                raise DriveError(400, "invalid", "Invalid Value", "orderBy")
            items.sort(key=lambda f: f[order.split()[0]], reverse=order.endswith("desc"))
        size = min(int(params.get("pageSize", 100)), server.page_size)
        page = {"kind": "drive#fileList", "incompleteSearch": False, "files": items[:size]}
        if items[size:]:
            page["nextPageToken"] = "page-%d" % next(server._ids)
            server.pages[page["nextPageToken"]] = items[size:]
        self._json(
            200,
            select(
                page,
                params.get(
                    "fields",
                    "nextPageToken, kind, incompleteSearch, files(kind, id, name, mimeType)",
                ),
            ),
        )

    def _get(self, params, length):
        item = self.server.get(self.file_id)
        if params.get("alt") != "media":
            return self._json(
                200,
                select(
                    self.server.resource(item), params.get("fields", "kind, id, name, mimeType")
                ),
            )
        if item["data"] is None:
            raise DriveError(
                403, "fileNotDownloadable", "Only files with binary content can be downloaded."
            )
        data = item["data"]
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        status, headers = 200, []
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2) or len(data) - 1), len(data) - 1)
            if start >= len(data):
                return self._send(
                    416, b"", "text/plain", [("Content-Range", "bytes */%d" % len(data))]
                )
            headers = [("Content-Range", "bytes %d-%d/%d" % (start, end, len(data)))]
            status, data = 206, data[start : end + 1]
        if self.server.take_cut("download", item["name"]):
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            return self._drop()
        self._send(status, data, item["mimeType"], headers)

    def _create(self, params, length):
        meta = json.loads(self.rfile.read(length) or b"{}")
        item = self.server.save(meta, None)
        self._json(
            200,
            select(self.server.resource(item), params.get("fields", "kind, id, name, mimeType")),
        )

    def _delete(self, params, length):
        self.server.delete(self.file_id)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _body(self, name, length):
        """The request body, or None when the fault cut it."""
        if self.server.take_cut("upload", name):
            self.rfile.read(length // 2)
            self._drop()
            return None
        return self.rfile.read(length)

    def _target(self, meta):
        """The name an upload writes (for faults), checking the file ID."""
        if self.file_id:
            return self.server.get(self.file_id)["name"]
        return meta.get("name")

    def _multipart(self, params, length):
        kind = self.headers.get("Content-Type", "")
        body = self.rfile.read(length)
        message = email.message_from_bytes(
            b"Content-Type: " + kind.encode() + b"\r\n\r\n" + body, policy=email.policy.HTTP
        )
        parts = list(message.iter_parts()) if message.is_multipart() else []
        if len(parts) != 2 or parts[0].get_content_type() != "application/json":
            raise DriveError(400, "badContent", "Bad multipart request")
        meta = json.loads(parts[0].get_payload(decode=True))
        meta.setdefault("mimeType", parts[1].get_content_type())
        if self.server.take_cut("upload", self._target(meta)):
            return self._drop()
        item = self.server.save(meta, parts[1].get_payload(decode=True), self.file_id)
        self._json(
            200,
            select(self.server.resource(item), params.get("fields", "kind, id, name, mimeType")),
        )

    def _resumable_start(self, params, length):
        meta = json.loads(self.rfile.read(length) or b"{}")
        meta.setdefault("mimeType", self.headers.get("X-Upload-Content-Type"))
        name = self._target(meta)
        upload_id = "upload-%d" % next(self.server._ids)
        self.server.uploads[upload_id] = {
            "meta": meta,
            "file_id": self.file_id,
            "name": name,
            "data": bytearray(),
            "fields": params.get("fields"),
        }
        self._send(
            200,
            b"",
            headers=[
                (
                    "Location",
                    self.server.url + "upload/drive/v3/files?"
                    "uploadType=resumable&upload_id=" + upload_id,
                )
            ],
        )

    def _resumable_chunk(self, params, length):
        session = self.server.uploads.get(params["upload_id"])
        if session is None:
            self.rfile.read(length)
            raise DriveError(404, "notFound", "Upload session not found")
        body = self._body(session["name"], length)
        if body is None:
            return
        data = session["data"]
        match = re.fullmatch(
            r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)", self.headers.get("Content-Range", "bytes */*")
        )
        if not match:
            raise DriveError(400, "badRequest", "Bad Content-Range")
        first, _, total = match.groups()
        if first is not None:
            first = int(first)
            if first > len(data):
                raise DriveError(400, "badRequest", "Chunk past the end")
            data.extend(body[len(data) - first :])
        final = total != "*" and len(data) == int(total)
        if not final:
            if first is not None and len(data) % QUANTUM:
                raise DriveError(
                    400, "badRequest", "A chunk must be a multiple of 256 KiB but the last"
                )
            headers = [("Range", "bytes=0-%d" % (len(data) - 1))] if data else []
            return self._send(308, b"", "text/plain", headers)
        del self.server.uploads[params["upload_id"]]
        item = self.server.save(session["meta"], data, session["file_id"])
        self._json(
            200, select(self.server.resource(item), session["fields"] or "kind, id, name, mimeType")
        )
