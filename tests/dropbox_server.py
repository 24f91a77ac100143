"""A local stand-in for the Dropbox API v2, for the Dropbox connector's tests.

It speaks the endpoints the connector uses (``files/list_folder`` and
``/continue``, ``files/get_metadata``, ``files/download``, ``files/upload``,
``files/upload_session/start``, ``/append_v2`` and ``/finish``,
``files/delete_v2``) with Dropbox's wire formats: RPC arguments in a JSON
body, content arguments in the ``Dropbox-API-Arg`` header, download results
in ``Dropbox-API-Result``, route errors as ``409`` with a tagged union, a
bad token as ``401``.  It checks the ``content_hash`` a client sends and
that each route is asked of its own host (``api.`` or ``content.``).

It binds to 127.0.0.1 only.  :func:`session_for` gives a requests session
whose transport sends the SDK's ``https://*.dropboxapi.com`` requests here:
the SDK's hosts are fixed, but it takes any ``session=``.

Faults, for the error tests: :meth:`DropboxServer.cut_download` closes the
socket half-way through a download's body, :meth:`cut_upload` half-way
through an upload's request body (no answer).
"""

import hashlib
import itertools
import json
import time
from urllib.parse import urlsplit, urlunsplit

import requests
from local_server import Handler, LocalServer
from requests.adapters import HTTPAdapter

TOKEN = "test-token"
CONTENT_ROUTES = (
    "files/download",
    "files/upload",
    "files/upload_session/start",
    "files/upload_session/append_v2",
    "files/upload_session/finish",
)


def dropbox_hash(data):
    block = 4 << 20
    return hashlib.sha256(
        b"".join(hashlib.sha256(data[i : i + block]).digest() for i in range(0, len(data), block))
    ).hexdigest()


class RouteError(Exception):
    def __init__(self, summary, error, status=409):
        super().__init__(summary)
        self.summary, self.error, self.status = summary, error, status


def _not_found(tag="path"):
    return RouteError("%s/not_found/" % tag, {".tag": tag, tag: {".tag": "not_found"}})


class DropboxServer(LocalServer):
    """The fake service: files in memory, keyed by lower-cased path."""

    def __init__(self, page_size=3):
        super().__init__(_Handler)
        self.files = {}  # path_lower -> (path_display, bytes, rev)
        self.sessions = {}  # session id -> bytearray
        self.cursors = {}  # cursor -> remaining entries
        self.page_size = page_size
        self.requests = []  # (host, route) of every request
        self._ids = itertools.count(1)

    @property
    def address(self):
        return self.server_address[:2]

    def fold(self, path):
        return (path or "").lower()

    def cut_download(self, path, times=1):
        self.cut("files/download", path, times)

    def cut_upload(self, path, times=1):
        self.cut("files/upload", path, times)

    # -- the file system -----------------------------------------------
    def metadata(self, path_lower):
        display, data, rev = self.files[path_lower]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return {
            ".tag": "file",
            "name": display.rsplit("/", 1)[-1],
            "id": "id:%s" % hashlib.md5(path_lower.encode()).hexdigest()[:12],
            "client_modified": stamp,
            "server_modified": stamp,
            "rev": rev,
            "size": len(data),
            "path_lower": path_lower,
            "path_display": display,
            "content_hash": dropbox_hash(data),
            "is_downloadable": True,
        }

    def folders(self):
        names = {}
        for display, _, _ in self.files.values():
            parts = display.split("/")[1:-1]
            for i in range(1, len(parts) + 1):
                folder = "/" + "/".join(parts[:i])
                names[folder.lower()] = folder
        return names

    def store(self, path, data):
        with self.lock:
            if path.lower() in self.folders():
                raise RouteError(
                    "path/conflict/folder/",
                    {
                        ".tag": "path",
                        "reason": {".tag": "conflict", "conflict": {".tag": "folder"}},
                        "upload_session_id": "",
                    },
                )
            rev = "%09x" % next(self._ids)
            self.files[path.lower()] = (path, bytes(data), rev)
            return self.metadata(path.lower())


