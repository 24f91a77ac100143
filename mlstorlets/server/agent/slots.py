"""What each worker of a storlet daemon runs, for the daemon's cancels.

Workers take the host's ``EXECUTE`` commands themselves, from the door
socket (:func:`mlstorlets.sandbox.protocol.door_path`): the daemon learns
which worker runs which task from a file both share, a record per worker:
the task it runs, then the last ones it finished, whose output may still
be on its way to the host (a cancel of one of those is answered
"finished", never "not found", which the host takes for a stuck
sandbox).  One ``pwrite`` per change, no message: the daemon reads the
records only when it is asked to cancel, or to tell whether it is idle.
"""

import os
import tempfile

ID_BYTES = 8
# The running task and the last ones finished.
IDS = 8
RECORD = ID_BYTES * IDS


def create(workers):
    """A file of ``workers`` empty records, in the sandbox's private /tmp."""
    f = tempfile.TemporaryFile(prefix="storlet-slots-")
    fd = os.dup(f.fileno())
    f.close()
    os.ftruncate(fd, workers * RECORD)
    return fd


def _id(task_id):
    data = task_id.encode("ascii")
    if not 0 < len(data) <= ID_BYTES or b"\0" in data:
        raise ValueError("a task id of 1 to %d characters: %r" % (ID_BYTES, task_id))
    return data.ljust(ID_BYTES, b"\0")


def _ids(record):
    return [
        record[i : i + ID_BYTES].rstrip(b"\0").decode("ascii", "replace")
        for i in range(0, RECORD, ID_BYTES)
    ]


class Slot(object):
    """A worker's record: written by the worker only."""

    def __init__(self, fd, index):
        self.fd = fd
        self.offset = index * RECORD
        self.finished = []

    def _write(self, running):
        ids = [running] + self.finished
        os.pwrite(self.fd, b"".join(_id(t) if t else b"\0" * ID_BYTES for t in ids), self.offset)

    def running(self, task_id):
        self._write(task_id)

    def done(self, task_id):
        self.finished = [task_id] + self.finished[: IDS - 2]
        self._write("")


def read(fd, index):
    """``(running task id or "", [finished task ids])`` of worker ``index``."""
    ids = _ids(os.pread(fd, RECORD, index * RECORD).ljust(RECORD, b"\0"))
    return ids[0], [t for t in ids[1:] if t]


def clear(fd, index):
    os.pwrite(fd, b"\0" * RECORD, index * RECORD)


def snapshot(fd, workers):
    """Every record's bytes: any change is a worker's activity."""
    return os.pread(fd, workers * RECORD, 0)
