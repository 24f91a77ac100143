"""A storlet that logs, then raises: what a buggy storlet does.

Not built on the project's base class: it fails the way any storlet may.
It reads its inputs (none of them with ``read=none``), writes ``lines``
lines (default 2) to the storlet logger, each holding ``mark`` and ``pad``
bytes of padding (default 0), then, by parameter ``how``:

``value``
    raises ``ValueError("some detail")``;
``hostile``
    raises a ``ValueError`` whose message is meant to become headers of
    the answer (a CR/LF and ``Set-Cookie: stolen=1``, another object's name
    as ``X-Mlstorlets-Object``) and to swell it (``kb`` KB of ``A``,
    default 100);
``none``
    finishes normally, its output the input.
"""

HOSTILE = "first line\r\nSet-Cookie: stolen=1\r\nX-Mlstorlets-Object: other/forged\r\n\x00\x1b[31m"


class RaiserStorlet(object):
    def __init__(self, logger):
        self.logger = logger

    def __call__(self, in_files, out_files, params):
        body = b"" if params.get("read") == "none" else b"".join(f.read() for f in in_files)
        mark = params.get("mark", "")
        pad = "." * int(params.get("pad", 0))
        for i in range(int(params.get("lines", 2))):
            self.logger.info("raiser line %d %s%s" % (i, mark, pad))
        how = params.get("how", "value")
        if how == "value":
            raise ValueError("some detail")
        if how == "hostile":
            raise ValueError(HOSTILE + "A" * (int(params.get("kb", 100)) * 1024))
        out_files[0].set_metadata({})
        out_files[0].write(body)
        out_files[0].close()
