"""Names of objects and sets of objects: ``swift://container/object``.

A name ending in ``/`` (or naming a bare container) is a prefix: the set of
objects whose names start with it.
"""

SCHEME = "swift://"


def parse_uri(uri):
    """``swift://container/object`` -> (container, object); object may be a prefix."""
    if not isinstance(uri, str) or not uri.startswith(SCHEME):
        raise ValueError(f"not a swift:// URI: {uri!r}")
    container, _, obj = uri[len(SCHEME):].partition("/")
    if not container:
        raise ValueError(f"no container in {uri!r}")
    return container, obj


def format_uri(container, obj):
    return f"{SCHEME}{container}/{obj}"
