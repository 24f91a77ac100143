"""What every store connector must do, as one suite (as fsspec's abstract
tests are): a test module subclasses :class:`StoreContract` and gives the
``store`` fixture, a connector bound to an empty location.

tests/unit/test_store_contract.py runs it over file://, dropbox:// and
gdrive:// (local stand-ins for their APIs);
tests/functional/test_store_contract_cluster.py over swift:// and the
cluster's own s3://.
"""

import hashlib
import io

import pytest

from mlstorlets.client.errors import NotFound, StoreError
from mlstorlets.sandbox import protocol

BODY = bytes(range(256)) * 1000


class Broken(io.RawIOBase):
    """A body that fails after ``good`` bytes, as a dropped download does."""

    def __init__(self, good):
        self.left = good

    def readable(self):
        return True

    def readinto(self, view):
        if self.left <= 0:
            raise OSError("the source went away")
        n = min(len(view), self.left, 4096)
        view[:n] = b"x" * n
        self.left -= n
        return n


def _names(store, prefix):
    """Names under ``prefix``; none when its folder does not exist (an
    object store has no folders; Dropbox and a file system may drop or
    keep an emptied one)."""
    try:
        return sorted(e.name for e in store.list(prefix))
    except NotFound:
        return []


def _etag(store, data):
    if store.etag_kind == "md5":
        return hashlib.md5(data).hexdigest()
    return None  # a store's own hash (Dropbox's): checked where it is made


class StoreContract:
    """The behaviour every connector shares."""

    def test_put_get_head_round_trip(self, store):
        entry = store.put("d/a.bin", BODY, {"source-etag": "e1", "x": "é"})
        assert entry.size == len(BODY)
        body, metadata = store.get("d/a.bin")
        assert body == BODY
        # Keys spelled as Swift spells them, values exactly.
        assert metadata == {"Source-Etag": "e1", "X": "é"}
        head = store.head("d/a.bin")
        assert head.size == len(BODY) and head.metadata == metadata
        expected = _etag(store, BODY)
        assert head.etag and (expected is None or head.etag == expected)
        assert store.exists("d/a.bin") and store.head("d/missing") is None

    def test_content_type_is_kept(self, store):
        store.put("t/page.html", b"<p>hi</p>", {}, {"Content-Type": "text/html"})
        assert store.head("t/page.html").headers.get("Content-Type") == "text/html"

    def test_a_stream_of_unknown_size_is_stored_whole(self, store):
        store.write("s/stream.bin", io.BufferedReader(io.BytesIO(BODY)), {"k": "v"})
        assert store.get("s/stream.bin") == (BODY, {"K": "v"})
        reader = store.reader("s/stream.bin")
        try:
            parts = iter(lambda: reader.read(7777), b"")
            assert b"".join(parts) == BODY and reader.metadata == {"K": "v"}
        finally:
            reader.close()

    def test_listing_is_by_prefix_without_internal_names(self, store):
        for name in ("p/b", "p/a", "p/sub/c", "q/d"):
            store.put(name, name.encode())
        store.put("p/" + protocol.INTERNAL_PREFIX + "-state/s", b"state")
        names = sorted(e.name for e in store.list("p/"))
        assert names == ["p/a", "p/b", "p/sub/c"]
        sizes = {e.name: e.size for e in store.list("p/")}
        assert sizes["p/sub/c"] == len(b"p/sub/c")

    def test_an_overwrite_replaces_body_and_metadata(self, store):
        store.put("o/x", b"first", {"old": "1"})
        store.put("o/x", b"second", {"new": "2"})
        assert store.get("o/x") == (b"second", {"New": "2"})

    def test_delete_is_idempotent(self, store):
        store.put("r/x", b"gone soon")
        store.delete("r/x")
        store.delete("r/x")
        assert store.head("r/x") is None and _names(store, "r/") == []

    def test_a_missing_object_is_named(self, store):
        with pytest.raises(NotFound) as err:
            store.get("m/nothing")
        assert err.value.name == store.uri("m/nothing")
        assert not isinstance(err.value, ValueError)

    def test_a_failed_write_leaves_nothing(self, store):
        with pytest.raises((StoreError, OSError)):
            store.write("f/half", io.BufferedReader(Broken(100_000)), {"k": "v"})
        assert store.head("f/half") is None and _names(store, "f/") == []

    def test_names_reach_the_store_exactly(self, store):
        name = "n/a b&c=d%20e ü.txt"
        store.put(name, b"odd", {"k": "v"})
        assert [e.name for e in store.list("n/")] == [name]
        assert store.get(name) == (b"odd", {"K": "v"})
