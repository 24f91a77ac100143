"""What every store connector offers, and the errors it raises.

A connector is bound to one location (a container, a bucket, a file system,
a Dropbox account) and names objects by keys inside it.  It moves whole
objects: ``get`` returns the body and the user metadata, and ``put`` either
stores the whole object or nothing, so that a job that fails half-way never
leaves a partial output behind.

User metadata is a dict of str to str whose keys are spelled the way Swift
spells them (``'Source-Etag'``, ``str.title`` of the key): that is how a
storlet sees the metadata of its input in the cluster, so a storlet running
on the client sees the same.
"""

import dataclasses
import hashlib

from mlstorlets.sandbox.errors import ObjectError
# Names the project keeps for itself (sidecars, temporary state): one rule
# for every store and the Swift gateway.
from mlstorlets.sandbox.protocol import INTERNAL_PREFIX, is_internal  # noqa: F401

# The user metadata key every output records its source's hash in: an output
# whose Source-Etag matches its source is up to date (resume, skip).
SOURCE_ETAG = 'Source-Etag'


class StoreError(ObjectError):
    """A store refused or failed a request.

    Parameters
    ----------
    uri : str
        The URI the request was about.
    reason : str
        What went wrong, in words a user can act on.
    """

    def __init__(self, uri, reason):
        super().__init__(str(uri), reason)
        self.uri = str(uri)


class NotFound(StoreError):
    """The object, container or bucket does not exist."""


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
    """

    name: str
    size: int
    etag: str = None
    metadata: dict = None


def normalize_metadata(metadata):
    """User metadata with keys spelled the way Swift spells them."""
    return {str(k).title(): str(v) for k, v in (metadata or {}).items()}


def md5_hex(data):
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class Store:
    """The interface of a connector bound to one location.

    Subclasses set ``scheme`` and ``etag_kind`` and implement ``list``,
    ``head``, ``get``, ``put`` and ``delete``; they must be safe to call
    from several threads at once.
    """

    scheme = None
    # What Entry.etag holds: two stores' hashes are compared only when the
    # kinds are equal ('md5' for Swift, S3 and local files; 'dropbox' for
    # Dropbox's content_hash).
    etag_kind = 'md5'
    location = ''

    def uri(self, key=''):
        """The URI of ``key`` in this store."""
        from mlstorlets.client.uri import URI
        return str(URI(self.scheme, self.location, key))

    def list(self, prefix=''):
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

    def get(self, key):
        """(body bytes, metadata dict) of ``key``.

        Raises
        ------
        NotFound
        StoreError
        """
        raise NotImplementedError

    def put(self, key, data, metadata=None):
        """Store ``data`` as ``key`` with ``metadata``, whole or not at all.

        Returns
        -------
        Entry
            The stored object.
        """
        raise NotImplementedError

    def delete(self, key):
        """Remove ``key``; removing a missing key is not an error."""
        raise NotImplementedError

    def exists(self, key):
        return self.head(key) is not None