class _Handler(Handler):
    def do_POST(self):
        server = self.server
        route = self.path[len("/2/") :]
        host = self.headers.get("Host", "")
        server.requests.append((host, route))
        expected = "content" if route in CONTENT_ROUTES else "api"
        if not host.startswith(expected + "."):
            return self._send(
                400, b"route %s asked of host %s" % (route.encode(), host.encode()), "text/plain"
            )
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            return self._json(
                401,
                {
                    "error_summary": "invalid_access_token/",
                    "error": {".tag": "invalid_access_token"},
                },
            )
        length = int(self.headers.get("Content-Length") or 0)
        arg_header = self.headers.get("Dropbox-API-Arg")
        arg = json.loads(arg_header) if arg_header else None
        if route == "files/upload" and server.take_cut(route, arg["path"]):
            self.rfile.read(length // 2)
            return self._drop()
        body = self.rfile.read(length)
        if arg is None:
            arg = json.loads(body or b"null")
        handler = getattr(self, "route_" + route.replace("/", "_"), None)
        if handler is None:
            return self._send(404, b"unknown route", "text/plain")
        try:
            handler(arg, body)
        except RouteError as err:
            self._json(err.status, {"error_summary": err.summary, "error": err.error})

    def _check_hash(self, arg, body):
        if arg.get("content_hash") and arg["content_hash"] != dropbox_hash(body):
            raise RouteError("content_hash_mismatch/", {".tag": "content_hash_mismatch"}, 400)

    # -- routes --------------------------------------------------------
    def route_files_get_metadata(self, arg, body):
        path = arg["path"].lower()
        if path in self.server.files:
            return self._json(200, self.server.metadata(path))
        folders = self.server.folders()
        if path in folders:
            name = folders[path]
            return self._json(
                200,
                {
                    ".tag": "folder",
                    "id": "id:f",
                    "name": name.rsplit("/", 1)[-1],
                    "path_lower": path,
                    "path_display": name,
                },
            )
        raise _not_found()

    def route_files_list_folder(self, arg, body):
        server = self.server
        root = arg["path"].lower()
        folders = server.folders()
        if root and root not in folders:
            if root in server.files:
                raise RouteError(
                    "path/not_folder/", {".tag": "path", "path": {".tag": "not_folder"}}
                )
            raise _not_found()

        def below(p):
            return p.startswith(root + "/") and (
                arg.get("recursive") or "/" not in p[len(root) + 1 :]
            )

        entries = [
            {
                ".tag": "folder",
                "id": "id:f",
                "path_lower": lower,
                "path_display": display,
                "name": display.rsplit("/", 1)[-1],
            }
            for lower, display in sorted(folders.items())
            if below(lower)
        ]
        entries += [server.metadata(p) for p in sorted(server.files) if below(p)]
        self._page(entries)

    def route_files_list_folder_continue(self, arg, body):
        entries = self.server.cursors.pop(arg["cursor"], None)
        if entries is None:
            raise RouteError("reset/", {".tag": "reset"})
        self._page(entries)

    def _page(self, entries):
        size = self.server.page_size
        page, rest = entries[:size], entries[size:]
        cursor = "cursor-%d" % next(self.server._ids)
        if rest:
            self.server.cursors[cursor] = rest
        self._json(200, {"entries": page, "cursor": cursor, "has_more": bool(rest)})

    def route_files_download(self, arg, body):
        server = self.server
        path = arg["path"].lower()
        if path not in server.files:
            raise _not_found()
        data = server.files[path][1]
        result = json.dumps(server.metadata(path))
        if server.take_cut("files/download", path):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Dropbox-API-Result", result)
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            return self._drop()
        self._send(200, data, "application/octet-stream", [("Dropbox-API-Result", result)])

    def route_files_upload(self, arg, body):
        self._check_hash(arg, body)
        self._json(200, self.server.store(arg["path"], body))

    def route_files_upload_session_start(self, arg, body):
        self._check_hash(arg, body)
        session = "session-%d" % next(self.server._ids)
        self.server.sessions[session] = bytearray(body)
        self._json(200, {"session_id": session})

    def _append(self, cursor, body):
        data = self.server.sessions.get(cursor["session_id"])
        if data is None:
            raise RouteError("not_found/", {".tag": "not_found"})
        if cursor["offset"] != len(data):
            raise RouteError(
                "incorrect_offset/", {".tag": "incorrect_offset", "correct_offset": len(data)}
            )
        data.extend(body)
        return data

    def route_files_upload_session_append_v2(self, arg, body):
        self._check_hash(arg, body)
        self._append(arg["cursor"], body)
        self._json(200, None)

    def route_files_upload_session_finish(self, arg, body):
        self._check_hash(arg, body)
        data = self._append(arg["cursor"], body)
        del self.server.sessions[arg["cursor"]["session_id"]]
        self._json(200, self.server.store(arg["commit"]["path"], data))

    def route_files_delete_v2(self, arg, body):
        path = arg["path"].lower()
        with self.server.lock:
            if path not in self.server.files:
                raise _not_found("path_lookup")
            metadata = self.server.metadata(path)
            del self.server.files[path]
        self._json(200, {"metadata": metadata})


class _ToLocal(HTTPAdapter):
    """Sends every request to ``address`` over plain HTTP, keeping the
    original host in ``Host`` (the server checks it)."""

    def __init__(self, address, **kwargs):
        super().__init__(**kwargs)
        self.address = address

    def send(self, request, **kwargs):
        parts = urlsplit(request.url)
        request.headers["Host"] = parts.netloc
        request.url = urlunsplit(("http", "%s:%d" % self.address, parts.path, parts.query, ""))
        return super().send(request, **kwargs)


def session_for(server):
    """A requests session whose ``https://`` requests reach ``server``."""
    session = requests.Session()
    session.mount("https://", _ToLocal(server.address))
    return session
