"""Listing, reading, describing and removing objects of any store.

What ``mlstorlets ls``, ``cat``, ``stat``, ``rm`` and ``storlets`` do, over
every scheme the store registry knows, as ``swift list/stat/delete`` and
``aws s3 ls/rm`` do for theirs.

Filters follow ``aws s3``: ``--exclude`` and ``--include`` patterns
(``fnmatch``: ``*`` matches across ``/``), applied in the order given to the
name relative to the prefix, the last one that matches deciding; with none,
every object is selected.
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
from typing import BinaryIO, Iterable, Iterator, Sequence

from mlstorlets.client.errors import NotFound, StoreError
from mlstorlets.client.stores.base import CHUNK, Entry
from mlstorlets.client.stores.registry import Stores
from mlstorlets.client.uri import parse
from mlstorlets.sandbox import protocol

# Where the storlets of an account are, and what deploy records of them.
STORLET_CONTAINER = "storlet"
MAIN_KEY = "Storlet-Main"
# A storlet's source is read to show its docstring: a bound on that read.
MAX_SOURCE_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class Filter:
    """An ``aws s3``-style ``--exclude``/``--include`` rule list.

    Parameters
    ----------
    rules : sequence of (str, str)
        ``('include' | 'exclude', pattern)`` in the order given.
    """

    rules: tuple = ()

    def selects(self, name: str) -> bool:
        """True when the object named ``name`` (relative to the prefix) is
        selected: the last rule that matches decides."""
        selected = True
        for kind, pattern in self.rules:
            if fnmatch.fnmatchcase(name, pattern):
                selected = kind == "include"
        return selected


def entries(
    registry: Stores, uri: str, selection: Filter = Filter()
) -> Iterator[tuple[str, Entry]]:
    """``(uri, Entry)`` of the object ``uri`` names, or of every object
    under a prefix that ``selection`` selects, in key order.

    Raises
    ------
    NotFound
        The object, or the container or bucket, does not exist.
    """
    store, parsed = registry.open(uri)
    if not parsed.is_prefix:
        entry = store.head(parsed.key)
        if entry is None:
            raise NotFound(uri, "no such object")
        yield str(parsed), entry
        return
    for entry in sorted(store.list(parsed.key), key=lambda e: e.name):
        if selection.selects(entry.name[len(parsed.key) :]):
            yield str(parsed.with_key(entry.name)), entry


def copy_body(registry: Stores, uri: str, out: BinaryIO) -> int:
    """Write the body of the object ``uri`` to ``out``; the bytes written."""
    store, parsed = registry.open(uri)
    if parsed.is_prefix:
        raise StoreError(uri, "cat reads one object, not a prefix")
    with store.reader(parsed.key) as body:
        written = 0
        for chunk in iter(lambda: body.read(CHUNK), b""):
            out.write(chunk)
            written += len(chunk)
    out.flush()
    return written


def describe(uri: str, entry: Entry) -> dict:
    """What ``stat`` shows of one object, as a JSON-ready dict."""
    return {
        "uri": uri,
        "size": entry.size,
        "etag": entry.etag,
        "headers": dict(entry.headers or {}),
        "metadata": dict(entry.metadata or {}),
    }


def remove(registry: Stores, targets: Iterable[str]) -> list[str]:
    """Delete every URI of ``targets``; the URIs deleted."""
    removed = []
    for uri in targets:
        store, parsed = registry.open(uri)
        store.delete(parsed.key)
        removed.append(uri)
    return removed


def deployed_storlets(
    registry: Stores, uri: str | None = None, with_docs: bool = True
) -> list[dict]:
    """The storlets deployed to the account: name, main class, declared
    parameters (their names, and as declared with their types and bounds)
    and output type (``".png image/png"``, or None: as the
    source) and, with ``with_docs``, the first paragraph of the class's
    docstring (read from the storlet's source, never run).

    Parameters
    ----------
    uri : str, optional
        The storlet container (default ``swift://storlet/``).
    """
    uri = uri or "swift://%s/" % STORLET_CONTAINER
    store, parsed = registry.open(uri)
    found = []
    for entry in sorted(store.list(parsed.key), key=lambda e: e.name):
        head = store.head(entry.name) or entry
        metadata = head.metadata or {}
        main = metadata.get(MAIN_KEY, "")
        declared = protocol.parameters_from_metadata(metadata) or ()
        doc = ""
        if with_docs and entry.name.endswith(".py") and entry.size <= MAX_SOURCE_BYTES:
            source, _ = store.get(entry.name)
            doc = storlet_doc(source, main.rpartition(".")[2])
        found.append(
            {
                "name": entry.name,
                "main": main,
                "parameters": [p.partition(":")[0] for p in declared],
                # each as declared, with its type and bounds
                "declarations": list(declared),
                "output_type": metadata.get(protocol.OUTPUT_TYPE_KEY) or None,
                "doc": doc,
                "size": entry.size,
            }
        )
    return found


def storlet_doc(source: bytes, class_name: str) -> str:
    """The first paragraph of ``class_name``'s docstring in ``source`` (or
    of the module's, when the class has none); '' when there is neither or
    the source does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    doc = None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            doc = ast.get_docstring(node)
    doc = doc or ast.get_docstring(tree) or ""
    return " ".join(doc.split("\n\n")[0].split())


def format_size(size: int) -> str:
    """``size`` bytes in the units ``ls -h`` uses."""
    value = float(size)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return ("%d%s" if unit == "B" else "%.1f%s") % (value, unit)
        value /= 1024
    raise AssertionError("unreachable")


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells with every column but the last aligned."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([c.ljust(w) for c, w in zip(row, widths)] + [row[-1]]).rstrip() for row in rows
    )


def check_uri(text: str) -> str:
    """``text`` as a URI, refusing it early with the parser's message."""
    parse(text)
    return text
