"""Bring an embedded Swift + storlets cluster up and down.

Everything runs as real servers on 127.0.0.1: memcached, a proxy with
tempauth (or a Keystone of the operator's), an account and a container
server, ``nodes`` object servers (one replica on each), the upstream
storlet middleware in the proxy and object pipelines, and the bubblewrap
sandbox gateway.  The pid of every process started is recorded in the state
directory, and only those are stopped.
"""

import os
import shutil
import sys
import time

from mlstorlets.server.aio import processes
from mlstorlets.server.aio.layout import SUN_PATH_MAX, Layout, default_state_dir
from mlstorlets.server.gateway import cgroups, mounts
from mlstorlets.server.gateway.sandbox import default_native_lib_dir

STORLET_CONTAINERS = ("storlet", "dependency", "log")
START_TIMEOUT = 60.0


class ClusterError(RuntimeError):
    """The cluster cannot be brought to the state asked for."""


def _bin(name):
    return os.path.join(os.path.dirname(sys.executable), name)


class Cluster:
    """One embedded cluster, identified by its state directory.

    Parameters
    ----------
    state_dir : str, optional
        Where configuration, data, logs and pids live.  Default:
        ``$MLSTORLETS_AIO_DIR`` or ``~/.local/state/mlstorlets/aio``.
    """

    def __init__(self, state_dir=None):
        self.state_dir = os.path.abspath(state_dir or default_state_dir())

    # -- what exists ---------------------------------------------------
    @property
    def layout(self):
        try:
            return Layout.load(self.state_dir)
        except FileNotFoundError:
            raise ClusterError(
                "no embedded cluster at %s (run: mlstorlets "
                "aio up --state-dir %s)" % (self.state_dir, self.state_dir)
            ) from None

    def exists(self):
        return os.path.exists(os.path.join(self.state_dir, "cluster.json"))

    def servers(self, layout=None):
        """(name, argv, port) of every process, in start order."""
        layout = layout or self.layout
        from mlstorlets.server.aio.swiftconf import object_server

        memcached = shutil.which("memcached") or "memcached"
        memcached_argv = [
            memcached,
            "-l",
            "127.0.0.1",
            "-p",
            str(layout.memcached_port),
            "-U",
            "0",
            "-m",
            "64",
        ]
        if os.geteuid() == 0:
            memcached_argv += ["-u", "root"]
        servers = [
            (
                "syslog",
                [
                    sys.executable,
                    "-m",
                    "mlstorlets.server.aio.syslog_sink",
                    layout.log_socket,
                    os.path.join(layout.log_dir, "syslog.log"),
                ],
                None,
            ),
            ("memcached", memcached_argv, layout.memcached_port),
            (
                "account-server",
                [_bin("swift-account-server"), layout.conf("account-server")],
                layout.account_port,
            ),
            (
                "container-server",
                [_bin("swift-container-server"), layout.conf("container-server")],
                layout.container_port,
            ),
        ]
        for node in range(layout.nodes):
            name = object_server(node)
            servers.append(
                (name, [_bin("swift-object-server"), layout.conf(name)], layout.object_port(node))
            )
        servers.append(
            (
                "proxy-server",
                [_bin("swift-proxy-server"), layout.conf("proxy-server")],
                layout.proxy_port,
            )
        )
        return servers

    def status(self, layout=None):
        """{name: pid or None} for every process of the cluster."""
        layout = layout or self.layout
        return {
            name: processes.running(layout.run_dir, name) for name, _, _ in self.servers(layout)
        }

    def orphans(self, layout=None):
        """{name: pids} of the workers left serving by a server whose
        parent died (see :func:`mlstorlets.server.aio.processes.orphans`)."""
        layout = layout or self.layout
        found = {
            name: processes.orphans(layout.run_dir, name) for name, _, _ in self.servers(layout)
        }
        return {name: pids for name, pids in found.items() if pids}

    # -- up ------------------------------------------------------------
    def up(
        self,
        base_port=None,
        nodes=None,
        native_lib_dir=None,
        log=print,
        proxy_bind_ip=None,
        storlet_timeout=None,
        keystone=None,
    ):
        """Start the cluster; return True if anything was started.

        Idempotent: with every process already running it changes nothing.
        ``proxy_bind_ip`` (default ``127.0.0.1``) is the address the proxy
        listens on; every other server listens on loopback only.
        ``storlet_timeout`` (seconds) applies to a new cluster only.
        ``keystone``, the ``OS_*`` variables of an operator of a Keystone
        (v3), makes the proxy authenticate with that Keystone instead of
        tempauth; the Keystone must list the proxy as its ``object-store``
        endpoint.
        """
        native_lib_dir = native_lib_dir or default_native_lib_dir()
        check_prerequisites(native_lib_dir)
        new = not self.exists()
        if new:
            layout = Layout(
                self.state_dir,
                base_port=base_port or 8080,
                nodes=nodes or 1,
                proxy_bind_ip=proxy_bind_ip or "127.0.0.1",
                keystone=keystone or None,
            )
            if layout.longest_socket_path() > SUN_PATH_MAX:
                raise ClusterError(
                    "the state directory %s is too long: the servers' syslog "
                    "socket under it would exceed the %d bytes of a Unix "
                    "socket path; choose a shorter --state-dir" % (self.state_dir, SUN_PATH_MAX)
                )
            if keystone:
                from mlstorlets.server.aio.swiftconf import keystone_filters

                try:
                    keystone_filters(keystone)
                except ValueError as err:
                    raise ClusterError(str(err)) from None
        else:
            layout = self.layout
            for asked, have, what in (
                (base_port, layout.base_port, "base port"),
                (nodes, layout.nodes, "nodes"),
                (proxy_bind_ip, layout.proxy_bind_ip, "proxy bind address"),
                (keystone, layout.keystone, "Keystone settings"),
            ):
                if asked is not None and asked != have:
                    raise ClusterError(
                        "the cluster at %s was made with %s %s, not %s; "
                        '"mlstorlets aio down --purge" first to change it'
                        % (self.state_dir, what, have, asked)
                    )
        servers = self.servers(layout)
        for name, pids in self.orphans(layout).items():
            processes.stop(layout.run_dir, name)
            log(
                "stopped the workers %s left serving when its parent died: "
                "pid %s" % (name, ", ".join(map(str, pids)))
            )
        status = self.status(layout)
        if all(status.values()):
            log(
                "embedded cluster already running at %s (proxy %s); "
                "nothing changed" % (self.state_dir, layout.auth_url)
            )
            return False
        for name, _, port in servers:
            if port and not status[name] and processes.port_in_use(port):
                raise ClusterError(
                    "port %d (for %s) is taken by another process; choose "
                    "other ports with --base-port" % (port, name)
                )
        if new:
            from mlstorlets.server.aio import swiftconf

            swiftconf.write_all(layout, native_lib_dir, storlet_timeout=storlet_timeout)
            layout.save()
        started = []
        for name, argv, port in servers:
            if status[name]:
                continue
            pid = processes.start(layout.run_dir, layout.log_dir, name, argv)
            started.append((name, pid, port))
            if name == "syslog":
                self._wait_for_socket(layout.log_socket, pid)
        for name, pid, port in started:
            if port is None:
                continue
            if name == "memcached":
                ok = processes.wait_for_tcp(port, START_TIMEOUT, pid)
            else:
                ok = processes.wait_for_healthcheck(port, START_TIMEOUT, pid)
            if not ok:
                raise ClusterError(
                    "%s did not come up on port %d; see %s"
                    % (name, port, os.path.join(layout.log_dir, name + ".log"))
                )
        self._bootstrap(layout)
        log(
            "embedded cluster up at %s: %d object server(s), proxy %s"
            % (self.state_dir, layout.nodes, layout.auth_url)
        )
        version, why = cgroups.detect()
        log(
            "storlet sandboxes: %s"
            % (
                "a cgroup %s each (budgets: see deploy/README.md)" % version
                if version
                else "NO cgroup (%s): memory, processes and CPU are "
                "bounded per process by rlimits only" % why
            )
        )
        return True

    @staticmethod
    def _wait_for_socket(path, pid, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if time.monotonic() > deadline or not processes.alive(pid):
                raise ClusterError("the syslog sink did not start")
            time.sleep(0.02)

    def _bootstrap(self, layout):
        """Enable storlets on the accounts and create their containers.

        Enabling is the reseller admin's (the main account's user under
        tempauth; under Keystone, an operator with the ``ResellerAdmin``
        role): mlstorlets.server.middleware.storlet_enable refuses anyone
        else.
        """
        from swiftclient.client import Connection
        from swiftclient.exceptions import ClientException

        _url, token = self.connection("main", layout).get_auth()
        for account in layout.accounts:
            conn = self.connection(account, layout)
            enabler = Connection(preauthurl=conn.get_auth()[0], preauthtoken=token, retries=2)
            try:
                enabler.post_account({"X-Account-Meta-Storlet-Enabled": "True"})
            except ClientException as err:
                if not layout.keystone:
                    raise
                raise ClusterError(
                    "cannot enable storlets through Keystone (%s): the "
                    "operator needs the ResellerAdmin role on its project, "
                    "and the Keystone at %s must list http://127.0.0.1:%d/v1/"
                    "AUTH_%%(project_id)s as its object-store endpoint"
                    % (err, layout.keystone.get("OS_AUTH_URL"), layout.proxy_port)
                ) from None
            for container in STORLET_CONTAINERS:
                conn.put_container(container)

    # -- down ----------------------------------------------------------
    def down(self, purge=False, log=print):
        """Stop every process the cluster started; remove it if ``purge``."""
        if not self.exists():
            log("no embedded cluster at %s; nothing to stop" % self.state_dir)
            return False
        layout = self.layout
        stopped = [
            name
            for name, _, _ in reversed(self.servers(layout))
            if processes.stop(layout.run_dir, name)
        ]
        log("stopped %s" % (", ".join(stopped) if stopped else "nothing"))
        # The sandboxes die with their servers; then their file systems and
        # cgroups can go.
        mounts.unmount_under(self.state_dir)
        deadline = time.monotonic() + 10
        while cgroups.remove_tree(layout.cgroup_parent) and time.monotonic() < deadline:
            time.sleep(0.1)
        cgroups.remove_if_empty(layout.cgroup_parent.rsplit("/", 1)[0])
        if purge:
            shutil.rmtree(self.state_dir)
            log("removed %s" % self.state_dir)
        return bool(stopped)

    # -- clients -------------------------------------------------------
    def credentials(self, account="main", layout=None):
        """tempauth's (auth URL, user, key) of an account."""
        layout = layout or self.layout
        if account == "main":
            return layout.auth_url, layout.user, layout.key
        return layout.auth_url, layout.other_user, layout.other_key

    def env(self, account="main", layout=None):
        """The environment the ``swift`` CLI, AWS clients and mlstorlets
        read to reach this cluster (Swift API and S3 API; under Keystone,
        the operator's ``OS_*`` variables)."""
        layout = layout or self.layout
        if account not in layout.accounts:
            raise ClusterError(
                "the cluster at %s has no account %r (it has "
                "%s)" % (self.state_dir, account, ", ".join(layout.accounts))
            )
        if layout.keystone:
            return dict(layout.keystone)
        auth, user, key = self.credentials(account, layout)
        return {
            "ST_AUTH": auth,
            "ST_USER": user,
            "ST_KEY": key,
            "AWS_ACCESS_KEY_ID": user,
            "AWS_SECRET_ACCESS_KEY": key,
            "AWS_ENDPOINT_URL": auth.rsplit("/auth/", 1)[0],
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def connection(self, account="main", layout=None, **kwargs):
        """A swiftclient Connection to an account, made from :meth:`env`
        as the client makes it."""
        from swiftclient.client import Connection

        from mlstorlets.client.connection import swift_options

        options = swift_options(self.env(account, layout))
        kwargs.setdefault("retries", 2)
        return Connection(
            authurl=options["auth"],
            user=options["user"],
            key=options["key"],
            auth_version=options["auth_version"],
            os_options=options["os_options"],
            **kwargs,
        )


def check_prerequisites(native_lib_dir):
    """Refuse clearly when something the cluster needs is missing."""
    missing = []
    if not shutil.which("bwrap"):
        missing.append("bubblewrap (apt-get install bubblewrap)")
    if not shutil.which("memcached"):
        missing.append("memcached (apt-get install memcached)")
    for name in ("swift", "storlets"):
        try:
            __import__(name)
        except ImportError:
            missing.append("the Python package %s (pip install 'mlstorlets[cluster]')" % name)
    if not os.path.exists(os.path.join(native_lib_dir, "libsbus.so")):
        missing.append(
            "libsbus.so in %s (deploy/build-libsbus.sh %s)" % (native_lib_dir, native_lib_dir)
        )
    if not os.path.exists(_bin("swift-proxy-server")):
        missing.append("swift-proxy-server beside %s" % sys.executable)
    if missing:
        raise ClusterError("cannot start the embedded cluster; missing: " + "; ".join(missing))
