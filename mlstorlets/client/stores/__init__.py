"""Connectors to the stores URIs name: Swift, S3, local files, Dropbox,
Google Drive.

See ``docs/stores.md``.  Every connector implements
:class:`~mlstorlets.client.stores.base.Store`; :class:`Stores` picks one for a URI.
"""

from mlstorlets.client.errors import NotFound, StoreError
from mlstorlets.client.stores.base import SOURCE_ETAG, Entry, Store
from mlstorlets.client.stores.registry import Stores

__all__ = ["SOURCE_ETAG", "Entry", "NotFound", "Store", "StoreError", "Stores"]
