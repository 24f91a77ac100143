"""Where an embedded cluster keeps its files and which ports it uses."""

import dataclasses
import hashlib
import json
import os
import secrets

DEFAULT_BASE_PORT = 8080
ACCOUNT = "mlstorlets"
USER = "admin"
# A second account, so that isolation between accounts can be shown.
OTHER_ACCOUNT = "other"
# A Unix socket path holds at most 107 bytes (sun_path with its NUL).
SUN_PATH_MAX = 107


def default_state_dir():
    return os.environ.get("MLSTORLETS_AIO_DIR") or os.path.join(
        os.path.expanduser("~"), ".local", "state", "mlstorlets", "aio"
    )


@dataclasses.dataclass
class Layout:
    """The fixed facts of one embedded cluster, saved in ``cluster.json``."""

    state_dir: str
    base_port: int = DEFAULT_BASE_PORT
    nodes: int = 1
    key: str = ""
    # The proxy alone may listen beyond loopback, e.g. '0.0.0.0' inside a
    # network namespace that a benchmark's client reaches over a veth link.
    proxy_bind_ip: str = "127.0.0.1"
    other_key: str = ""
    # Set when the proxy authenticates with Keystone instead of tempauth:
    # the OS_* variables of the cluster's operator, read as the swift CLI
    # reads them (mlstorlets.client.connection).  Its project is the one
    # account of the cluster.
    keystone: dict = None

    def __post_init__(self):
        self.state_dir = os.path.abspath(self.state_dir)
        self.key = self.key or secrets.token_urlsafe(12)
        self.other_key = self.other_key or secrets.token_urlsafe(12)

    # -- ports ---------------------------------------------------------
    @property
    def proxy_port(self):
        return self.base_port

    @property
    def account_port(self):
        return self.base_port + 1

    @property
    def container_port(self):
        return self.base_port + 2

    @property
    def memcached_port(self):
        return self.base_port + 3

    def object_port(self, node):
        return self.base_port + 10 + node

    @property
    def ports(self):
        return [self.proxy_port, self.account_port, self.container_port, self.memcached_port] + [
            self.object_port(n) for n in range(self.nodes)
        ]

    # -- paths ---------------------------------------------------------
    def path(self, *parts):
        return os.path.join(self.state_dir, *parts)

    @property
    def swift_dir(self):
        return self.path("etc")

    def conf(self, server):
        return self.path("etc", server + ".conf")

    def devices(self, node):
        return self.path("srv", "node%d" % node)

    def device(self, node):
        return "d%d" % node

    @property
    def run_dir(self):
        return self.path("run")

    @property
    def log_dir(self):
        return self.path("log")

    @property
    def log_socket(self):
        return self.path("run", "log.sock")

    def storlets_root(self, server):
        return self.path("storlets", server)

    def longest_socket_path(self):
        """Bytes of the longest socket path the cluster reaches by name.

        Swift's servers log to the syslog sink by its path
        (``log_address``).  The sandboxes' sockets are bound inside them at
        short paths, and the host binds or reaches its end of each through
        a descriptor (``/proc/self/fd/N``), however deep.
        """
        return len(self.log_socket.encode())

    def pipes_dir(self, server):
        """Where a server's sandboxes keep their SBus sockets:
        ``<state>/p/<n>``."""
        return self.path("p", "x" if server == "proxy" else server.rsplit("-", 1)[-1])

    @property
    def cgroup_parent(self):
        """The cgroup (below each hierarchy's root) of the cluster's
        sandboxes."""
        return "mlstorlets/aio-%s" % hashlib.sha256(self.state_dir.encode()).hexdigest()[:12]

    @property
    def accounts(self):
        """The accounts the cluster prepares for storlets."""
        return ("main",) if self.keystone else ("main", "other")

    @property
    def auth_url(self):
        return "http://127.0.0.1:%d/auth/v1.0" % self.proxy_port

    @property
    def user(self):
        return "%s:%s" % (ACCOUNT, USER)

    @property
    def other_user(self):
        return "%s:%s" % (OTHER_ACCOUNT, USER)

    # -- persistence ---------------------------------------------------
    @property
    def record(self):
        return self.path("cluster.json")

    def save(self):
        os.makedirs(self.state_dir, exist_ok=True)
        with open(self.record + ".tmp", "w") as f:
            json.dump(dataclasses.asdict(self), f, indent=2)
        os.chmod(self.record + ".tmp", 0o600)
        os.replace(self.record + ".tmp", self.record)

    @classmethod
    def load(cls, state_dir):
        with open(os.path.join(os.path.abspath(state_dir), "cluster.json")) as f:
            return cls(**json.load(f))
