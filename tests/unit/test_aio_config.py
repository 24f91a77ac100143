"""The embedded cluster's configuration: which servers listen where."""

import configparser

from mlstorlets.server.aio import swiftconf
from mlstorlets.server.aio.layout import Layout


def bind_ips(layout):
    found = {}
    for name in (
        "proxy-server",
        "account-server",
        "container-server",
        "object-server-0",
        "object-server-1",
    ):
        conf = configparser.ConfigParser(interpolation=None)
        conf.read(layout.conf(name))
        found[name] = conf["DEFAULT"]["bind_ip"]
    return found


def test_every_server_listens_on_loopback_by_default(tmp_path):
    layout = Layout(str(tmp_path), base_port=30000, nodes=2)
    swiftconf.write_all(layout, str(tmp_path / "native"))
    assert set(bind_ips(layout).values()) == {"127.0.0.1"}


def test_only_the_proxy_takes_another_bind_address(tmp_path):
    layout = Layout(str(tmp_path), base_port=30000, nodes=2, proxy_bind_ip="0.0.0.0")
    swiftconf.write_all(layout, str(tmp_path / "native"))
    found = bind_ips(layout)
    assert found.pop("proxy-server") == "0.0.0.0"
    assert set(found.values()) == {"127.0.0.1"}


def test_the_bind_address_is_kept_with_the_cluster(tmp_path):
    Layout(str(tmp_path), proxy_bind_ip="0.0.0.0").save()
    assert Layout.load(str(tmp_path)).proxy_bind_ip == "0.0.0.0"


def test_the_default_state_directory_fits_under_a_long_home(monkeypatch):
    """``make demo`` boots the cluster in the default state directory,
    under the user's home: a home of 48 bytes leaves it room."""
    from mlstorlets.server.aio.layout import SUN_PATH_MAX, default_state_dir

    monkeypatch.delenv("MLSTORLETS_AIO_DIR", raising=False)
    monkeypatch.setenv("HOME", "/home/" + "u" * 42)
    state = default_state_dir()
    assert state.startswith("/home/" + "u" * 42 + "/")
    assert Layout(state).longest_socket_path() <= SUN_PATH_MAX
