"""Run a benchmark's embedded cluster with other engine settings.

``aio up`` writes the servers' and the storlet gateways' configuration
once; a benchmark that compares settings stops its cluster, changes them
and starts it again.
"""

import configparser
import glob
import os

# The sandbox agents of mlstorlets.server.gateway.bubblewrap.
AGENTS = ("persistent", "upstream")


def _edit(path, section, values):
    parser = configparser.RawConfigParser()
    parser.optionxform = str
    parser.read(path)
    for key, value in values.items():
        parser.set(section, key, str(value))
    with open(path, "w") as f:
        parser.write(f)


def reconfigure(
    cluster,
    agent=None,
    storlet_workers=None,
    proxy_workers=None,
    object_workers=None,
    storlet_cache_time=None,
    daemon_check_time=None,
    keep_cache_private=None,
    log=None,
):
    """Stop ``cluster``, change its settings, start it again.

    Parameters
    ----------
    agent : {'persistent', 'upstream'}, optional
        The sandbox agent (gateway option ``storlet_agent``).
    storlet_workers : int, optional
        Worker processes per storlet (gateway option ``storlet_workers``).
    proxy_workers, object_workers : int, optional
        Swift server worker processes.
    storlet_cache_time : float, optional
        Seconds the proxy keeps a storlet's metadata in memcache (0: off;
        mlstorlets.server.middleware.storlet_cache).
    daemon_check_time : float, optional
        Seconds a worker takes a daemon it saw running to run still
        (gateway option ``daemon_check_time``; 0: asked every time).
    keep_cache_private : bool, optional
        Whether object servers keep an object's pages in the page cache
        after an authenticated GET (Swift's default: they drop them).
    """
    quiet = log or (lambda msg: None)
    cluster.down(log=quiet)
    etc = os.path.dirname(cluster.layout.conf("proxy-server"))
    gateway = {}
    if agent is not None:
        gateway["storlet_agent"] = agent
    if storlet_workers is not None:
        gateway["storlet_workers"] = storlet_workers
    if daemon_check_time is not None:
        gateway["daemon_check_time"] = daemon_check_time
    if gateway:
        for path in glob.glob(os.path.join(etc, "storlet-gateway-*.conf")):
            _edit(path, "DEFAULT", gateway)
    if proxy_workers is not None:
        _edit(cluster.layout.conf("proxy-server"), "DEFAULT", {"workers": proxy_workers})
    if storlet_cache_time is not None:
        _edit(
            cluster.layout.conf("proxy-server"),
            "filter:storlet_cache",
            {"cache_time": storlet_cache_time},
        )
    if object_workers is not None:
        for path in glob.glob(os.path.join(etc, "object-server-*.conf")):
            _edit(path, "DEFAULT", {"workers": object_workers})
    if keep_cache_private is not None:
        for path in glob.glob(os.path.join(etc, "object-server-*.conf")):
            _edit(
                path,
                "app:object-server",
                {"keep_cache_private": "true" if keep_cache_private else "false"},
            )
    cluster.up(log=quiet)
