"""Minimal stand-ins for the storlet engine's file objects (not a fake Swift)."""

import io


class FakeInput:
    """A storlet input file: read(size), get_metadata(), close()."""

    def __init__(self, payload, metadata=None):
        self._buf = io.BytesIO(payload)
        self._metadata = dict(metadata or {})
        self.closed = False

    def read(self, size=-1):
        return self._buf.read(size)

    def get_metadata(self):
        return dict(self._metadata)

    def close(self):
        self.closed = True


class FakeOutput:
    """A storlet output file that enforces set_metadata before write."""

    def __init__(self):
        self.metadata = None
        self.chunks = []
        self.closed = False

    def set_metadata(self, metadata):
        assert self.metadata is None, "set_metadata called twice"
        self.metadata = dict(metadata)

    def write(self, data):
        assert self.metadata is not None, "write before set_metadata"
        assert not self.closed
        self.chunks.append(bytes(data))

    def close(self):
        self.closed = True

    @property
    def body(self):
        return b"".join(self.chunks)
