"""Helpers for tests that need a cluster or the sample data."""

import os

from mlstorlets.aio.processes import port_in_use

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_base_port(span=20, start=21000, stop=40000):
    """A base port whose block of ``span`` ports is free on 127.0.0.1."""
    for base in range(start + os.getpid() % 50 * 100, stop, span):
        if not any(port_in_use(p) for p in range(base, base + span)):
            return base
    raise RuntimeError('no free block of %d ports' % span)


def data_dir():
    """The sample faces: $DATA, or ../shared/data/faces beside the repo."""
    path = os.environ.get('DATA') or os.path.join(
        os.path.dirname(REPO), 'shared', 'data', 'faces')
    if not os.path.isdir(path):
        raise RuntimeError('no sample data at %s: set DATA=/path/to/faces'
                           % path)
    return path
