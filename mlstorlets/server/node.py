"""Configure a Swift proxy or object node to run storlets.

What an operator does on every node of an existing cluster, and what the
embedded cluster does to its own servers, is this same code: add the
upstream ``storlet_handler`` middleware to the server's pipeline, write the
storlet gateway configuration, and the internal client configuration the
middleware needs.  ``mlstorlets node-config`` is its command line.
"""

import configparser
import os

from mlstorlets.sandbox import protocol

ROLES = ("proxy", "object")
GATEWAYS = ("bubblewrap", "docker", "podman")
STORLET_CONTAINERS = {
    "storlet_container": "storlet",
    "storlet_dependency": "dependency",
    "storlet_logcontainer": "log",
}
# Under tempauth the storlet ACL code reads keystone's user name header;
# this filter provides it from REMOTE_USER (see mlstorlets.server.middleware).
USER_NAME_FILTER = "storlet_user_name"
# Performs copies through a storlet so that a failure writes nothing.
COPY_FILTER = "storlet_copy"
# Keeps a failing storlet from error-limiting its object server.
FAILURE_FILTER = "storlet_failure"
# Answers the storlet middleware's HEAD of the storlet object from memcache.
CACHE_FILTER = "storlet_cache"
# Fails an invocation whose extra resource cannot be read.
RESOURCES_FILTER = "storlet_extra_resources"
# Lets only a reseller admin enable storlets on an account.
ENABLE_FILTER = "storlet_enable"
AUTH_FILTERS = ("tempauth", "keystoneauth")
GiB = 1024**3
# Limits every sandbox gets unless configured otherwise (0 lifts one).
# Upstream's names where upstream has the option; see
# mlstorlets.server.gateway.bubblewrap for how each is enforced there.
SANDBOX_LIMITS = {
    # Memory of the whole sandbox, its tmpfs included, where cgroups are
    # usable; and address space of each of its processes (a daemon with
    # numpy, OpenCV and scikit-learn loaded maps a large part of it).
    "container_mem_limit": str(4 * GiB),
    # Processes and threads of one sandbox (an idle daemon has about 10).
    "container_pids_limit": "256",
    # One core per sandbox (quota / period), in its cgroup.
    "container_cpu_period": "100000",
    "container_cpu_quota": "100000",
    # A cgroup per sandbox when the host has usable cgroups (v2, or v1 with
    # the memory, pids, cpu, cpuacct and cpuset hierarchies); 'off' leaves
    # the rlimits alone.  Their parent, below each hierarchy's root:
    "sandbox_cgroups": "auto",
    "cgroup_parent": "mlstorlets",
    # System calls no storlet needs refused (mlstorlets.server.gateway.seccomp).
    "sandbox_seccomp": "on",
    # CPU-seconds of one sandbox process over its life: a backstop behind
    # storlet_timeout, which bounds each request.
    "sandbox_cpu_time_limit": "3600",
    # Any file a storlet writes, and the whole of its private /tmp, in bytes
    # and in files.
    "sandbox_file_size_limit": str(GiB),
    "sandbox_tmp_size": str(GiB),
    "sandbox_tmp_inodes": "65536",
}
OUR_FILTERS = {
    USER_NAME_FILTER: "mlstorlets.server.middleware.user_name:filter_factory",
    COPY_FILTER: "mlstorlets.server.middleware.storlet_copy:filter_factory",
    FAILURE_FILTER: "mlstorlets.server.middleware.storlet_failure:filter_factory",
    CACHE_FILTER: "mlstorlets.server.middleware.storlet_cache:filter_factory",
    RESOURCES_FILTER: "mlstorlets.server.middleware.extra_resources:filter_factory",
    ENABLE_FILTER: "mlstorlets.server.middleware.storlet_enable:filter_factory",
}
# Seconds a storlet object's metadata is kept in memcache (0: not at all).
STORLET_CACHE_TIME = "10"


class ConfigError(ValueError):
    """A node's Swift configuration that storlets cannot be added to, or an
    option out of its range: the operator's to fix, nothing was written."""


