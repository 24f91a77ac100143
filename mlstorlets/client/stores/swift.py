"""``swift://``: a container of the default cluster, through swiftclient.

Every request goes through the client's Swift gateway
(:class:`mlstorlets.client.swift.Swift`): a connection per thread, one rule
for internal names, errors as one-line reasons.
A ``PUT`` carries the body's MD5 as its ETag, so that Swift refuses a body
that arrived damaged, and commits an object only when all of it arrived.
"""

from urllib.parse import quote

from mlstorlets.client.stores.base import (Entry, NotFound, Store, StoreError,
                                    md5_hex, normalize_metadata)
from mlstorlets.client.swift import Swift, SwiftError

META = 'x-object-meta-'


class SwiftStore(Store):
    """Objects of one container.

    Parameters
    ----------
    conn : swiftclient.client.Connection or mlstorlets.client.swift.Swift
    container : str
    """

    scheme = 'swift'

    def __init__(self, conn, container):
        self.swift = conn if isinstance(conn, Swift) else Swift(conn)
        self.location = container

    def _call(self, key, method, *args, **kwargs):
        try:
            return self.swift.call(self.uri(key), method, *args, **kwargs)
        except SwiftError as err:
            if err.status == 404:
                raise NotFound(self.uri(key), 'not found') from None
            raise StoreError(self.uri(key), err.reason) from None

    def list(self, prefix=''):
        try:
            listing = self.swift.listing(self.location, prefix)
        except SwiftError as err:
            if err.status == 404:
                raise NotFound(self.uri(prefix), 'no such container') \
                    from None
            raise StoreError(self.uri(prefix), err.reason) from None
        return [Entry(e['name'], e['bytes'], e['hash']) for e in listing]

    def head(self, key):
        try:
            headers = self._call(key, 'head_object', self.location, key)
        except NotFound:
            return None
        return Entry(key, int(headers['content-length']),
                     headers['etag'].strip('"'), _metadata(headers))

    def get(self, key):
        headers, body = self._call(key, 'get_object', self.location, key)
        return body, _metadata(headers)

    def put(self, key, data, metadata=None):
        headers = {'X-Object-Meta-' + k: v
                   for k, v in normalize_metadata(metadata).items()}
        etag = md5_hex(data)
        self._call(key, 'put_object', self.location, key, data,
                   etag=etag, headers=headers)
        return Entry(key, len(data), etag, normalize_metadata(metadata))

    def delete(self, key):
        try:
            self._call(key, 'delete_object', self.location, key)
        except NotFound:
            pass

    def copy_from(self, container, name, key, metadata=None):
        """Make ``key`` a server-side copy of ``container/name``, keeping
        its metadata and adding ``metadata`` (no data moves)."""
        headers = {'X-Object-Meta-' + k: v
                   for k, v in normalize_metadata(metadata).items()}
        headers['X-Copy-From'] = quote('/%s/%s' % (container, name))
        self._call(key, 'put_object', self.location, key, b'',
                   headers=headers)

    def ensure_container(self):
        """Create the container when it does not exist (as ``swift upload``
        does)."""
        self._call('', 'put_container', self.location)


def _metadata(headers):
    return normalize_metadata({k[len(META):]: v for k, v in headers.items()
                               if k.startswith(META)})
