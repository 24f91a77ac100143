"""Bounded file systems for what a sandbox may write on the host.

The channel directory (the sandbox's SBus sockets, ``/mnt/channels``
inside) and the private ``/tmp`` are the only places a storlet writes.  A
writable bind of the host's disk would let it fill that disk, and a tmpfs
made by bwrap bounds bytes but not files (400,000 empty files cost the host
400 MB of kernel memory and count as one block).  Each is a tmpfs the
gateway mounts on the host, bounded in bytes and in inodes, and binds into
the sandbox: ``/tmp`` anew for each sandbox start, the channel directory
once (the host keeps what it put there across restarts, as it did with a
plain directory); both are unmounted when their cluster goes down.
"""

import ctypes
import os

MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
# The channel directory holds a socket per storlet and the daemon factory's.
CHANNEL_SIZE = 1 << 20
CHANNEL_INODES = 1024

_libc = ctypes.CDLL(None, use_errno=True)


def mount_tmpfs(path, size, inodes, mode, uid=None, noexec=False, fresh=True):
    """A tmpfs at ``path`` of at most ``size`` bytes and ``inodes`` files.

    With ``fresh``, whatever was mounted there before is let go of first;
    without, a tmpfs already there is kept as it is.
    """
    os.makedirs(path, exist_ok=True)
    if os.path.ismount(path):
        if not fresh:
            return
        unmount(path)
    options = "size=%d,nr_inodes=%d,mode=%o" % (size, inodes, mode)
    if uid is not None:
        options += ",uid=%d,gid=%d" % (uid, uid)
    flags = MS_NOSUID | MS_NODEV | (MS_NOEXEC if noexec else 0)
    if _libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", flags, options.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "mount tmpfs at %s: %s" % (path, os.strerror(err)))
    # Its own mount events reach no sandbox, and no sandbox's reach it.
    if _libc.mount(None, os.fsencode(path), None, MS_PRIVATE, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "make %s private: %s" % (path, os.strerror(err)))


def unmount(path):
    """Let go of the mount at ``path`` (lazily: users keep it until they
    close it)."""
    if _libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "unmount %s: %s" % (path, os.strerror(err)))


def mounts_under(prefix):
    """The mount points strictly below ``prefix``, deepest first."""
    prefix = os.path.abspath(prefix).rstrip("/") + "/"
    found = []
    with open("/proc/self/mounts", "rb") as f:
        for line in f:
            point = line.split()[1].decode("unicode_escape")
            if point.startswith(prefix):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_under(prefix):
    """Unmount every mount below ``prefix``; how many."""
    found = mounts_under(prefix)
    for point in found:
        try:
            unmount(point)
        except OSError:
            pass
    return len(found)
