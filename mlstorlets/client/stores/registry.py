"""Which connector serves a URI, and whether it is the cluster itself.

:class:`Stores` makes each connector on first use, from the environment
(or from clients passed in), and answers the question placement asks: can
the storlets run in place for this URI?  ``swift://`` is the cluster; an
``s3://`` URI is when its endpoint is the cluster's proxy and its
credentials reach the same account, so that the bucket is the container of
the same name (Swift's ``s3api``).
"""

import os
import socket
import threading
from urllib.parse import urlsplit

from mlstorlets.client.errors import StoreError
from mlstorlets.client.uri import S3_BUCKET_NAME, URI, parse


class Stores:
    """The connectors a job reaches its URIs through.

    Parameters
    ----------
    environ : mapping, optional
        Where credentials are read (default ``os.environ``): ``ST_*`` or
        ``OS_*`` for Swift, ``AWS_*`` for S3, ``DROPBOX_*`` for Dropbox,
        ``GDRIVE_*`` for Google Drive.
    swift : swiftclient.client.Connection, optional
    s3 : botocore S3 client, optional
    dropbox : dropbox.Dropbox, optional
    gdrive : callable, optional
        Returns a new Drive v3 service, called once per thread
        (:func:`mlstorlets.client.stores.gdrive.make_client`).
    segment_size : int, optional
        Write objects bigger than this as segmented objects in segments
        (parts) of this size: Static Large Objects in Swift, multipart
        uploads in S3 (at least 5 MiB there).  Default: Swift segments only
        objects over 5 GiB (in 64 MiB segments), S3 uses 8 MiB parts.
    """

    def __init__(
        self, environ=None, swift=None, s3=None, dropbox=None, segment_size=None, gdrive=None
    ):
        self.environ = os.environ if environ is None else environ
        self.segment_size = segment_size
        self._swift, self._s3, self._dropbox = swift, s3, dropbox
        self._gdrive = gdrive
        self._stores = {}
        self._gateway = None
        self._s3_in_cluster = None
        self._swift_refusal = None
        self._lock = threading.RLock()

    # -- clients ---------------------------------------------------------
    def swift_connection(self):
        """The cluster's connection, or None when none is configured."""
        with self._lock:
            if self._swift is None:
                from mlstorlets.client.connection import connection_from_environment

                try:
                    self._swift = connection_from_environment(self.environ)
                except ValueError as err:
                    # Reported when a swift:// URI needs the connection.
                    self._swift_refusal = str(err)
                    return None
            return self._swift

    def _s3_client(self):
        with self._lock:
            if self._s3 is None:
                from mlstorlets.client.stores.s3 import make_client

                self._s3 = make_client(environ=self.environ)
            return self._s3

    def _dropbox_client(self):
        with self._lock:
            if self._dropbox is None:
                from mlstorlets.client.stores.dropbox import make_client

                self._dropbox = make_client(self.environ)
            return self._dropbox

    def _gdrive_client(self):
        with self._lock:
            if self._gdrive is None:
                from mlstorlets.client.stores.gdrive import make_client

                self._gdrive = make_client(self.environ)
            return self._gdrive

    # -- connectors ------------------------------------------------------
    def open(self, uri):
        """(store, URI) for ``uri``; the store is shared by every URI of
        the same location."""
        uri = parse(uri)
        where = (uri.scheme, uri.location)
        with self._lock:
            if where not in self._stores:
                self._stores[where] = self._make(uri)
            return self._stores[where], uri

    def _make(self, uri):
        if uri.scheme == "swift":
            conn = self.swift_connection()
            if conn is None:
                raise StoreError(uri, self._swift_refusal)
            from mlstorlets.client.stores.swift import SwiftStore

            if self._gateway is None:
                from mlstorlets.client.swift import Swift

                self._gateway = Swift(conn)
            return SwiftStore(self._gateway, uri.location, self.segment_size)
        if uri.scheme == "s3":
            from mlstorlets.client.stores.s3 import S3Store

            return S3Store(self._s3_client(), uri.location, self.segment_size)
        if uri.scheme == "file":
            from mlstorlets.client.stores.local import METADATA_VARIABLE, FileStore

            sidecars = self.environ.get(METADATA_VARIABLE, "") == "sidecar"
            return FileStore("/", sidecars=sidecars)
        if uri.scheme == "gdrive":
            from mlstorlets.client.stores.gdrive import GDriveStore

            return GDriveStore(
                self._gdrive_client(), self.environ.get("GDRIVE_FOLDER_ID") or "root"
            )
        from mlstorlets.client.stores.dropbox import DropboxStore

        return DropboxStore(self._dropbox_client())

    # -- placement -------------------------------------------------------
    def in_cluster(self, uri):
        """True when the storlets can run in place over ``uri``."""
        uri = parse(uri)
        if uri.scheme == "swift":
            return self.swift_connection() is not None
        if uri.scheme != "s3":
            return False
        if self._s3_in_cluster is None:
            self._s3_in_cluster = self._s3_is_cluster()
        return self._s3_in_cluster and self._bucket_is_container(uri)

    def as_swift(self, uri):
        """The ``swift://`` URI of an in-cluster ``s3://`` URI."""
        uri = parse(uri)
        return URI("swift", uri.location, uri.key)

    def _s3_is_cluster(self):
        """Whether the S3 endpoint is this cluster's proxy, for the same
        account."""
        conn = self.swift_connection()
        if conn is None:
            return False
        from botocore.exceptions import BotoCoreError, ClientError
        from swiftclient.exceptions import ClientException

        try:
            storage_url = conn.url or conn.get_auth()[0]
        except (ClientException, OSError):
            return False  # no cluster to compare with: not in place
        client = self._s3_client()
        if not _same_endpoint(client.meta.endpoint_url, storage_url):
            return False
        # Same proxy; same account only if the two APIs see the same
        # buckets (s3api lists the containers whose names are valid buckets).
        try:
            buckets = {b["Name"] for b in client.list_buckets()["Buckets"]}
            _, listing = conn.get_account(full_listing=True)
        except (ClientException, BotoCoreError, ClientError, OSError):
            return False  # either API refused: not one account
        containers = {c["name"] for c in listing if S3_BUCKET_NAME.match(c["name"])}
        return buckets == containers

    def _bucket_is_container(self, uri):
        # The bucket must exist for the account check above to say anything
        # about it; a missing one is reported by the S3 connector.
        from swiftclient.exceptions import ClientException

        try:
            self.swift_connection().head_container(uri.location)
        except ClientException:
            return False
        return True


def _addresses(url):
    """The (address, port) pairs a URL's host and port resolve to."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, TypeError):
        return set()
    return {(info[4][0], info[4][1]) for info in infos}


def _same_endpoint(a, b):
    if not a or not b:
        return False
    if urlsplit(a).scheme != urlsplit(b).scheme:
        return False
    return bool(_addresses(a) & _addresses(b))
