"""Pid files of the embedded cluster never lead to a stranger's process."""

import os
import subprocess
import sys

from mlstorlets.server.aio import processes


def sleeper():
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )


def test_a_reused_pid_is_not_ours(tmp_path):
    stranger = sleeper()
    try:
        # A record of an earlier process that had the stranger's pid.
        (tmp_path / "server.pid").write_text("%d 1\n" % stranger.pid)
        assert processes.running(str(tmp_path), "server") is None
        assert processes.orphans(str(tmp_path), "server") == []
        assert processes.stop(str(tmp_path), "server", timeout=1) is False
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_start_records_the_start_time(tmp_path):
    pid = processes.start(
        str(tmp_path),
        str(tmp_path),
        "server",
        [sys.executable, "-c", "import time; time.sleep(60)"],
    )
    try:
        assert processes.running(str(tmp_path), "server") == pid
        recorded = (tmp_path / "server.pid").read_text().split()
        assert recorded[0] == str(pid) and int(recorded[1]) > 0
    finally:
        assert processes.stop(str(tmp_path), "server", timeout=5)
    assert not os.path.exists(tmp_path / "server.pid")


def test_orphans_are_the_dead_leaders_group(tmp_path):
    # A leader that forks a worker into its group, then dies.
    leader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import os, sys, time\n"
                "if os.fork() == 0:\n"
                "    time.sleep(60)\n"
                "else:\n"
                '    sys.stdout.write("x"); sys.stdout.flush(); time.sleep(60)\n'
            ),
        ],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    leader.stdout.read(1)
    start = processes._stat(leader.pid)[2]
    (tmp_path / "server.pid").write_text("%d %d\n" % (leader.pid, start))
    assert processes.orphans(str(tmp_path), "server") == []  # leader runs
    bystander = sleeper()
    try:
        leader.kill()
        leader.wait()
        found = processes.orphans(str(tmp_path), "server")
        assert len(found) == 1 and found[0] != bystander.pid
        assert processes.stop(str(tmp_path), "server", timeout=5)
        assert not processes.alive(found[0])
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
