"""What each worker of a storlet daemon runs, for the daemon's cancels.

Workers take the host's ``EXECUTE`` commands themselves, from the door
socket (:func:`mlstorlets.sandbox.protocol.door_path`): the daemon learns
which worker runs which task from a file both share, a record per worker:
the task it runs, and how many it took, so that a look at the file tells
whether the workers did anything since the last one.  One ``pwrite`` per
change, no message: the daemon reads the records only when it is asked to
cancel, or to tell whether it is idle.

A worker also locks its record (``lockf``) from a command's receipt to the
end of its answer, and a daemon about to end its workers for idleness
locks every record first (:func:`close_if_idle`): no worker is ended
between accepting a task and answering it.
"""

import fcntl
import os
import struct
import tempfile

from mlstorlets.sandbox.protocol import TASK_ID_LENGTH

ID_BYTES = TASK_ID_LENGTH
# The running task's id, then the number of tasks taken.
_RECORD = struct.Struct("%dsQ" % ID_BYTES)
RECORD = _RECORD.size


def create(workers):
    """A file of ``workers`` empty records, in the sandbox's private /tmp."""
    f = tempfile.TemporaryFile(prefix="storlet-slots-")
    fd = os.dup(f.fileno())
    f.close()
    os.ftruncate(fd, workers * RECORD)
    return fd


class Slot(object):
    """A worker's record: written by the worker only."""

    def __init__(self, fd, index):
        self.fd = fd
        self.offset = index * RECORD
        self.taken = 0

    def running(self, task_id):
        data = task_id.encode("ascii")
        if not 0 < len(data) <= ID_BYTES or b"\0" in data:
            raise ValueError("a task id of 1 to %d characters: %r" % (ID_BYTES, task_id))
        self.taken += 1
        os.pwrite(self.fd, _RECORD.pack(data, self.taken), self.offset)

    def done(self):
        os.pwrite(self.fd, _RECORD.pack(b"", self.taken), self.offset)

    def hold(self):
        """Lock the record until :meth:`release`, waiting for a daemon
        that locked it to end this worker (see :func:`close_if_idle`)."""
        fcntl.lockf(self.fd, fcntl.LOCK_EX, RECORD, self.offset)

    def release(self):
        fcntl.lockf(self.fd, fcntl.LOCK_UN, RECORD, self.offset)


def _record(fd, index):
    return os.pread(fd, RECORD, index * RECORD).ljust(RECORD, b"\0")


def _try_lock(fd, index):
    """Lock worker ``index``'s record unless someone holds it."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, RECORD, index * RECORD)
    except OSError:
        return False
    return True


def _running(record):
    return _RECORD.unpack(record)[0].rstrip(b"\0").decode("ascii", "replace")


def read(fd, index):
    """The id of the task worker ``index`` runs, or ""."""
    return _running(_record(fd, index))


def clear(fd, index):
    os.pwrite(fd, b"\0" * RECORD, index * RECORD)


def close_if_idle(fd, workers):
    """Lock every worker's record, for a daemon about to end its workers;
    False, and none kept, when a worker holds its own: it received a
    command it has not answered in full.  Kept until the daemon's exit: a
    worker that receives a command after waits for its record before it
    accepts it, and is ended first; its host sees the command dropped
    untaken, and sends it again."""
    for index in range(workers):
        if not _try_lock(fd, index):
            open_again(fd, workers)
            return False
    return True


def lock_if_idle(fd, index, record):
    """Lock worker ``index``'s record, for a daemon about to end it, if
    it holds no task and still reads ``record``; False, and nothing kept,
    when not.  Let go of it with :func:`open_again` (one worker)."""
    if not _try_lock(fd, index):
        return False
    if _record(fd, index) != record:
        open_again(fd, 1, index)
        return False
    return True


def open_again(fd, workers, first=0):
    """Let go of the records :func:`close_if_idle` locked (``workers``
    of them from ``first``)."""
    fcntl.lockf(fd, fcntl.LOCK_UN, workers * RECORD, first * RECORD)


def snapshot(fd, workers):
    """Every record's bytes: any change is a worker's activity."""
    return os.pread(fd, workers * RECORD, 0).ljust(workers * RECORD, b"\0")


def record_of(records, index):
    """Worker ``index``'s record in a :func:`snapshot`."""
    return records[index * RECORD : (index + 1) * RECORD]


def running(records):
    """The ids of the tasks running in a :func:`snapshot`."""
    ids = (_running(record_of(records, i)) for i in range(len(records) // RECORD))
    return [task_id for task_id in ids if task_id]
