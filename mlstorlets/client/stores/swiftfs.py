"""``swift://container/object`` for fsspec, and so for pandas, pyarrow and
dask: ``pandas.read_csv('swift://data/train.csv')``.

Registered under fsspec's entry point group ``fsspec.specs`` as protocol
``swift``.  Credentials come from the environment as for every mlstorlets
URI (``ST_*`` or ``OS_*``), or from ``stores=`` (a
:class:`~mlstorlets.client.stores.Stores`).  It is a thin layer over
:class:`~mlstorlets.client.stores.swift.SwiftStore`: a file opened for
reading fetches ranges as it is read (fsspec's read-ahead cache); one
opened for writing is spooled to a temporary file and uploaded at
``close`` through the store (SwiftService, segmented above the store's
segment size, content headers and metadata as given), whole or not at all.
"""

import tempfile

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from mlstorlets.client.errors import NotFound
from mlstorlets.client.stores.registry import Stores

# Bytes of a file being written that stay in memory before spooling.
SPOOL = 8 << 20


class SwiftFileSystem(AbstractFileSystem):
    """The containers of the account the credentials reach.

    Parameters
    ----------
    stores : Stores, optional
        Default: ``Stores(segment_size=segment_size)`` from the
        environment.
    segment_size : int, optional
        Files bigger than this are written as Static Large Objects.
    """

    protocol = "swift"
    root_marker = ""

    def __init__(self, stores=None, segment_size=None, **kwargs):
        super().__init__(**kwargs)
        self.stores = stores or Stores(segment_size=segment_size)

    def _store(self, path):
        """(SwiftStore of the container, key) of ``path``."""
        container, _, key = self._strip_protocol(path).partition("/")
        store, _ = self.stores.open("swift://%s/" % container)
        return store, key

    def ls(self, path, detail=True, **kwargs):
        path = self._strip_protocol(path).rstrip("/")
        store, key = self._store(path)
        prefix = key + "/" if key else ""
        try:
            entries, folders = store.list_folder(prefix)
        except NotFound:
            raise FileNotFoundError(path) from None
        if key and not entries and not folders:
            entry = store.head(key)
            if entry is None:
                raise FileNotFoundError(path)
            entries = [entry]
        found = [self._file_info(store, e) for e in entries] + [
            {"name": "%s/%s" % (store.location, f.rstrip("/")), "size": 0, "type": "directory"}
            for f in folders
        ]
        return found if detail else [f["name"] for f in found]

    @staticmethod
    def _file_info(store, entry):
        return dict(
            {
                "name": "%s/%s" % (store.location, entry.name),
                "size": entry.size,
                "type": "file",
                "ETag": entry.etag,
            },
            **(entry.headers or {}),
        )

    def info(self, path, **kwargs):
        path = self._strip_protocol(path).rstrip("/")
        store, key = self._store(path)
        entry = store.head(key) if key else None
        if entry is not None:
            return self._file_info(store, entry)
        entries, folders = store.list_folder(key + "/" if key else "")
        if entries or folders or not key:
            return {"name": path, "size": 0, "type": "directory"}
        raise FileNotFoundError(path)

    def _open(
        self, path, mode="rb", block_size="default", autocommit=True, cache_options=None, **kwargs
    ):
        return SwiftFile(
            self, path, mode, block_size, autocommit, cache_options=cache_options, **kwargs
        )

    def cat_file(self, path, start=None, end=None, **kwargs):
        store, key = self._store(path)
        if start is None and end is None:
            return store.get(key)[0]
        return super().cat_file(path, start, end, **kwargs)

    def rm_file(self, path):
        store, key = self._store(path)
        store.delete(key)

    def _rm(self, path):
        self.rm_file(path)

    def mkdir(self, path, create_parents=True, **kwargs):
        # Folders do not exist in Swift; a container does.
        store, _ = self._store(path)
        store.ensure_container()

    def makedirs(self, path, exist_ok=False):
        self.mkdir(path)


class SwiftFile(AbstractBufferedFile):
    """One object, read by ranges or written whole at close."""

    def _fetch_range(self, start, end):
        store, key = self.fs._store(self.path)
        return store.read_range(key, start, end)

    def _initiate_upload(self):
        self._spool = tempfile.SpooledTemporaryFile(SPOOL)

    def _upload_chunk(self, final=False):
        self.buffer.seek(0)
        self._spool.write(self.buffer.read())
        if final:
            self._spool.seek(0)
            store, key = self.fs._store(self.path)
            try:
                store.write(
                    key,
                    self._spool,
                    headers=self.kwargs.get("headers"),
                    metadata=self.kwargs.get("metadata"),
                    size=self.offset + self.buffer.tell(),
                )
            finally:
                self._spool.close()
        return True

    def discard(self):
        spool = getattr(self, "_spool", None)
        if spool is not None:
            spool.close()