def insert_into_pipeline(pipeline, role):
    """Return ``pipeline`` with the storlet middleware in its place.

    In a proxy it goes after authentication and before ``copy`` (so that a
    COPY or a PUT with ``X-Copy-From`` runs the storlet on the GET of the
    source), preceded by :mod:`mlstorlets.server.middleware.storlet_copy`; in an
    object server, right before ``object-server``, preceded by
    :mod:`mlstorlets.server.middleware.storlet_failure`.

    >>> insert_into_pipeline('catch_errors tempauth copy proxy-server',
    ...                      'proxy')  # doctest: +NORMALIZE_WHITESPACE
    'catch_errors tempauth storlet_user_name storlet_enable storlet_copy
     storlet_handler storlet_extra_resources storlet_cache copy proxy-server'
    """
    names = [n for n in pipeline.split() if n != "storlet_handler" and n not in OUR_FILTERS]
    if role == "object":
        if names[-1] != "object-server":
            raise ConfigError("an object pipeline must end with object-server")
        return " ".join(names[:-1] + [FAILURE_FILTER, "storlet_handler", "object-server"])
    if role != "proxy":
        raise ConfigError("role must be one of %s" % (ROLES,))
    if "copy" not in names:
        raise ConfigError(
            "the proxy pipeline has no copy middleware; storlets need it for copy semantics"
        )
    auth = [i for i, n in enumerate(names) if n in AUTH_FILTERS]
    if not auth:
        raise ConfigError("the proxy pipeline has no tempauth or keystoneauth")
    at = auth[-1] + 1
    if at > names.index("copy"):
        raise ConfigError("authentication must come before copy")
    added = [ENABLE_FILTER, COPY_FILTER, "storlet_handler", RESOURCES_FILTER, CACHE_FILTER]
    if names[auth[-1]] == "tempauth":
        added.insert(0, USER_NAME_FILTER)
    return " ".join(names[:at] + added + names[at:])


def datagram_limit(agent):
    """Bytes of an invocation's SBus datagram that ``agent`` receives:
    libsbus's buffer for upstream's daemon, more for the project's own."""
    if agent == "persistent":
        return protocol.AGENT_DATAGRAM_LIMIT
    return protocol.SBUS_DATAGRAM_LIMIT


def gateway_options(host_root, gateway="bubblewrap", **extra):
    """The ``[DEFAULT]`` options of the storlet gateway configuration."""
    if gateway not in GATEWAYS:
        raise ConfigError("gateway must be one of %s" % (GATEWAYS,))
    options = {
        "host_root": host_root,
        "cache_dir": os.path.join(host_root, "cache", "scopes"),
        "log_dir": os.path.join(host_root, "logs", "scopes"),
        "storlets_dir": os.path.join(host_root, "storlets", "scopes"),
        "pipes_dir": os.path.join(host_root, "pipes", "scopes"),
        "restart_linux_container_timeout": "10",
        "storlet_timeout": "40",
        "storlet_daemon_factory_debug_level": "INFO",
        "storlet_daemon_debug_level": "INFO",
        "default_container_image_name": "mlstorlets-sandbox",
    }
    if gateway == "bubblewrap":
        options.update(SANDBOX_LIMITS)
    else:
        options.update((k, v) for k, v in SANDBOX_LIMITS.items() if k.startswith("container_"))
    options.update({k: str(v) for k, v in extra.items() if v is not None})
    return options


def internal_client_conf(swift_dir, memcache_servers):
    """The internal client pipeline the storlet middleware builds."""
    return {
        "DEFAULT": {"swift_dir": swift_dir},
        "pipeline:main": {"pipeline": "catch_errors proxy-logging cache proxy-server"},
        "app:proxy-server": {"use": "egg:swift#proxy"},
        "filter:cache": {"use": "egg:swift#memcache", "memcache_servers": memcache_servers},
        "filter:catch_errors": {"use": "egg:swift#catch_errors"},
        "filter:proxy-logging": {"use": "egg:swift#proxy_logging"},
    }


