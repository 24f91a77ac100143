"""A multi-node Swift cluster on one machine, installed as an operator would.

Every node is a network namespace of our own with its own address on one
bridge, its own directory (``etc/swift``, devices, the storlets host root,
run and log files) and its own servers: the proxy node runs memcached and
the proxy, each storage node an account, a container and an object server.
Nothing comes from the embedded cluster (:mod:`mlstorlets.server.aio`): the
configuration files are Swift's own samples (the sdist's ``etc/``, which
``make samples`` unpacks into the venv) edited line by line the way an
operator edits them, the rings are built with ``swift-ring-builder`` over the
nodes' addresses, tempauth authenticates (or Keystone, on an identity node
of its own: ``auth='keystone'``), and ``deploy/install-node.sh`` is
the only thing that adds storlets to a node.  A client namespace runs the
user's commands against the proxy's address.

    with Topology('/tmp/topo', storage=3) as topo:
        topo.client(['mlstorlets', 'deploy'], account='test')

Needs root, iproute2 and memcached (``make setup`` installs them).  What a
run leaves after SIGKILL (namespaces named after a dead pid) is removed by
the next one.
"""

import configparser
import contextlib
import ctypes
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request

from support import NETNS_DIR, remove_stale_namespaces

from mlstorlets.server.aio import processes
from mlstorlets.server.gateway import cgroups, mounts

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
INSTALL_NODE = os.path.join(ROOT, "deploy", "install-node.sh")
SAMPLES = os.path.join(sys.prefix, "share", "swift-samples")
PREFIX = "mlstopo"
SUBNET = "10.215.0"
PROXY_PORT = 8080
# Swift's default ports, one set per node address.
BACKEND_PORTS = {"object": 6200, "container": 6201, "account": 6202}
MEMCACHED_PORT = 11211
PART_POWER = 8
# tempauth's users, as Swift's sample names them; admin is the reseller
# admin who alone may enable storlets on an account.
ACCOUNTS = {"test": "tester", "test2": "tester2"}
START_TIMEOUT = 60.0
ERROR_SUPPRESSION_INTERVAL = 4
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
# The network namespace this process started in, where every thread
# returns from the client's.
_HOME_NETNS = os.open("/proc/self/ns/net", os.O_RDONLY)


# The containers an account's user makes before deploying storlets.
CONTAINERS = """
from mlstorlets.client.connection import connection_from_environment
conn = connection_from_environment()
for name in ("storlet", "dependency", "log"):
    conn.put_container(name)
"""


class TopologyError(RuntimeError):
    """The topology cannot be built or a command in it failed."""


def set_options(text, section, options):
    """Set ``options`` in ``[section]`` of a sample configuration's text.

    An operator's edit: an option already set is changed in place, one the
    sample shows commented out (``# key = value``) is uncommented there, and
    any other is added right after the section header.  A section the
    sample shows commented out (``# [filter:authtoken]``) is uncommented
    in place.  Every other line, comments included, stays as it was.
    """
    lines = text.splitlines(keepends=True)
    header = "[%s]" % section
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == header)
    except StopIteration:
        commented = re.compile(r"^#\s*%s\s*$" % re.escape(header))
        start = next((i for i, line in enumerate(lines) if commented.match(line)), None)
        if start is None:
            lines.append("\n%s\n" % header)
            start = len(lines) - 1
        else:
            lines[start] = header + "\n"
    end = next(
        (i for i in range(start + 1, len(lines)) if re.match(r"^(#\s*)?\[", lines[i])),
        len(lines),
    )
    added = []
    for key, value in options.items():
        line = "%s = %s\n" % (key, value)
        pattern = re.compile(r"^#?\s*%s\s*=" % re.escape(key))
        found = [i for i in range(start + 1, end) if pattern.match(lines[i])]
        live = [i for i in found if not lines[i].startswith("#")]
        if live or found:
            lines[(live or found)[0]] = line
        else:
            added.append(line)
    lines[start + 1 : start + 1] = added
    return "".join(lines)


