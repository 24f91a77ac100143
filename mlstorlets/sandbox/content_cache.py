"""Heavy state a storlet keeps across requests, keyed by content.

The sandbox's agent (:mod:`mlstorlets.server.agent`) runs a storlet in
worker processes that serve request after request, so what a storlet
builds at module level survives from one request to the next in the same
worker.  A model parsed from an object is the typical case: parsing it
(skops audits and rebuilds every array) costs more than applying it, and
the same model object comes with request after request.

:class:`ContentCache` keeps such objects keyed by a digest of the bytes
they were built from (or by a key the caller has, such as an ETag), least
recently used first out, bounded in entries and in the size of what they
were built from.  Keyed by content, a changed model is a new entry: nothing
stale is ever served.  The objects are shared between the requests a
worker serves, which are requests of the same account (one sandbox per
account): treat them as read-only.
"""

import collections
import hashlib
import threading


class ContentCache(object):
    """A bounded, least-recently-used map from content to what it builds.

    Parameters
    ----------
    max_items : int
        Entries kept at most.
    max_bytes : int
        Total size of the contents the kept entries were built from; an
        entry built from more than this is returned but not kept.

    Examples
    --------
    >>> MODELS = ContentCache(max_items=2)
    >>> built = []
    >>> MODELS.get(b'weights', lambda data: built.append(data) or len(data))
    7
    >>> MODELS.get(b'weights', lambda data: built.append(data) or len(data))
    7
    >>> len(built)
    1
    """

    def __init__(self, max_items=4, max_bytes=512 * 1024**2):
        if max_items < 1 or max_bytes < 1:
            raise ValueError("a cache must hold at least one entry and byte")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._entries = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def key_of(data):
        """The digest that names ``data`` (bytes-like)."""
        return hashlib.sha256(data).hexdigest()

    def get(self, data, build, key=None):
        """``build(data)``, or what it returned for the same content before.

        Parameters
        ----------
        data : bytes-like
            The content.
        build : callable
            ``build(data)`` makes the object; an exception it raises goes
            to the caller and nothing is kept.
        key : str, optional
            Names the content when the caller knows it (an ETag); by
            default its SHA-256.
        """
        key = key if key is not None else self.key_of(data)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
        value = build(data)
        size = len(data)
        if size > self.max_bytes:
            return value
        with self._lock:
            if key not in self._entries:
                self._entries[key] = (value, size)
                self._bytes += size
            while len(self._entries) > self.max_items or self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
        return value

    def __len__(self):
        return len(self._entries)

    def __contains__(self, key):
        return key in self._entries

    def clear(self):
        with self._lock:
            self._entries.clear()
            self._bytes = 0
