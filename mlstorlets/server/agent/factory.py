"""The daemon factory of the sandbox, starting persistent storlet daemons.

Upstream's factory (``storlets.agent.daemon_factory``), with two changes
for Python storlets: the daemon it starts is
:mod:`mlstorlets.server.agent.daemon` (a supervisor over persistent
workers), and it waits for the daemon by pinging it every few milliseconds
instead of sleeping a second first.  Such a daemon that closed its door
is ending (its workers were idle): it is waited for, then taken for gone,
so that the host starts another at once rather than sending its command
again to one that no longer answers.  Java storlets are left to upstream.

The bubblewrap gateway starts it inside the sandbox::

    python3 -m mlstorlets.server.agent.factory FACTORY_PIPE LOG_LEVEL \\
        CONTAINER_ID [--workers N]
"""

import argparse
import os
import signal
import subprocess
import time

from storlets.agent.daemon_factory.server import SDaemonError, StorletDaemonFactory
from storlets.sbus.client import SBusClient
from storlets.sbus.client.exceptions import SBusClientException

from mlstorlets.sandbox import protocol
from mlstorlets.server.agent.daemon import KILL_WAIT, run_server

SANDBOX_STORLET_DIR = "/var/lib/storlets"
# How long a new daemon may take to load its storlet (numpy, OpenCV,
# scikit-learn) and answer a ping.
DAEMON_START_TIMEOUT = 30.0
PING_INTERVAL = 0.02
# How long a daemon that closed its door may take to end its workers and
# exit before it is killed.
DAEMON_END_WAIT = 2 * KILL_WAIT


class PersistentDaemonFactory(StorletDaemonFactory):
    """Daemon factory whose Python daemons keep their workers.

    Parameters
    ----------
    workers : int
        Worker processes per storlet; 0 for the cores available.
    """

    def __init__(self, sbus_path, logger, container_id, workers=0, daemon_idle_time=None):
        super().__init__(sbus_path, logger, container_id)
        self.workers = workers
        self.daemon_idle_time = daemon_idle_time
        # The door of each storlet whose daemon is the project's.
        self.doors = {}

    def get_process_status_by_name(self, storlet_name):
        running = super().get_process_status_by_name(storlet_name)
        door = self.doors.get(storlet_name)
        if not running or door is None or os.path.exists(door):
            return running
        pid = self.storlet_name_to_pid[storlet_name]
        deadline = time.monotonic() + DAEMON_END_WAIT
        while time.monotonic() < deadline:
            if not self.get_process_status_by_pid(pid, storlet_name):
                self.storlet_name_to_pid.pop(storlet_name, None)
                return False
            time.sleep(PING_INTERVAL)
        self.logger.warning(
            "The storlet daemon %s closed its door and runs on: killed" % storlet_name
        )
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        self.storlet_name_to_pid.pop(storlet_name, None)
        return False

    def get_python_args(
        self,
        daemon_language,
        storlet_path,
        storlet_name,
        pool_size,
        uds_path,
        log_level,
        daemon_language_version,
    ):
        version = daemon_language_version or "3"
        pargs = [
            "/usr/bin/python%s" % version,
            "-m",
            "mlstorlets.server.agent.daemon",
            storlet_name,
            uds_path,
            log_level,
            str(self.workers),
            self.container_id,
            os.path.join(SANDBOX_STORLET_DIR, storlet_name),
        ]
        if self.daemon_idle_time is not None:
            pargs += ["--idle-time", repr(self.daemon_idle_time)]
        # Only the engine's read-only paths: the storlet's directory, which
        # holds what the tenant uploaded, is for the workers alone.
        env = {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        return pargs, env

    def spawn_subprocess(self, pargs, env, storlet_name):
        if pargs[1:3] != ["-m", "mlstorlets.server.agent.daemon"]:
            self.doors.pop(storlet_name, None)
            return super().spawn_subprocess(pargs, env, storlet_name)
        if not (os.path.isfile(pargs[0]) and os.access(pargs[0], os.X_OK)):
            raise SDaemonError("Requested runtime is unavailable")
        # Where the daemon says why the storlet did not load, if it did not.
        report, write = os.pipe()
        try:
            proc = subprocess.Popen(
                pargs + ["--report-fd", str(write)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                close_fds=True,
                pass_fds=[write],
            )
        except OSError:
            os.close(report)
            self.logger.exception("Unable to start subprocess")
            raise SDaemonError("Unable to start the storlet daemon %s" % storlet_name)
        finally:
            os.close(write)
        try:
            self._wait_started(proc, storlet_name, report)
        finally:
            os.close(report)

    def _wait_started(self, proc, storlet_name, report):
        self.storlet_name_to_pid[storlet_name] = proc.pid
        self.doors[storlet_name] = protocol.door_path(proc.args[4])
        client = SBusClient(self.storlet_name_to_pipe_name[storlet_name])
        deadline = time.monotonic() + DAEMON_START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.storlet_name_to_pid.pop(storlet_name, None)
                # Ended: the pipe holds all it wrote.
                reason = os.read(report, 4 * protocol.MAX_REASON).decode("utf-8", "replace")
                if reason:
                    raise SDaemonError(protocol.NOT_LOADED + protocol.one_line(reason))
                raise SDaemonError("The storlet daemon %s is terminated" % storlet_name)
            try:
                if client.ping().status:
                    return
            except SBusClientException:
                pass
            time.sleep(PING_INTERVAL)
        raise SDaemonError("No response from the storlet daemon %s" % storlet_name)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Factory of persistent storlet daemons")
    parser.add_argument("sbus_path")
    parser.add_argument("log_level")
    parser.add_argument("container_id")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="worker processes per storlet (0: the cores available)",
    )
    parser.add_argument(
        "--daemon-idle-time",
        type=float,
        help="seconds a storlet's daemon runs with nothing to do before it exits",
    )
    opts = parser.parse_args(argv)
    run_server(
        "daemon-factory",
        opts.log_level,
        opts.container_id,
        lambda logger: PersistentDaemonFactory(
            opts.sbus_path, logger, opts.container_id, opts.workers, opts.daemon_idle_time
        ),
    )


if __name__ == "__main__":
    main()
