"""Swift configuration and rings of an embedded cluster.

The storlet parts of the proxy and object configurations are added by
:func:`mlstorlets.server.node.configure_node`, the code operators run on
their own nodes, so the embedded cluster exercises that path.
"""

import os

from swift.common.ring import RingBuilder

from mlstorlets.server.aio import layout as aio_layout
from mlstorlets.server.node import configure_node, write_conf

PART_POWER = 8
SERVER_NAMES = ("proxy-server", "account-server", "container-server")
# Bytes the proxy and object servers move per read and write; Swift's
# 64 KiB costs a green-thread switch and a system call per 64 KiB of every
# object a storlet reads through the proxy (benchmarks/sgd_remote_vs_local.py).
# Not more: the proxy's writer to a storlet asks for the next chunk once it
# has written the last, and Swift's client_timeout (60 s) then asks a slow
# storlet to read a chunk a minute.
CHUNK_BYTES = str(256 << 10)

PROXY_PIPELINE = (
    "catch_errors gatekeeper healthcheck proxy-logging cache listing_formats "
    "bulk tempurl s3api tempauth copy slo dlo versioned_writes symlink "
    "proxy-logging proxy-server"
)
# Keystone in tempauth's place, in the order Swift documents: authtoken
# validates the token (and sets X-User-Name, which the storlet ACLs read),
# s3token the S3 signatures, keystoneauth authorizes.
KEYSTONE_AUTH = "authtoken s3api s3token keystoneauth"


def object_server(node):
    return "object-server-%d" % node


def _common(layout, name):
    return {
        "swift_dir": layout.swift_dir,
        "devices": layout.devices(0),
        "mount_check": "false",
        "user": "root",
        "workers": "1",
        "log_name": name,
        "log_address": layout.log_socket,
        "log_level": "INFO",
        "bind_ip": "127.0.0.1",
    }


def _proxy(layout):
    filters = {
        "catch_errors": "catch_errors",
        "gatekeeper": "gatekeeper",
        "healthcheck": "healthcheck",
        "proxy-logging": "proxy_logging",
        "listing_formats": "listing_formats",
        "bulk": "bulk",
        "tempurl": "tempurl",
        "copy": "copy",
        "slo": "slo",
        "dlo": "dlo",
        "versioned_writes": "versioned_writes",
        "symlink": "symlink",
        # The S3 API, authenticated by tempauth: access key "account:user",
        # secret key the user's key.
        "s3api": "s3api",
    }
    sections = {
        "DEFAULT": dict(
            _common(layout, "proxy-server"),
            bind_ip=layout.proxy_bind_ip,
            bind_port=str(layout.proxy_port),
        ),
        "pipeline:main": {"pipeline": PROXY_PIPELINE},
        "app:proxy-server": {
            "use": "egg:swift#proxy",
            "account_autocreate": "true",
            "allow_account_management": "true",
            "object_chunk_size": CHUNK_BYTES,
            "client_chunk_size": CHUNK_BYTES,
        },
        "filter:cache": {"use": "egg:swift#memcache", "memcache_servers": _memcache(layout)},
        "filter:tempauth": {
            "use": "egg:swift#tempauth",
            "user_%s_%s" % (aio_layout.ACCOUNT, aio_layout.USER): "%s .admin .reseller_admin"
            % layout.key,
            "user_%s_%s" % (aio_layout.OTHER_ACCOUNT, aio_layout.USER): "%s .admin"
            % layout.other_key,
        },
    }
    for name, egg in filters.items():
        sections["filter:" + name] = {"use": "egg:swift#" + egg}
    if layout.keystone:
        del sections["filter:tempauth"]
        sections["pipeline:main"]["pipeline"] = PROXY_PIPELINE.replace(
            "s3api tempauth", KEYSTONE_AUTH
        )
        sections.update(keystone_filters(layout.keystone))
    return sections


def keystone_filters(environ):
    """The proxy's Keystone filters, for the operator in ``environ``.

    Parameters
    ----------
    environ : mapping
        ``OS_*`` variables, read as the ``swift`` command line reads them;
        the user validates the tokens of every other user, so needs the
        ``admin`` or ``service`` role.

    Returns
    -------
    dict
        ``filter:authtoken``, ``filter:s3token`` and ``filter:keystoneauth``.
    """
    from mlstorlets.client.connection import swift_options

    options = swift_options(environ)
    if options["auth_version"] != "3":
        raise ValueError(
            "Keystone authentication of the proxy needs the "
            "v3 identity API (OS_IDENTITY_API_VERSION=3)"
        )
    authtoken = {
        "paste.filter_factory": "keystonemiddleware.auth_token:filter_factory",
        "www_authenticate_uri": options["auth"],
        "auth_url": options["auth"],
        "auth_type": "password",
        "username": options["user"],
        "password": options["key"],
        # Swift's own memcache client (from the cache filter), not
        # python-memcached.
        "cache": "swift.cache",
        # keystoneauth decides: anonymous requests may still pass a
        # container's ACL or a temporary URL.
        "delay_auth_decision": "true",
        "include_service_catalog": "false",
    }
    for key in (
        "user_id",
        "user_domain_id",
        "user_domain_name",
        "project_id",
        "project_name",
        "project_domain_id",
        "project_domain_name",
    ):
        if options["os_options"].get(key):
            authtoken[key] = options["os_options"][key]
    return {
        "filter:authtoken": authtoken,
        "filter:s3token": {"use": "egg:swift#s3token", "auth_uri": options["auth"]},
        "filter:keystoneauth": {
            "use": "egg:swift#keystoneauth",
            "operator_roles": "admin, member",
            "reseller_admin_role": "ResellerAdmin",
        },
    }