def pipeline_names(text):
    """The names of a server configuration's ``[pipeline:main]``."""
    conf = configparser.RawConfigParser(strict=False)
    conf.read_string(text)
    return conf.get("pipeline:main", "pipeline").split()


def _run_together(commands, what):
    """Run ``commands`` ({name: (argv, env)}) at once; their outputs by
    name, or a TopologyError naming ``what`` failed where and why."""
    started = {
        name: subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for name, (argv, env) in commands.items()
    }
    outputs = {name: proc.communicate()[0] for name, proc in started.items()}
    failed = [name for name, proc in started.items() if proc.returncode]
    if failed:
        raise TopologyError(
            "%s failed on %s:\n%s"
            % (what, ", ".join(failed), "\n".join(outputs[name] for name in failed))
        )
    return outputs


def _run(argv, **kwargs):
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )
    if done.returncode:
        raise TopologyError("%s failed (%d): %s" % (" ".join(argv), done.returncode, done.stdout))
    return done.stdout


class Node:
    """One machine of the topology: a namespace, an address, a directory."""

    def __init__(self, topology, name, ip, servers, cpus=None):
        self.name = name
        self.ip = ip
        self.servers = servers
        self.cpus = cpus
        self.namespace = "%s-%d-%s" % (PREFIX, os.getpid(), name)
        self.dir = os.path.join(topology.root, name)
        self.swift_dir = os.path.join(self.dir, "etc", "swift")
        self.devices = os.path.join(self.dir, "srv", "node")
        self.host_root = os.path.join(self.dir, "storlets")
        self.run_dir = os.path.join(self.dir, "run")
        self.log_dir = os.path.join(self.dir, "log")
        self.cgroup_parent = "mlstorlets/topo-%d-%s" % (os.getpid(), name)

    def conf(self, server):
        return os.path.join(self.swift_dir, "%s-server.conf" % server)

    def exec_argv(self, argv):
        # Only the network namespace: ``ip netns exec`` would also give the
        # command a mount namespace with a /sys of its own, without the
        # cgroup hierarchies the sandboxes' budgets need.
        return ["nsenter", "--net=%s" % os.path.join(NETNS_DIR, self.namespace), "--"] + list(argv)