def configure_node(
    server_conf,
    role,
    conf_dir,
    host_root,
    gateway="bubblewrap",
    memcache_servers="127.0.0.1:11211",
    execute_on_proxy=False,
    name="",
    storlet_cache_time=STORLET_CACHE_TIME,
    **gateway_extra,
):
    """Add storlets to one Swift server's configuration file, in place.

    Parameters
    ----------
    server_conf : str
        Path of the server's paste configuration (``proxy-server.conf`` or
        ``object-server.conf``).  Re-running is harmless.
    role : {'proxy', 'object'}
    conf_dir : str
        Where to write ``storlet-gateway.conf`` and
        ``storlet-internal-client.conf`` for this server.
    host_root : str
        The gateway's state: storlet cache, pipes and logs of the sandboxes.
    gateway : {'bubblewrap', 'docker', 'podman'}
    memcache_servers : str
        For the internal client.
    execute_on_proxy : bool
        Run every storlet on the proxy (``storlet_execute_on_proxy``).
    name : str
        Suffix of the files written, where several servers share
        ``conf_dir`` (as in the embedded cluster).
    storlet_cache_time : str or float
        Seconds a proxy keeps a storlet object's metadata in memcache
        (:mod:`mlstorlets.server.middleware.storlet_cache`); 0 turns that off.
    **gateway_extra
        Further gateway options (see :mod:`mlstorlets.server.gateway.bubblewrap`).

    Returns
    -------
    dict
        Paths of the files written.
    """
    parser = _read(server_conf)
    swift_dir = parser.get("DEFAULT", "swift_dir", fallback="/etc/swift")
    suffix = "-" + name if name else ""
    gateway_conf = os.path.join(conf_dir, "storlet-gateway%s.conf" % suffix)
    ic_conf = os.path.join(conf_dir, "storlet-internal-client%s.conf" % suffix)

    parser.set(
        "pipeline:main",
        "pipeline",
        insert_into_pipeline(parser.get("pipeline:main", "pipeline"), role),
    )
    handler = {
        "use": "egg:storlets#storlet_handler",
        "execution_server": role,
        "storlet_gateway_module": gateway,
        "storlet_gateway_conf": gateway_conf,
        "internal_client_conf_path": ic_conf,
        "storlet_execute_on_proxy": str(bool(execute_on_proxy)).lower(),
    }
    handler.update(STORLET_CONTAINERS)
    _set_section(parser, "filter:storlet_handler", handler)
    if role == "proxy":
        _cover_storlet_timeout(parser, gateway_extra.get("storlet_timeout"))
    pipeline = parser.get("pipeline:main", "pipeline").split()
    for name, factory in OUR_FILTERS.items():
        if name in pipeline:
            section = {"paste.filter_factory": factory}
            if name == CACHE_FILTER:
                section.update(
                    storlet_container=STORLET_CONTAINERS["storlet_container"],
                    cache_time=str(storlet_cache_time),
                )
            if name == COPY_FILTER:
                # Published in /info: what the sandboxes' agent receives.
                section["sbus_datagram_limit"] = str(
                    datagram_limit(gateway_extra.get("storlet_agent", "persistent"))
                    if gateway == "bubblewrap"
                    else protocol.SBUS_DATAGRAM_LIMIT
                )
            if name == RESOURCES_FILTER:
                section.update(
                    (k, v) for k, v in STORLET_CONTAINERS.items() if k != "storlet_logcontainer"
                )
            _set_section(parser, "filter:" + name, section)
    _write(parser, server_conf)

    options = gateway_options(host_root, gateway, **gateway_extra)
    options.update(STORLET_CONTAINERS)
    _write(_parser({"DEFAULT": options}), gateway_conf)
    _write(_parser(internal_client_conf(swift_dir, memcache_servers)), ic_conf)
    return {
        "server_conf": server_conf,
        "gateway_conf": gateway_conf,
        "internal_client_conf": ic_conf,
    }


def _cover_storlet_timeout(parser, storlet_timeout=None):
    """Let the proxy wait for a storlet as long as the storlet may run.

    A storlet on an object server sends its first byte only when it has its
    output; with Swift's default ``node_timeout`` (10 s) the proxy gives up
    on the node before, and retries the storlet on the next one.
    """
    needed = float(storlet_timeout or gateway_options("")["storlet_timeout"]) + 5
    section = "app:proxy-server"
    current = float(parser.get(section, "node_timeout", fallback="10"))
    if current < needed:
        parser.set(section, "node_timeout", "%g" % needed)


def _parser(sections=None):
    # Swift's confs are case-sensitive and use %-free values: RawConfigParser
    # with optionxform=str round-trips them.
    parser = configparser.RawConfigParser()
    parser.optionxform = str
    for name, values in (sections or {}).items():
        _set_section(parser, name, values)
    return parser


def _set_section(parser, name, values):
    if name != "DEFAULT" and not parser.has_section(name):
        parser.add_section(name)
    for key, value in values.items():
        parser.set(name, key, value)


def _read(path):
    parser = _parser()
    if not parser.read(path):
        raise ConfigError("no Swift server configuration at %s" % path)
    return parser


def write_conf(path, sections):
    """Write a Swift-style configuration file from a dict of sections."""
    _write(_parser(sections), path)


def _write(parser, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        parser.write(f)
    os.replace(tmp, path)
