"""Connectors to the stores URIs name: Swift, S3, local files, Dropbox.

See ``docs/stores.md``.  Every connector implements
:class:`~mlstorlets.stores.base.Store`; :class:`Stores` picks one for a URI.
"""

from mlstorlets.stores.base import (SOURCE_ETAG, Entry, NotFound, Store,
                                    StoreError)
from mlstorlets.stores.registry import Stores

__all__ = ['SOURCE_ETAG', 'Entry', 'NotFound', 'Store', 'StoreError',
           'Stores']
