"""Upload storlets and the library they import to a Swift account.

A storlet module in ``storlets/`` is one Python file holding one class whose
name ends in ``Storlet``; it is registered as ``<module>.<Class>``.  The
library code the storlets import (``mlstorlets`` itself) travels as a
dependency object, ``mlstorlets.zip``, which the engine places beside each
storlet in the sandbox, so a new version of the library needs no new sandbox
image.  The zip is built reproducibly, so an unchanged library has an
unchanged ETag and is not uploaded again.
"""

import ast
import dataclasses
import hashlib
import io
import os
import sys
import zipfile

import mlstorlets

LIBRARY_OBJECT = 'mlstorlets.zip'
# Parts of the package that only ever run on the client or a server's host,
# never inside a sandbox.
HOST_ONLY = ('aio', 'gateway', 'deployment', 'middleware', 'cli')


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
    here = os.path.dirname(os.path.dirname(os.path.abspath(
        mlstorlets.__file__)))
    for candidate in (os.path.join(here, 'storlets'),
                      os.path.join(sys.prefix, 'share', 'mlstorlets',
                                   'storlets')):
        if os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError('cannot find the storlets directory of '
                            'mlstorlets; pass it explicitly')


def storlet_class(path):
    """The name of the storlet class defined in the module at ``path``."""
    with open(path, 'rb') as f:
        tree = ast.parse(f.read(), path)
    names = [node.name for node in tree.body
             if isinstance(node, ast.ClassDef) and node.name.endswith('Storlet')]
    if len(names) != 1:
        raise ValueError('%s must define exactly one class named *Storlet, '
                         'found %s' % (path, names or 'none'))
    return names[0]


def library_zip():
    """The ``mlstorlets`` package as a reproducible zip (pure Python)."""
    root = os.path.dirname(os.path.abspath(mlstorlets.__file__))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            dirnames[:] = sorted(d for d in dirnames if d != '__pycache__'
                                 and not (rel == '.' and d in HOST_ONLY))
            for filename in sorted(filenames):
                if filename.endswith('.pyc') or (
                        rel == '.' and filename[:-3] in HOST_ONLY):
                    continue
                path = os.path.join(dirpath, filename)
                arcname = os.path.normpath(os.path.join(
                    'mlstorlets', rel, filename))
                info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                with open(path, 'rb') as f:
                    zf.writestr(info, f.read())
    return buf.getvalue()


def artifacts(source_dir=None, library=True):
    """Every object that deploying ``source_dir`` uploads."""
    source_dir = source_dir or default_source_dir()
    found = []
    dependencies = [LIBRARY_OBJECT] if library else []
    if library:
        found.append(Artifact('dependency', LIBRARY_OBJECT, library_zip(), {
            'X-Object-Meta-Storlet-Dependency-Version': mlstorlets.__version__,
        }))
    for filename in sorted(os.listdir(source_dir)):
        if not filename.endswith('.py') or filename.startswith('_'):
            continue
        path = os.path.join(source_dir, filename)
        main = '%s.%s' % (filename[:-3], storlet_class(path))
        headers = {
            'X-Object-Meta-Storlet-Language': 'Python',
            'X-Object-Meta-Storlet-Language-Version': '3',
            'X-Object-Meta-Storlet-Interface-Version': '1.0',
            'X-Object-Meta-Storlet-Object-Metadata': 'no',
            'X-Object-Meta-Storlet-Main': main,
        }
        if dependencies:
            headers['X-Object-Meta-Storlet-Dependency'] = ','.join(
                dependencies)
        with open(path, 'rb') as f:
            found.append(Artifact('storlet', filename, f.read(), headers))
    return found


def _current(conn, artifact):
    """True if the cluster already has exactly this artifact."""
    from swiftclient.exceptions import ClientException
    try:
        headers = conn.head_object(artifact.container, artifact.name)
    except ClientException as err:
        if err.http_status == 404:
            return False
        raise
    if headers.get('etag') != artifact.etag:
        return False
    return all(headers.get(k.lower()) == v
               for k, v in artifact.headers.items())


def deploy(conn, source_dir=None, library=True, log=print):
    """Upload what changed; return the names uploaded.

    Parameters
    ----------
    conn : swiftclient.client.Connection
        The account to deploy to (storlets are per account).
    source_dir : str, optional
        Directory of storlet modules; default: the project's ``storlets/``.
    library : bool
        Upload ``mlstorlets.zip`` and make every storlet depend on it.
    """
    uploaded = []
    for artifact in artifacts(source_dir, library):
        where = '%s/%s' % (artifact.container, artifact.name)
        if _current(conn, artifact):
            log('unchanged  %s' % where)
            continue
        conn.put_object(artifact.container, artifact.name, artifact.body,
                        headers=artifact.headers, etag=artifact.etag)
        uploaded.append(where)
        log('uploaded   %s (%d bytes)' % (where, len(artifact.body)))
    return uploaded
