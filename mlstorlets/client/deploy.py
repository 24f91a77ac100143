"""Upload storlets and the library they import to a Swift account.

A storlet module in ``storlets/`` is one Python file holding one class whose
name ends in ``Storlet``; it is registered as ``<module>.<Class>``.  The
library code the storlets import (``mlstorlets`` itself) travels as a
dependency object, ``mlstorlets-<hash>.zip``, which the engine places beside
each storlet in the sandbox, so a new version of the library needs no new
sandbox image.

The zip is built reproducibly and named by its content.  The engine never
refreshes a dependency a node has cached (only storlets are compared with
Swift), so a library that changes must change name.  Each storlet module
declares ``LIBRARY = None``; the upload sets it to the current zip's name,
so a new library changes every storlet that uses it: they are uploaded
again, and the engine restarts their daemons with exactly that library.  An
unchanged library uploads nothing.
"""

import ast
import dataclasses
import hashlib
import io
import os
import re
import sys
import zipfile

import mlstorlets
from mlstorlets.client.batch import gateway
from mlstorlets.client.errors import UsageError
from mlstorlets.sandbox import protocol

LIBRARY_PREFIX = "mlstorlets-"
# The line of a storlet module that deploy fills in with the library's name.
LIBRARY_LINE = re.compile(rb"^LIBRARY = None$", re.M)
# What a sandbox imports: the package's root and its sandbox part, nothing
# of the client or the servers (see mlstorlets.sandbox).
SANDBOX_PARTS = ("__init__.py", "sandbox")


@dataclasses.dataclass
class Artifact:
    """One object to upload: its name, body and registration headers."""

    container: str
    name: str
    body: bytes
    headers: dict

    @property
    def etag(self):
        return hashlib.md5(self.body).hexdigest()


