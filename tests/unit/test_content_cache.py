"""ContentCache: heavy state kept across requests, keyed by content."""

import doctest

import pytest

from mlstorlets.sandbox import content_cache
from mlstorlets.sandbox.content_cache import ContentCache


def counting():
    calls = []

    def build(data):
        calls.append(bytes(data))
        return object()

    return build, calls


def test_the_same_content_is_built_once():
    cache = ContentCache()
    build, calls = counting()
    first = cache.get(b"model v1", build)
    assert cache.get(bytearray(b"model v1"), build) is first
    assert len(calls) == 1
    # Other content, even under the same object name, is another entry.
    assert cache.get(b"model v2", build) is not first
    assert len(calls) == 2


def test_bounded_in_entries_least_recently_used_out():
    cache = ContentCache(max_items=2)
    build, calls = counting()
    a = cache.get(b"a", build)
    cache.get(b"b", build)
    cache.get(b"a", build)  # a is now the most recent
    cache.get(b"c", build)  # b goes
    assert len(cache) == 2
    assert ContentCache.key_of(b"b") not in cache
    assert cache.get(b"a", build) is a
    assert calls == [b"a", b"b", b"c"]


def test_bounded_in_bytes():
    cache = ContentCache(max_items=10, max_bytes=10)
    build, calls = counting()
    cache.get(b"123456", build)
    cache.get(b"abcdef", build)  # 12 bytes: the first goes
    assert len(cache) == 1
    cache.get(b"x" * 11, build)  # never kept
    assert ContentCache.key_of(b"x" * 11) not in cache
    assert ContentCache.key_of(b"abcdef") in cache


def test_a_failed_build_keeps_nothing():
    cache = ContentCache()

    def broken(data):
        raise ValueError("not a model")

    with pytest.raises(ValueError):
        cache.get(b"bad", broken)
    assert len(cache) == 0


def test_an_explicit_key_names_the_content():
    cache = ContentCache()
    build, calls = counting()
    cache.get(b"body", build, key="etag-1")
    cache.get(b"body", build, key="etag-1")
    assert "etag-1" in cache and len(calls) == 1


def test_bounds_must_hold_something():
    with pytest.raises(ValueError):
        ContentCache(max_items=0)


def test_docstring_example():
    assert doctest.testmod(content_cache).failed == 0