def _backend(layout, name, kind, port, devices):
    app = {"use": "egg:swift#%s" % kind}
    if kind == "object":
        app.update(network_chunk_size=CHUNK_BYTES, disk_chunk_size=CHUNK_BYTES)
    return {
        "DEFAULT": dict(_common(layout, name), bind_port=str(port), devices=devices),
        "pipeline:main": {"pipeline": "healthcheck recon %s-server" % kind},
        "app:%s-server" % kind: app,
        "filter:healthcheck": {"use": "egg:swift#healthcheck"},
        "filter:recon": {"use": "egg:swift#recon", "recon_cache_path": layout.run_dir},
        "%s-replicator" % kind: {},
        "%s-updater" % kind: {},
        "%s-auditor" % kind: {},
    }


def _memcache(layout):
    return "127.0.0.1:%d" % layout.memcached_port


def _ring(path, replicas, devices):
    builder = RingBuilder(PART_POWER, replicas, 1)
    for i, (port, device) in enumerate(devices):
        builder.add_dev(
            {
                "id": i,
                "region": 1,
                "zone": i + 1,
                "ip": "127.0.0.1",
                "port": port,
                "device": device,
                "weight": 100,
                "meta": "",
            }
        )
    builder.rebalance(seed=1)
    builder.get_ring().save(path)


def write_all(layout, native_lib_dir, **gateway_extra):
    """Write every configuration file and ring of the cluster.

    ``gateway_extra`` are further storlet gateway options
    (``storlet_timeout``, ...).
    """
    for path in (layout.swift_dir, layout.run_dir, layout.log_dir):
        os.makedirs(path, exist_ok=True)
    for node in range(layout.nodes):
        os.makedirs(os.path.join(layout.devices(node), layout.device(node)), exist_ok=True)
    write_conf(
        os.path.join(layout.swift_dir, "swift.conf"),
        {
            "swift-hash": {
                "swift_hash_path_suffix": layout.key,
                "swift_hash_path_prefix": "mlstorlets",
            },
            "storage-policy:0": {"name": "gold", "default": "yes"},
        },
    )
    write_conf(layout.conf("proxy-server"), _proxy(layout))
    write_conf(
        layout.conf("account-server"),
        _backend(layout, "account-server", "account", layout.account_port, layout.devices(0)),
    )
    write_conf(
        layout.conf("container-server"),
        _backend(layout, "container-server", "container", layout.container_port, layout.devices(0)),
    )
    first = [(layout.account_port, layout.device(0))]
    _ring(os.path.join(layout.swift_dir, "account.ring.gz"), 1, first)
    _ring(
        os.path.join(layout.swift_dir, "container.ring.gz"),
        1,
        [(layout.container_port, layout.device(0))],
    )
    _ring(
        os.path.join(layout.swift_dir, "object.ring.gz"),
        layout.nodes,
        [(layout.object_port(n), layout.device(n)) for n in range(layout.nodes)],
    )

    gateway = dict(
        native_lib_dir=native_lib_dir,
        # The sandbox limits are node-config's defaults
        # (mlstorlets.server.node.SANDBOX_LIMITS); the cgroups
        # are the cluster's own, removed with it.
        cgroup_parent=layout.cgroup_parent,
        memcache_servers=_memcache(layout),
    )
    gateway.update(gateway_extra)
    configure_node(
        layout.conf("proxy-server"),
        "proxy",
        layout.swift_dir,
        layout.storlets_root("proxy"),
        sandbox_hostname="proxy",
        pipes_dir=layout.pipes_dir("proxy"),
        name="proxy",
        **gateway,
    )
    for node in range(layout.nodes):
        name = object_server(node)
        write_conf(
            layout.conf(name),
            _backend(layout, name, "object", layout.object_port(node), layout.devices(node)),
        )
        configure_node(
            layout.conf(name),
            "object",
            layout.swift_dir,
            layout.storlets_root(name),
            sandbox_hostname=name,
            pipes_dir=layout.pipes_dir(name),
            name=name,
            **gateway,
        )
