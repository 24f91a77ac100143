"""Leave the page cache as Swift's object server would once a storlet read
an object.

Swift's object server drops an object's pages from the page cache once it
has read them for a GET, unless it keeps them (``keep_cache_private``, a
GET without a token, a manifest under ``keep_cache_slo_manifest``; never an
object of ``keep_cache_size`` bytes or more): a client reading many objects
once does not push out what is read often.  A storlet reads the object
through a descriptor the server hands to its sandbox, never through the
server's reader, and upstream keeps every page it read: a storlet run over
millions of images would fill the cache with them whatever the operator set.

With this object server handler mixin, once the storlet's output is closed
(read to its end, failed or abandoned), or the storlet failed before any,
the server drops the pages of the object the storlet was given, whole, as
its reader would have dropped the ones it read, and closes that reader.
Extra resources read on the object server are left to their own readers
(their internal GETs keep their pages, as Swift keeps those of every GET
without a token).
"""

from swift.common.utils import close_if_possible


def drop_and_close(reader):
    """Drop the object's pages if ``reader``, the object server's reader
    of a storlet's input, would have; then close it."""
    try:
        # Length 0: to the end of the file, whatever range the storlet
        # read.
        reader._drop_cache(reader._fp.fileno(), 0, 0)
    finally:
        reader.close()


class PagesDropped(object):
    """A storlet's output; closing it closes ``reader`` as
    :func:`drop_and_close` does."""

    def __init__(self, app_iter, reader):
        self.app_iter, self.reader = app_iter, reader

    def __iter__(self):
        # The output's own iterator: nothing added per chunk.
        return iter(self.app_iter)

    def close(self):
        reader, self.reader = self.reader, None
        try:
            close_if_possible(self.app_iter)
        finally:
            if reader is not None:
                drop_and_close(reader)


def is_disk_reader(app_iter):
    """Whether ``app_iter`` is a Swift disk file reader with a file open
    (the one whose descriptor upstream hands to the sandbox)."""
    return getattr(app_iter, "_fp", None) is not None and hasattr(app_iter, "_drop_cache")


class InputPagesDroppedHandler(object):
    """Object server storlet handler mixin: the storlet's input leaves the
    page cache as Swift's own GET would have."""

    def _call_gateway(self, resp):
        if not is_disk_reader(resp.app_iter):
            return super()._call_gateway(resp)
        try:
            sresp = super()._call_gateway(resp)
        except BaseException:
            # No output: the storlet may have read some of it before it
            # failed.
            drop_and_close(resp.app_iter)
            raise
        sresp.data._data_iter = PagesDropped(sresp.data.data_iter, resp.app_iter)
        return sresp
