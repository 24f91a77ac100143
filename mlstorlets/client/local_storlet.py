"""Run a storlet module on the client, with the storlet file API.

When the data is not in the cluster, the storlet's own class runs here: the
same code, the same protocol.  The files below behave like the engine's
(:mod:`storlets.agent.daemon.files`): an input file reads its body and
gives its metadata; an output file takes its metadata once, then its body.
:func:`invoke` then reads the answer as the project's proxy middleware does
(:mod:`mlstorlets.server.middleware.storlet_copy`): a ``Storlet-Error`` is a
refusal, a body that does not match ``Storlet-Output-Length`` a failure,
and neither key is stored.

Memory stays bounded whatever the object's size: an input file reads its
source store's stream as the storlet asks, and the output is spooled to a
temporary file (in memory up to ``SPOOL``) until the storlet is done, then
uploaded from there.
"""

import copy
import importlib.util
import io
import logging
import os
import tempfile
import threading

from mlstorlets.client.errors import UsageError, storlet_failure
from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.protocol import ERROR_KEY, ERROR_OBJECT_KEY, LENGTH_KEY

# Output bytes kept in memory before spooling to disk.
SPOOL = 8 << 20
_cache = {}
_cache_lock = threading.Lock()


class InputFile:
    """A storlet input over a body.

    Parameters
    ----------
    data : bytes or readable file object
        A stream (a store's :class:`~mlstorlets.client.stores.base.Reader`)
        is read as the storlet reads.
    metadata : dict
        The object's user metadata, as the storlet sees it in the cluster.
    """

    def __init__(self, data, metadata):
        if isinstance(data, (bytes, bytearray, memoryview)):
            self._body = io.BytesIO(data)
        else:
            # Buffered: readline is not a byte at a time.
            self._body = io.BufferedReader(data, 1 << 20)
        self._metadata = dict(metadata)

    def get_metadata(self):
        return copy.deepcopy(self._metadata)

    def read(self, size=-1):
        return self._body.read(size)

    def readline(self, size=-1):
        return self._body.readline(size)

    def readlines(self, sizehint=-1):
        return self._body.readlines(sizehint)

    def __iter__(self):
        return self

    def __next__(self):
        # The engine's files iterate by whole reads, not by lines.
        buf = self.read()
        if not buf:
            raise StopIteration
        return buf

    next = __next__

    @property
    def closed(self):
        return self._body.closed

    def close(self):
        self._body.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class OutputFile:
    """A storlet output collected in a spooled temporary file: metadata
    first, then body."""

    def __init__(self):
        self._metadata = None
        self._body = tempfile.SpooledTemporaryFile(SPOOL)
        self.length = 0
        self.closed = False

    @property
    def body(self):
        """The whole body, read into memory (once closed)."""
        if not self.closed:
            return None
        self._body.seek(0)
        return self._body.read()

    def open_body(self):
        """The body file, at its start (once closed); the caller closes
        it."""
        self._body.seek(0)
        return self._body

    def set_metadata(self, metadata):
        if self._metadata is not None:
            raise IOError("Sending metadata twice is not allowed")
        self._metadata = dict(metadata)

    def get_metadata(self):
        if self._metadata is None:
            raise IOError("Metadata is not set yet")
        return copy.deepcopy(self._metadata)

    def write(self, buf):
        if self._metadata is None:
            raise IOError("Body should be sent after metadata is sent")
        self._body.write(buf)
        self.length += len(buf)

    def writelines(self, seq):
        for buf in seq:
            self.write(buf)

    def flush(self):
        pass

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Logger:
    """The storlet logger's interface over :mod:`logging`."""

    def __init__(self, storlet):
        self._log = logging.getLogger("mlstorlets.storlet." + storlet)

    def debug(self, msg):
        self._log.debug(msg)

    def info(self, msg):
        self._log.info(msg)

    def warn(self, msg):
        self._log.warning(msg)

    warning = warn

    def error(self, msg):
        self._log.error(msg)