def default_source_dir():
    """The project's ``storlets/`` directory: in a checkout, or installed."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(mlstorlets.__file__)))
    for candidate in (
        os.path.join(here, "storlets"),
        os.path.join(sys.prefix, "share", "mlstorlets", "storlets"),
    ):
        if os.path.isdir(candidate):
            return candidate
    raise UsageError("cannot find the storlets directory of mlstorlets; pass it explicitly")


def storlet_class(source, path):
    """The name of the storlet class defined by the module ``source``."""
    tree = ast.parse(source, path)
    names = [
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef) and node.name.endswith("Storlet")
    ]
    if len(names) != 1:
        raise UsageError(
            "%s must define exactly one class named *Storlet, found %s" % (path, names or "none")
        )
    return names[0]


def declared_parameters(source, path):
    """The ``parameters`` the storlet class of ``source`` declares (a
    tuple of str), or None.

    Read from the module's text, not imported: deploying runs no storlet
    code.  The declaration must be a literal tuple or list of names.
    """
    value = _declared(source, path, "parameters", ())
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, str) and v and "," not in v for v in value
    ):
        raise UsageError(
            "%s: %s.parameters must be a literal tuple of declarations (names)"
            % (path, storlet_class(source, path))
        )
    for entry in value:
        try:
            protocol.parse_parameter(entry)
        except ValueError as err:
            raise UsageError("%s: %s" % (path, err)) from None
    return tuple(value)


def declared_output_type(source, path):
    """The ``output_type`` the storlet class of ``source`` declares (a
    ``(suffix, content type)`` literal), or None; read as
    :func:`declared_parameters` is."""
    value = _declared(source, path, "output_type", ())
    if value is None:
        return None
    if not (
        isinstance(value, tuple)
        and len(value) == 2
        and protocol.parse_output_type(protocol.output_type_value(value)) == value
    ):
        raise UsageError(
            '%s: %s.output_type must be a literal (".suffix", "type/subtype")'
            % (path, storlet_class(source, path))
        )
    return value


def declared_many(source, path):
    """Whether the storlet class of ``source`` declares ``many = True``
    (read as :func:`declared_parameters` is)."""
    value = _declared(source, path, "many", ())
    if value not in (None, True, False):
        raise UsageError("%s: %s.many must be True or False" % (path, storlet_class(source, path)))
    return bool(value)


def _declared(source, path, attribute, malformed):
    """The literal value of ``attribute`` in the storlet class of
    ``source``; None when the class does not set it, ``malformed`` when it
    is not a literal."""
    tree = ast.parse(source, path)
    name = storlet_class(source, path)
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name)
    for node in cls.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == attribute for t in node.targets
        ):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                return malformed
    return None


def library_zip():
    """The ``mlstorlets`` package as a reproducible zip (pure Python)."""
    root = os.path.dirname(os.path.abspath(mlstorlets.__file__))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            dirnames[:] = sorted(
                d for d in dirnames if d != "__pycache__" and (rel != "." or d in SANDBOX_PARTS)
            )
            for filename in sorted(filenames):
                if filename.endswith(".pyc") or (rel == "." and filename not in SANDBOX_PARTS):
                    continue
                path = os.path.join(dirpath, filename)
                arcname = os.path.normpath(os.path.join("mlstorlets", rel, filename))
                info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                with open(path, "rb") as f:
                    zf.writestr(info, f.read())
    return buf.getvalue()


def artifacts(source_dir=None, library=True):
    """Every object that deploying ``source_dir`` uploads."""
    source_dir = source_dir or default_source_dir()
    found = []
    library_name = None
    if library:
        body = library_zip()
        library_name = "%s%s.zip" % (LIBRARY_PREFIX, hashlib.sha256(body).hexdigest()[:16])
        found.append(
            Artifact(
                "dependency",
                library_name,
                body,
                {
                    "X-Object-Meta-Storlet-Dependency-Version": mlstorlets.__version__,
                },
            )
        )
    for filename in sorted(os.listdir(source_dir)):
        if not filename.endswith(".py") or filename.startswith("_"):
            continue
        path = os.path.join(source_dir, filename)
        with open(path, "rb") as f:
            body = f.read()
        headers = {
            "X-Object-Meta-Storlet-Language": "Python",
            "X-Object-Meta-Storlet-Language-Version": "3",
            "X-Object-Meta-Storlet-Interface-Version": "1.0",
            "X-Object-Meta-Storlet-Object-Metadata": "no",
            "X-Object-Meta-Storlet-Main": "%s.%s" % (filename[:-3], storlet_class(body, path)),
        }
        declared = declared_parameters(body, path)
        if declared is not None:
            # Read by the client (mlstorlets.client.swift) to refuse an
            # undeclared parameter before any call.
            for key, value in protocol.parameters_metadata(declared).items():
                headers[protocol.OBJECT_META + key] = value
        output_type = declared_output_type(body, path)
        if output_type is not None:
            # Read by the client to name and type the outputs of a batch.
            headers[protocol.OBJECT_META + protocol.OUTPUT_TYPE_KEY] = protocol.output_type_value(
                output_type
            )
        if declared_many(body, path):
            # Read by the client: a batch of small objects maps many per call.
            headers[protocol.OBJECT_META + protocol.MANY_KEY] = "yes"
        if library_name:
            headers["X-Object-Meta-Storlet-Dependency"] = library_name
            body = _with_library(body, library_name, path)
        found.append(Artifact("storlet", filename, body, headers))
    return found


def _with_library(body, library, path):
    """The storlet module ``body`` with its ``LIBRARY`` line set."""
    body, count = LIBRARY_LINE.subn(("LIBRARY = %r" % library).encode(), body)
    if count != 1:
        raise UsageError(
            '%s must have exactly one line "LIBRARY = None" to '
            "receive the library it is deployed with" % path
        )
    return body


# The engine copies a storlet anew into its sandboxes only when the copy's
# size changes (upstream compares sizes and modification times, the latter
# the wrong way round).  A changed storlet of the same size as the deployed
# one is therefore uploaded with this padding, which Python ignores.
PADDING = b"\n"


def _current(artifact, headers):
    """True if ``headers`` describe exactly this artifact (padded or not)."""
    if headers is None:
        return False
    etags = {artifact.etag}
    if artifact.container == "storlet":
        etags.add(hashlib.md5(artifact.body + PADDING).hexdigest())
    return headers.get("etag") in etags and all(
        headers.get(k.lower()) == v for k, v in artifact.headers.items()
    )


def deploy(conn, source_dir=None, library=True, log=print):
    """Upload what changed; return the names uploaded.

    Parameters
    ----------
    conn : swiftclient.client.Connection
        The account to deploy to (storlets are per account).
    source_dir : str, optional
        Directory of storlet modules; default: the project's ``storlets/``.
    library : bool
        Upload the library zip, make every storlet depend on it, and remove
        the versions it supersedes.
    """
    swift = gateway(conn)
    uploaded = []
    for artifact in artifacts(source_dir, library):
        where = "%s/%s" % (artifact.container, artifact.name)
        headers = swift.head(artifact.container, artifact.name)
        if _current(artifact, headers):
            log("unchanged  %s" % where)
            continue
        if (
            artifact.container == "storlet"
            and headers is not None
            and int(headers["content-length"]) == len(artifact.body)
        ):
            artifact = dataclasses.replace(artifact, body=artifact.body + PADDING)
        swift.call(
            where,
            "put_object",
            artifact.container,
            artifact.name,
            artifact.body,
            headers=artifact.headers,
            etag=artifact.etag,
        )
        uploaded.append(where)
        log("uploaded   %s (%d bytes)" % (where, len(artifact.body)))
    if library:
        _remove_stale_libraries(swift, log)
    return uploaded


def _remove_stale_libraries(swift, log):
    """Delete the library versions that no storlet of the account names."""
    keep = set()
    for entry in swift.listing("storlet"):
        headers = swift.head("storlet", entry["name"]) or {}
        keep.update(
            d.strip() for d in headers.get("x-object-meta-storlet-dependency", "").split(",")
        )
    for entry in swift.listing("dependency", LIBRARY_PREFIX):
        if entry["name"] not in keep and entry["name"].endswith(".zip"):
            where = "dependency/%s" % entry["name"]
            swift.call(where, "delete_object", "dependency", entry["name"])
            log("removed    %s (superseded)" % where)
