"""Nothing a sandbox writes on the host is unbounded.

The hostile storlet writes 50 MB into the channel directory
(``/mnt/channels``, once a writable bind of the host's disk) and makes
100,000 empty files in its ``/tmp`` (once a tmpfs bounded in bytes only:
each file costs the host kernel memory and no block).  Both are tmpfs of
the host's now (mlstorlets.server.gateway.mounts), bounded in bytes and in
files, and unmounted when the cluster goes down.
"""

from support import hostile

from mlstorlets.server.gateway import mounts
from mlstorlets.server.node import SANDBOX_LIMITS


def test_the_channel_directory_is_bounded(conn, container):
    conn.put_object(container, "x", b"x")
    report = hostile(conn, container, "fill", path="/mnt/channels/junk", mb=50)
    print("50 MB into /mnt/channels: %s" % report)
    written = int(report.split()[1])
    assert written <= mounts.CHANNEL_SIZE and report.endswith("ENOSPC")
    # The engine still talks to the sandbox through it.
    assert hostile(conn, container, "whoami").startswith("allowed uid=")


def test_tmp_is_bounded_in_files(conn, container):
    conn.put_object(container, "x", b"x")
    report = hostile(conn, container, "files", path="/tmp", n=100000)
    print("100000 files in /tmp: %s" % report)
    made = int(report.split()[1])
    assert made < int(SANDBOX_LIMITS["sandbox_tmp_inodes"])
    assert report.endswith("ENOSPC")


def test_the_clusters_mounts_are_its_own(cluster):
    points = mounts.mounts_under(cluster.state_dir)
    assert points and all(p.startswith(cluster.state_dir) for p in points)