class Topology:
    """A proxy node, ``storage`` storage nodes and a client, each its own
    network namespace on one bridge.

    Parameters
    ----------
    root : str
        Where the nodes' directories go (short: the sandboxes' socket paths
        live under it).
    storage : int
        Storage nodes; each holds one device of every ring.
    replicas : int
        Replicas of every ring (at most ``storage``).
    proxy_workers : int
    storage_cpus : list of str, optional
        A cpuset (``'0'``, ``'1'``, ...) per storage node: its servers and
        the sandboxes they start run on those CPUs only.
    accounting : bool
        Every node's servers in a cgroup of the node's (beside its
        sandboxes'), so that :meth:`cpu_seconds` counts all it uses.
    auth : {'tempauth', 'keystone'}
        ``keystone``: an identity node runs Keystone, the proxy
        ``authtoken`` and ``keystoneauth`` in tempauth's place, and each
        account is a project whose user has the ``swiftoperator`` role.
    """

    def __init__(
        self,
        root,
        storage=3,
        replicas=3,
        proxy_workers=1,
        storage_cpus=None,
        accounting=False,
        auth="tempauth",
    ):
        if replicas > storage:
            raise ValueError("%d replicas need as many storage nodes" % replicas)
        if auth not in ("tempauth", "keystone"):
            raise ValueError("auth is tempauth or keystone, not %r" % auth)
        self.root = os.path.abspath(root)
        self.replicas = replicas
        self.proxy_workers = proxy_workers
        self.accounting = accounting or bool(storage_cpus)
        self.hash_suffix = os.urandom(8).hex()
        self.keys = {"admin": os.urandom(8).hex()}
        self.keys.update((account, os.urandom(8).hex()) for account in ACCOUNTS)
        self.proxy = Node(self, "proxy", "%s.10" % SUBNET, ("memcached", "proxy"))
        self.storage = [
            Node(
                self,
                "storage%d" % (i + 1),
                "%s.%d" % (SUBNET, 21 + i),
                ("account", "container", "object"),
                cpus=storage_cpus[i] if storage_cpus else None,
            )
            for i in range(storage)
        ]
        self.client_node = Node(self, "client", "%s.2" % SUBNET, ())
        self.identity = Node(self, "identity", "%s.5" % SUBNET, ()) if auth == "keystone" else None
        self.keystone = None
        # keystone: the proxy's service user's OS_*; each account's project
        # id, and its user's OS_*.
        self.service_user = None
        self.projects = {}
        self.users = {}
        self.hub = "%s-%d-hub" % (PREFIX, os.getpid())
        self.installed = {}
        self._up = False

    @property
    def nodes(self):
        return [self.proxy] + self.storage

    @property
    def _other_nodes(self):
        """The nodes that run no Swift server."""
        return [self.client_node] + ([self.identity] if self.identity else [])

    @property
    def auth_url(self):
        return "http://%s:%d/auth/v1.0" % (self.proxy.ip, PROXY_PORT)

    def storage_url(self, account):
        name = self.projects[account] if self.keystone else account
        return "http://%s:%d/v1/AUTH_%s" % (self.proxy.ip, PROXY_PORT, name)

    # -- life cycle ------------------------------------------------------
    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc):
        self.down()

    def up(self, install_env=None):
        """Build the network, write every node as an operator does, run
        ``install-node.sh`` on each, start the servers, enable storlets on
        the sample accounts."""
        for tool in ("ip", "nsenter", "memcached", "swift-ring-builder"):
            if not shutil.which(tool) and not os.path.exists(self._bin(tool)):
                raise TopologyError("%s not found: run make setup" % tool)
        if not os.path.exists(os.path.join(SAMPLES, "proxy-server.conf-sample")):
            raise TopologyError("no Swift sample configurations in %s: run make samples" % SAMPLES)
        remove_stale_namespaces(PREFIX + r"-(\d+)-\w+")
        self._up = True
        try:
            self._network()
            self._log_sink()
            if self.identity:
                self._keystone()
            for node in self.nodes:
                self._write_node(node)
            self._rings()
            self.install(env=install_env)
            for node in self.nodes:
                for server in node.servers:
                    self.start(node, server)
            for node in self.nodes:
                for server in node.servers:
                    self.wait(node, server)
            self._enable_accounts()
        except BaseException:
            self.down()
            raise

    def down(self):
        """Stop every server, remove the namespaces and cgroups; keep the
        files (a failed test's logs are worth reading)."""
        if not self._up:
            return
        self._up = False
        for node in reversed(self.nodes):
            for server in reversed(node.servers):
                processes.stop(node.run_dir, server)
        processes.stop(self.root, "syslog")
        if self.keystone:
            self.keystone.stop()
        mounts.unmount_under(self.root)
        for node in self.nodes:
            deadline = time.monotonic() + 10
            while cgroups.remove_tree(node.cgroup_parent) and time.monotonic() < deadline:
                time.sleep(0.1)
        cgroups.remove_if_empty("mlstorlets")
        for node in self.nodes + self._other_nodes:
            subprocess.run(["ip", "netns", "delete", node.namespace], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "delete", self.hub], stderr=subprocess.DEVNULL)

    # -- the network ------------------------------------------------------
    def _network(self):
        _run(["ip", "netns", "add", self.hub])
        _run(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.hub, "link", "set", "br0", "up"])
        for node in self.nodes + self._other_nodes:
            _run(["ip", "netns", "add", node.namespace])
            _run(["ip", "-n", node.namespace, "link", "set", "lo", "up"])
            port = "v-" + node.name[:12]
            _run(
                ["ip", "link", "add", "eth0", "netns", node.namespace, "type", "veth"]
                + ["peer", "name", port, "netns", self.hub]
            )
            _run(["ip", "-n", self.hub, "link", "set", port, "master", "br0", "up"])
            _run(["ip", "-n", node.namespace, "addr", "add", node.ip + "/24", "dev", "eth0"])
            _run(["ip", "-n", node.namespace, "link", "set", "eth0", "up"])

    def _keystone(self):
        """Keystone on the identity node, as a cloud's operator has it: the
        ``object-store`` endpoint of the proxy, a ``swift`` service user
        (``admin`` on the ``service`` project) for the proxy's
        ``authtoken``, the admin a reseller admin, a project and user per
        account."""
        from keystone_server import Keystone

        self.keystone = Keystone(
            os.path.join(self.identity.dir, "keystone"),
            host=self.identity.ip,
            launch=self.identity.exec_argv,
            reach=self.inside_client,
        )
        self.keystone.start()
        with self.inside_client():
            self.keystone.add_object_store(PROXY_PORT, self.proxy.ip)
            self.keystone.grant_reseller_admin()
            self.keystone.add_project("service")
            self.service_user = self.keystone.add_user("swift", "admin", project="service")
            self.keystone.add_role("swiftoperator")
            for account, user in ACCOUNTS.items():
                self.projects[account] = self.keystone.add_project(account)
                self.users[account] = self.keystone.add_user(user, "swiftoperator", project=account)

    def _proxy_auth(self, text):
        """The proxy's authentication, edited in the sample as its
        comments say: tempauth's users, or Keystone's two filters in
        tempauth's place."""
        if not self.keystone:
            users = {"user_admin_admin": "%s .admin .reseller_admin" % self.keys["admin"]}
            users.update(
                ("user_%s_%s" % (account, user), "%s .admin" % self.keys[account])
                for account, user in ACCOUNTS.items()
            )
            return set_options(text, "filter:tempauth", users)
        names = pipeline_names(text)
        at = names.index("tempauth")
        names[at : at + 1] = ["authtoken", "keystoneauth"]
        text = set_options(text, "pipeline:main", {"pipeline": " ".join(names)})
        service = self.service_user
        text = set_options(
            text,
            "filter:authtoken",
            {
                "paste.filter_factory": "keystonemiddleware.auth_token:filter_factory",
                "www_authenticate_uri": self.keystone.url,
                "auth_url": self.keystone.url,
                "auth_plugin": "password",
                "project_domain_id": "default",
                "user_domain_id": "default",
                "project_name": service["OS_PROJECT_NAME"],
                "username": service["OS_USERNAME"],
                "password": service["OS_PASSWORD"],
                "delay_auth_decision": "True",
                "cache": "swift.cache",
                "include_service_catalog": "False",
            },
        )
        return set_options(
            text,
            "filter:keystoneauth",
            {
                "use": "egg:swift#keystoneauth",
                "operator_roles": "admin, swiftoperator",
                "reseller_admin_role": "ResellerAdmin",
            },
        )

    def _log_sink(self):
        # The machine's syslog for every node (rsyslog's part on a real one):
        # a Unix socket is reached through the file system, whatever the
        # network namespace.
        os.makedirs(self.root, exist_ok=True)
        self.log_socket = os.path.join(self.root, "log.sock")
        pid = processes.start(
            self.root,
            self.root,
            "syslog",
            [
                sys.executable,
                "-m",
                "mlstorlets.server.aio.syslog_sink",
                self.log_socket,
                os.path.join(self.root, "syslog.log"),
            ],
        )
        deadline = time.monotonic() + 10
        while not os.path.exists(self.log_socket):
            if time.monotonic() > deadline or not processes.alive(pid):
                raise TopologyError("the syslog sink did not start")
            time.sleep(0.02)

    # -- the operator's files ---------------------------------------------
    def _sample(self, name):
        with open(os.path.join(SAMPLES, name + "-sample")) as f:
            return f.read()

    def _write(self, path, text):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    def _common(self, node, server):
        return {
            "bind_ip": node.ip,
            "bind_port": str(PROXY_PORT if server == "proxy" else BACKEND_PORTS[server]),
            "swift_dir": node.swift_dir,
            "user": "root",
            "workers": str(self.proxy_workers if server == "proxy" else 1),
            "log_address": self.log_socket,
            "log_name": "%s-%s" % (node.name, server),
        }

    def _write_node(self, node):
        for path in (node.swift_dir, node.run_dir, node.log_dir, node.host_root):
            os.makedirs(path, exist_ok=True)
        swift_conf = set_options(
            self._sample("swift.conf"),
            "swift-hash",
            {"swift_hash_path_suffix": self.hash_suffix, "swift_hash_path_prefix": "topology"},
        )
        self._write(os.path.join(node.swift_dir, "swift.conf"), swift_conf)
        if node is self.proxy:
            text = set_options(
                self._sample("proxy-server.conf"), "DEFAULT", self._common(node, "proxy")
            )
            text = set_options(
                text,
                "app:proxy-server",
                {
                    "account_autocreate": "true",
                    # A rolling restart waits this long after each node (the
                    # proxy avoids a node that failed for this long); 60 s by
                    # default, shorter here for the tests' sake.
                    "error_suppression_interval": str(ERROR_SUPPRESSION_INTERVAL),
                },
            )
            text = self._proxy_auth(text)
            text = set_options(
                text, "filter:cache", {"memcache_servers": "%s:%d" % (node.ip, MEMCACHED_PORT)}
            )
            text = set_options(
                text, "filter:proxy-logging", {"access_log_address": self.log_socket}
            )
            self._write(node.conf("proxy"), text)
            return
        os.makedirs(os.path.join(node.devices, "d1"), exist_ok=True)
        for server in ("account", "container", "object"):
            text = set_options(
                self._sample("%s-server.conf" % server),
                "DEFAULT",
                dict(self._common(node, server), devices=node.devices, mount_check="false"),
            )
            text = set_options(text, "filter:recon", {"recon_cache_path": node.run_dir})
            self._write(node.conf(server), text)

    def _rings(self):
        """Build the rings on the proxy node and copy them to every node, as
        an operator distributes them."""
        builder_dir = self.proxy.swift_dir
        ring_builder = shlex.quote(self._bin("swift-ring-builder"))
        commands = {}
        for kind, port in BACKEND_PORTS.items():
            builder = shlex.quote(os.path.join(builder_dir, kind + ".builder"))
            steps = ["%s %s create %d %d 1" % (ring_builder, builder, PART_POWER, self.replicas)]
            steps += [
                "%s %s add r1z%d-%s:%d/d1 100" % (ring_builder, builder, zone, node.ip, port)
                for zone, node in enumerate(self.storage, 1)
            ]
            # rebalance: 1 is a warning (balance), 0 done; 2 is an error.
            steps.append("{ %s %s rebalance; [ $? -le 1 ]; }" % (ring_builder, builder))
            commands[kind] = (["sh", "-c", " && ".join(steps)], None)
        # The three rings at once: each step is a Python start.
        _run_together(commands, "building the rings")
        for kind in BACKEND_PORTS:
            for node in self.storage:
                shutil.copy(os.path.join(builder_dir, kind + ".ring.gz"), node.swift_dir)

    def install(self, *nodes, env=None):
        """``deploy/install-node.sh`` on each of ``nodes`` (default: every
        node) at once, as an operator runs it on a fleet.

        Returns their outputs, by node name (also kept in
        ``self.installed``).
        """
        commands = {}
        for node in nodes or self.nodes:
            role = "proxy" if node is self.proxy else "object"
            # The sandboxes' cgroups below the node's own, so that they go
            # with it, and on the node's CPUs.
            options = ["cgroup_parent=" + node.cgroup_parent]
            if node.cpus is not None:
                options.append("container_cpuset_cpus=" + node.cpus)
            environ = dict(
                os.environ,
                PYTHON=sys.executable,
                HOST_ROOT=node.host_root,
                MEMCACHE="%s:%d" % (self.proxy.ip, MEMCACHED_PORT),
                GATEWAY_OPTIONS=" ".join(options),
            )
            environ.update(env or {})
            commands[node.name] = (
                node.exec_argv(["bash", INSTALL_NODE, role, node.conf(role)]),
                environ,
            )
        outputs = _run_together(commands, "install-node.sh")
        self.installed.update(outputs)
        return outputs

    # -- servers ----------------------------------------------------------
    @staticmethod
    def _bin(name):
        return os.path.join(os.path.dirname(sys.executable), name)

    def _argv(self, node, server):
        if server == "memcached":
            return [
                shutil.which("memcached"),
                "-l",
                node.ip,
                "-p",
                str(MEMCACHED_PORT),
                "-U",
                "0",
                "-m",
                "64",
                "-u",
                "root",
            ]
        return [self._bin("swift-%s-server" % server), node.conf(server)]

    def _port(self, server):
        if server == "memcached":
            return MEMCACHED_PORT
        return PROXY_PORT if server == "proxy" else BACKEND_PORTS[server]

    def start(self, node, server):
        argv = node.exec_argv(self._argv(node, server))
        if self.accounting:
            argv = self._in_node_cgroup(node, argv)
        return processes.start(node.run_dir, node.log_dir, server, argv)

    def wait(self, node, server, timeout=START_TIMEOUT):
        pid = processes.running(node.run_dir, server)
        deadline = time.monotonic() + timeout
        url = "http://%s:%d/healthcheck" % (node.ip, self._port(server))
        while time.monotonic() < deadline:
            if not pid or not processes.alive(pid):
                break
            try:
                with self.inside_client():
                    if server == "memcached":
                        import socket

                        socket.create_connection((node.ip, MEMCACHED_PORT), 0.5).close()
                        return
                    with urllib.request.urlopen(url, timeout=1) as resp:
                        if resp.status == 200:
                            return
            except OSError:
                time.sleep(0.05)
        raise TopologyError(
            "%s on %s did not come up; see %s and %s"
            % (server, node.name, node.log_dir, os.path.join(self.root, "syslog.log"))
        )

    def stop(self, node, server):
        return processes.stop(node.run_dir, server)

    def restart(self, node):
        """Stop and start every server of ``node``, wait for them, then for
        the proxy to use the node again (a rolling restart's step)."""
        for server in node.servers:
            self.stop(node, server)
        for server in node.servers:
            self.start(node, server)
        for server in node.servers:
            self.wait(node, server)
        time.sleep(ERROR_SUPPRESSION_INTERVAL)

    # -- cgroups of the nodes ----------------------------------------------------------
    def _node_cgroup(self, node):
        version, why = cgroups.detect()
        if not version:
            raise TopologyError("a node pinned to CPUs needs usable cgroups: %s" % why)
        return cgroups.SandboxCgroup(node.cgroup_parent, "servers", version)

    def _in_node_cgroup(self, node, argv):
        """``argv`` started inside ``node``'s own cgroup, pinned to its
        CPUs if it has some (the gateway gives the sandboxes the same)."""
        group = self._node_cgroup(node)
        group.create(cgroups.Budget(cpus=node.cpus))
        procs = [os.path.join(d, "cgroup.procs") for d in group.directories()]
        script = (
            'for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f"; shift; done; '
            'shift; exec "$@"'
        )
        return ["sh", "-c", script, "sh"] + procs + ["--"] + list(argv)

    def log(self, pattern):
        """The lines of every node's syslog that match the regular
        expression ``pattern``."""
        found = re.compile(pattern)
        with open(os.path.join(self.root, "syslog.log"), errors="replace") as f:
            return [line.rstrip("\n") for line in f if found.search(line)]

    def cpu_seconds(self, node):
        """CPU seconds used so far by ``node``'s servers and sandboxes
        (``accounting``)."""
        version, _why = cgroups.detect()
        root = cgroups.ROOT
        if version == "v2":
            with open(os.path.join(root, node.cgroup_parent, "cpu.stat")) as f:
                usage = dict(line.split() for line in f)
            return int(usage["usage_usec"]) / 1e6
        with open(os.path.join(root, "cpuacct", node.cgroup_parent, "cpuacct.usage")) as f:
            return int(f.read()) / 1e9

    # -- the client -------------------------------------------------------
    @contextlib.contextmanager
    def inside_client(self):
        """This thread (and what it connects) in the client's namespace,
        then back in the namespace the process started in.

        Back there, not in the one the thread was in: in a process that
        imported the storlets engine, eventlet has made threads green, so
        two of them in this block share one OS thread and the second would
        take the client's namespace for home.  Requests from several
        threads at once belong in a client process instead
        (:meth:`client_popen`).
        """
        target = os.open(os.path.join(NETNS_DIR, self.client_node.namespace), os.O_RDONLY)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns client")
            yield
        finally:
            if _libc.setns(_HOME_NETNS, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
            os.close(target)

    def env(self, account="test"):
        """The ``ST_*`` variables of an account's user (``admin``: the
        reseller admin); with Keystone, its ``OS_*``."""
        if self.keystone:
            return dict(self.keystone.env() if account == "admin" else self.users[account])
        user = "admin:admin" if account == "admin" else "%s:%s" % (account, ACCOUNTS[account])
        return {"ST_AUTH": self.auth_url, "ST_USER": user, "ST_KEY": self.keys[account]}

    def client_argv(self, argv):
        if argv and not os.path.isabs(argv[0]) and os.path.exists(self._bin(argv[0])):
            argv = [self._bin(argv[0])] + list(argv[1:])
        return self.client_node.exec_argv(argv)

    def _client_options(self, account, env):
        # Only the account's credentials: none of this process's.
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("ST_", "OS_"))}
        environ.update(self.env(account))
        environ.update(env or {})
        return dict(
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environ,
        )

    def client(self, argv, account="test", check=True, env=None, timeout=600):
        """Run ``argv`` (a venv command or any program) on the client node."""
        done = subprocess.run(
            self.client_argv(argv), timeout=timeout, **self._client_options(account, env)
        )
        if check and done.returncode:
            raise TopologyError(
                "%s failed (%d):\n%s\n%s"
                % (" ".join(argv), done.returncode, done.stdout, done.stderr)
            )
        return done

    def client_popen(self, argv, account="test", env=None):
        """``argv`` started on the client node, in a session of its own."""
        return subprocess.Popen(
            self.client_argv(argv), start_new_session=True, **self._client_options(account, env)
        )

    def _enable_accounts(self):
        """What the operator does once per account: as the reseller admin,
        ``swift post -m Storlet-Enabled:True``; then the account's own user
        makes the storlet containers."""
        for account in ACCOUNTS:
            self.enable(account)
            self.client(["python", "-c", CONTAINERS], account=account)

    def enable(self, account, enabled=True):
        """``swift post -m Storlet-Enabled:...`` on ``account``, as the
        reseller admin."""
        return self.client(
            ["swift", "--os-storage-url", self.storage_url(account), "post"]
            + ["-m", "Storlet-Enabled:%s" % enabled],
            account="admin",
        )