def storlet_path(storlet, storlets_dir=None):
    """The module file of ``storlet`` (e.g. ``'probe.py'``)."""
    if storlets_dir is None:
        from mlstorlets.client.deploy import default_source_dir

        storlets_dir = default_source_dir()
    name = storlet if storlet.endswith(".py") else storlet + ".py"
    path = os.path.join(storlets_dir, os.path.basename(name))
    if not os.path.isfile(path):
        raise UsageError("no storlet %s in %s" % (name, storlets_dir))
    return path


def load_storlet(storlet, storlets_dir=None):
    """The storlet class of the module ``storlet`` in ``storlets_dir``.

    The module is loaded from its file (``storlets/`` is not a package) once
    per process and version of the file.
    """
    from mlstorlets.client.deploy import storlet_class

    path = storlet_path(storlet, storlets_dir)
    stamp = (path, os.stat(path).st_mtime_ns)
    with _cache_lock:
        if stamp not in _cache:
            stem = os.path.splitext(os.path.basename(path))[0]
            spec = importlib.util.spec_from_file_location(
                "mlstorlets_local_storlets.%s" % stem, path
            )
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            with open(path, "rb") as f:
                name = storlet_class(f.read(), path)
            _cache[stamp] = getattr(module, name)
        return _cache[stamp]


def invoke(cls, inputs, params, name="", storlet=""):
    """Run the storlet class ``cls`` over ``inputs``; (metadata, body).

    :func:`stream` with the body read into memory.
    """
    metadata, body, _ = stream(cls, inputs, params, name, storlet)
    with body:
        return metadata, body.read()


def stream(cls, inputs, params, name="", storlet=""):
    """Run the storlet class ``cls`` over ``inputs``.

    Parameters
    ----------
    cls : type
        A storlet class: ``cls(logger)(in_files, out_files, params)``.
    inputs : list of (bytes or readable file, dict)
        The bodies and metadata of the inputs, the object first.
    params : dict of str
    name : str
        The object's name, for errors.
    storlet : str
        The storlet's name, for errors and its logger.

    Returns
    -------
    metadata : dict
        The storlet's output metadata, without the protocol's keys.
    body : file object
        The output, at its start; the caller closes it.
    length : int

    Raises
    ------
    mlstorlets.client.errors.Refused
        The storlet refused the object (``Storlet-Error``).
    mlstorlets.client.errors.StorletFailed
        It raised, set no metadata, or wrote a body of the wrong length:
        worded as the cluster's answer to the same failure.
    """
    in_files = [InputFile(data, metadata) for data, metadata in inputs]
    out = OutputFile()
    try:
        try:
            cls(Logger(storlet))(in_files, [out], {k: str(v) for k, v in params.items()})
        except Exception as err:
            raise storlet_failure(
                name, storlet, protocol.FAILED, "%s: %s" % (type(err).__name__, err)
            ) from err
        finally:
            out.close()
        if out._metadata is None:
            raise storlet_failure(name, storlet, protocol.FAILED, "it sent no metadata")
        metadata = {k.title(): str(v) for k, v in out._metadata.items()}
        if ERROR_KEY in metadata:
            raise storlet_failure(
                metadata.get(ERROR_OBJECT_KEY) or name,
                storlet,
                protocol.REFUSED,
                metadata[ERROR_KEY],
                obj=metadata.get(ERROR_OBJECT_KEY),
                parameter=metadata.get(protocol.ERROR_PARAMETER_KEY),
            )
        length = metadata.pop(LENGTH_KEY, None)
        if length is not None and length.isdigit() and int(length) != out.length:
            raise storlet_failure(
                name,
                storlet,
                protocol.FAILED,
                "its output ended after %d of %s bytes" % (out.length, length),
            )
    except BaseException:
        out._body.close()
        raise
    return metadata, out.open_body(), out.length
