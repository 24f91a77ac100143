"""Configuring a Swift node for storlets (mlstorlets node-config)."""

import configparser
import json
import os
import shutil
import sys

import pytest
import tomllib
from paste.deploy.loadwsgi import NicerConfigParser

from mlstorlets.client import cli
from mlstorlets.server.node import (
    BACKUP_SUFFIX,
    SANDBOX_LIMITS,
    apply,
    configure_node,
    gateway_options,
    insert_into_pipeline,
    plan_configure,
    plan_remove,
)

SAMPLES = os.path.join(sys.prefix, "share", "swift-samples")

PROXY = (
    "catch_errors gatekeeper healthcheck proxy-logging cache "
    "tempauth copy slo dlo proxy-logging proxy-server"
)


def test_proxy_pipeline_puts_storlets_after_auth_and_before_copy():
    assert insert_into_pipeline(PROXY, "proxy").split()[5:14] == [
        "tempauth",
        "storlet_user_name",
        "storlet_enable",
        "storlet_copy",
        "storlet_handler",
        "storlet_origin",
        "storlet_extra_resources",
        "storlet_cache",
        "copy",
    ]


def test_keystone_needs_no_user_name_filter():
    names = insert_into_pipeline(
        "catch_errors authtoken keystoneauth copy proxy-server", "proxy"
    ).split()
    assert names == [
        "catch_errors",
        "authtoken",
        "keystoneauth",
        "storlet_enable",
        "storlet_copy",
        "storlet_handler",
        "storlet_origin",
        "storlet_extra_resources",
        "storlet_cache",
        "copy",
        "proxy-server",
    ]


def test_object_pipeline():
    assert insert_into_pipeline("healthcheck recon object-server", "object") == (
        "healthcheck recon storlet_origin storlet_failure storlet_handler object-server"
    )


def test_inserting_twice_changes_nothing():
    once = insert_into_pipeline(PROXY, "proxy")
    assert insert_into_pipeline(once, "proxy") == once


@pytest.mark.parametrize(
    "pipeline, message",
    [
        ("catch_errors tempauth proxy-server", "no copy"),
        ("catch_errors copy proxy-server", "no tempauth"),
        ("catch_errors copy tempauth proxy-server", "before copy"),
    ],
)
def test_pipelines_that_cannot_run_storlets_are_refused(pipeline, message):
    with pytest.raises(ValueError, match=message):
        insert_into_pipeline(pipeline, "proxy")


def test_configure_node_writes_the_three_files(tmp_path):
    conf = tmp_path / "object-server.conf"
    conf.write_text(
        "[DEFAULT]\nswift_dir = /srv/swift\n"
        "[pipeline:main]\npipeline = healthcheck object-server\n"
        "[app:object-server]\nuse = egg:swift#object\n"
    )
    written = configure_node(
        str(conf),
        "object",
        str(tmp_path),
        "/var/lib/storlets",
        name="obj1",
        native_lib_dir="/opt/sbus",
        container_mem_limit=2**30,
    )
    for _ in range(2):  # re-running is harmless
        configure_node(
            str(conf),
            "object",
            str(tmp_path),
            "/var/lib/storlets",
            name="obj1",
            native_lib_dir="/opt/sbus",
            container_mem_limit=2**30,
        )
    server = configparser.RawConfigParser()
    server.read(written["server_conf"])
    assert server.get("pipeline:main", "pipeline") == (
        "healthcheck storlet_origin storlet_failure storlet_handler object-server"
    )
    handler = dict(server.items("filter:storlet_handler"))
    assert handler["execution_server"] == "object"
    assert handler["storlet_gateway_module"] == "bubblewrap"
    assert handler["storlet_gateway_conf"] == written["gateway_conf"]
    assert server.get("filter:storlet_failure", "paste.filter_factory") == (
        "mlstorlets.server.middleware.storlet_failure:filter_factory"
    )
    gateway = configparser.RawConfigParser()
    gateway.read(written["gateway_conf"])
    assert gateway.get("DEFAULT", "native_lib_dir") == "/opt/sbus"
    assert gateway.get("DEFAULT", "container_mem_limit") == str(2**30)
    assert gateway.get("DEFAULT", "pipes_dir") == "/var/lib/storlets/pipes/scopes"
    client = configparser.RawConfigParser()
    client.read(written["internal_client_conf"])
    assert client.get("DEFAULT", "swift_dir") == "/srv/swift"


def test_the_proxy_waits_as_long_as_a_storlet_may_run(tmp_path):
    conf = tmp_path / "proxy-server.conf"
    conf.write_text(
        "[DEFAULT]\n[pipeline:main]\npipeline = catch_errors "
        "tempauth copy proxy-server\n[app:proxy-server]\n"
        "use = egg:swift#proxy\n"
    )
    configure_node(str(conf), "proxy", str(tmp_path), "/var/lib/storlets", storlet_timeout=100)
    server = configparser.RawConfigParser()
    server.read(str(conf))
    assert float(server.get("app:proxy-server", "node_timeout")) >= 100


def test_sandbox_limits_are_on_by_default():
    options = gateway_options("/srv/storlets")
    for key, value in SANDBOX_LIMITS.items():
        assert options[key] == value
    assert int(options["container_mem_limit"]) > 0
    assert int(options["container_pids_limit"]) > 0
    # An operator's value wins; None leaves the default.
    options = gateway_options("/srv/storlets", container_pids_limit=64, container_mem_limit=None)
    assert options["container_pids_limit"] == "64"
    assert options["container_mem_limit"] == SANDBOX_LIMITS["container_mem_limit"]


@pytest.mark.parametrize("gateway", ["docker", "podman"])
def test_container_gateways_get_the_limits_they_enforce(gateway):
    options = gateway_options("/srv/storlets", gateway)
    assert options["container_mem_limit"] == SANDBOX_LIMITS["container_mem_limit"]
    assert options["container_pids_limit"] == SANDBOX_LIMITS["container_pids_limit"]
    assert options["container_cpu_quota"] and options["container_cpu_period"]
    assert not [k for k in options if k.startswith("sandbox_")]


def test_the_container_engines_get_the_same_limits():
    deploy = os.path.join(os.path.dirname(__file__), "..", "..", "deploy")
    with open(os.path.join(deploy, "podman-containers.conf"), "rb") as f:
        podman = tomllib.load(f)["containers"]
    with open(os.path.join(deploy, "docker-daemon.json")) as f:
        docker = json.load(f)
    cpu = int(SANDBOX_LIMITS["sandbox_cpu_time_limit"])
    fsize = int(SANDBOX_LIMITS["sandbox_file_size_limit"])
    assert podman["read_only"] is True
    assert podman["default_capabilities"] == []
    assert podman["netns"] == "none"
    assert podman["pids_limit"] == int(SANDBOX_LIMITS["container_pids_limit"])
    assert sorted(podman["default_ulimits"]) == [
        "cpu=%d:%d" % (cpu, cpu + 10),
        "fsize=%d:%d" % (fsize, fsize),
    ]
    assert docker["no-new-privileges"] is True
    assert docker["userns-remap"]
    assert docker["default-ulimits"]["cpu"]["Soft"] == cpu
    assert docker["default-ulimits"]["fsize"]["Hard"] == fsize


def read_sample(role):
    with open(os.path.join(SAMPLES, "%s-server.conf-sample" % role)) as f:
        return f.read()


def keystone_sample():
    """Swift's proxy sample as its comments say to switch it to Keystone."""
    lines = []
    for line in read_sample("proxy").splitlines(keepends=True):
        if line.startswith("pipeline = "):
            line = "#" + line
        elif line.startswith("#pipeline = ") and "keystoneauth" in line:
            line = line[1:]
        elif line.startswith(("# [filter:authtoken]", "# [filter:keystoneauth]")):
            line = line[2:]
        elif line.startswith(
            ("# paste.filter_factory = keystonemiddleware", "# use = egg:swift#keystoneauth")
        ):
            line = line[2:]
        lines.append(line)
    return "".join(lines)


SAMPLE_CONFS = {
    "proxy-tempauth": ("proxy", lambda: read_sample("proxy")),
    "proxy-keystone": ("proxy", keystone_sample),
    "object": ("object", lambda: read_sample("object")),
}


@pytest.fixture(params=sorted(SAMPLE_CONFS))
def stock(request, tmp_path):
    role, text = SAMPLE_CONFS[request.param]
    conf = tmp_path / ("%s-server.conf" % role)
    conf.write_text(text())
    return role, conf


def configure(role, conf, **extra):
    return apply(
        plan_configure(str(conf), role, str(conf.parent), "/var/lib/storlets", **extra), backup=True
    )


def comments(text):
    return [line for line in text.splitlines() if line.lstrip().startswith("#")]


def paste_read(path):
    parser = NicerConfigParser(str(path))
    parser.optionxform = str
    parser.read(str(path))
    return parser


def test_the_operators_file_keeps_its_comments_and_order(stock):
    role, conf = stock
    before = conf.read_text()
    configure(role, conf)
    after = conf.read_text()
    marks = [c for c in comments(after) if c.startswith("# mlstorlets node-config set")]
    assert len(marks) == (role == "proxy")
    assert [c for c in comments(after) if c not in marks] == comments(before)
    old, new = paste_read_text(before, conf), paste_read(conf)
    # Every section of the stock file, in its order, then ours.
    assert new.sections()[: len(old.sections())] == old.sections()
    assert all(s.startswith("filter:storlet") for s in new.sections()[len(old.sections()) :])
    assert "storlet_handler" in new.get("pipeline:main", "pipeline").split()
    changed = {("pipeline:main", "pipeline"), ("app:proxy-server", "node_timeout")}
    for section in old.sections():
        for key, value in old.items(section):
            if (section, key) not in changed:
                assert new.get(section, key) == value


def _subsequence(short, long):
    it = iter(long)
    return all(any(x == y for y in it) for x in short)


def paste_read_text(text, conf):
    copy = conf.parent / "stock.conf"
    copy.write_text(text)
    return paste_read(copy)


def test_every_comment_of_the_sample_stays_in_place(stock):
    role, conf = stock
    before = conf.read_text()
    configure(role, conf)
    after = conf.read_text().splitlines()
    assert _subsequence(before.splitlines()[:10], after)
    assert _subsequence(comments(before), comments("\n".join(after)))
    # Only the pipeline line changes among the sample's own lines.
    kept = [line for line in before.splitlines() if not line.startswith("pipeline = ")]
    assert _subsequence(kept, after)


def test_remove_gives_back_the_stock_file_byte_for_byte(stock):
    role, conf = stock
    before = conf.read_bytes()
    configure(role, conf, storlet_timeout=100)
    assert conf.read_bytes() != before
    done = apply(plan_remove(str(conf)), backup=True)
    assert conf.read_bytes() == before
    assert sorted(os.listdir(conf.parent)) == [conf.name]
    assert any("deleted the copy" in line for line in done)


def test_a_second_run_writes_nothing(stock):
    role, conf = stock
    configure(role, conf)
    files = sorted(conf.parent.iterdir())
    stamps = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    changes = plan_configure(str(conf), role, str(conf.parent), "/var/lib/storlets")
    assert not [c for c in changes if c.changed]
    assert configure(role, conf) == []
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == stamps


def test_dry_run_prints_the_diff_and_writes_nothing(tmp_path, capsys):
    conf = tmp_path / "proxy-server.conf"
    conf.write_text(read_sample("proxy"))
    argv = [
        "node-config",
        "--role",
        "proxy",
        "--server-conf",
        str(conf),
        "--conf-dir",
        str(tmp_path),
    ]
    assert cli.main(argv + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["proxy-server.conf"]
    assert conf.read_text() == read_sample("proxy")
    assert "+++ %s" % conf in out
    assert "+++ %s" % (tmp_path / "storlet-gateway.conf") in out
    assert "+++ %s" % (tmp_path / "storlet-internal-client.conf") in out
    assert "+[filter:storlet_handler]" in out
    assert "node_timeout = 45 (was unset): a storlet on an object server" in out
    assert "dry run: nothing written" in out

    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "copied to %s%s" % (conf, BACKUP_SUFFIX) in out
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.startswith("nothing to change")
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert cli.main(["node-config", "--remove", "--dry-run", "--server-conf", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "-[filter:storlet_handler]" in out
    assert "+++ /dev/null" in out
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps
    assert cli.main(["node-config", "--remove", "--server-conf", str(conf)]) == 0
    assert conf.read_text() == read_sample("proxy")


def test_the_backup_is_the_file_before_the_first_change(tmp_path):
    conf = tmp_path / "object-server.conf"
    conf.write_text(read_sample("object"))
    conf.chmod(0o640)
    configure("object", conf)
    backup = tmp_path / ("object-server.conf" + BACKUP_SUFFIX)
    assert backup.read_text() == read_sample("object")
    assert backup.stat().st_mode & 0o777 == 0o640
    assert conf.stat().st_mode & 0o777 == 0o640
    # A later change keeps the first copy.
    configure("object", conf, gateway="podman")
    assert backup.read_text() == read_sample("object")
    assert "storlet_gateway_module = podman" in conf.read_text()


def test_the_operators_node_timeout_is_raised_and_given_back(tmp_path):
    conf = tmp_path / "proxy-server.conf"
    stock = read_sample("proxy").replace(
        "use = egg:swift#proxy\n", "use = egg:swift#proxy\nnode_timeout=20\n", 1
    )
    conf.write_text(stock)
    done = configure("proxy", conf)
    assert any("node_timeout: 20 -> 45: a storlet" in line for line in done)
    text = conf.read_text()
    assert "\nnode_timeout=20\n" not in text
    assert "it was: node_timeout=20\nnode_timeout = 45\n" in text
    # A longer storlet_timeout raises it again, from the operator's value.
    configure("proxy", conf, storlet_timeout=100)
    assert "node_timeout = 105\n" in conf.read_text()
    apply(plan_remove(str(conf)))
    assert conf.read_text() == stock


def test_a_node_timeout_changed_since_is_the_operators(tmp_path):
    conf = tmp_path / "proxy-server.conf"
    conf.write_text(read_sample("proxy"))
    configure("proxy", conf)
    conf.write_text(conf.read_text().replace("\nnode_timeout = 45\n", "\nnode_timeout = 90\n"))
    changes = plan_remove(str(conf))
    assert any("node_timeout was changed" in note for note in changes[0].notes)
    apply(changes)
    assert "\nnode_timeout = 90\n" in conf.read_text()
    assert "mlstorlets" not in conf.read_text()


def test_a_long_enough_node_timeout_is_left_alone(tmp_path):
    conf = tmp_path / "proxy-server.conf"
    stock = read_sample("proxy").replace("[DEFAULT]\n", "[DEFAULT]\nnode_timeout = 60\n", 1)
    conf.write_text(stock)
    configure("proxy", conf)
    assert "node_timeout = 45" not in conf.read_text()
    apply(plan_remove(str(conf)))
    assert conf.read_text() == stock


def test_a_pipeline_over_several_lines_keeps_its_layout(tmp_path):
    conf = tmp_path / "object-server.conf"
    stock = read_sample("object").replace(
        "pipeline = healthcheck recon backend_ratelimit object-server",
        "pipeline =\n    healthcheck\n    recon backend_ratelimit\n    object-server",
    )
    conf.write_text(stock)
    configure("object", conf)
    text = conf.read_text()
    assert (
        "    recon backend_ratelimit storlet_origin storlet_failure storlet_handler\n"
        "    object-server\n" in text
    )
    assert paste_read(conf).get("pipeline:main", "pipeline").split()[-3:] == [
        "storlet_failure",
        "storlet_handler",
        "object-server",
    ]
    apply(plan_remove(str(conf)))
    assert conf.read_text() == stock


def test_switching_to_keystone_drops_the_user_name_filter(tmp_path):
    conf = tmp_path / "proxy-server.conf"
    conf.write_text(read_sample("proxy"))
    configure("proxy", conf)
    assert "[filter:storlet_user_name]" in conf.read_text()
    text = conf.read_text().replace(" tempauth storlet_", " authtoken keystoneauth storlet_")
    conf.write_text(text)
    configure("proxy", conf)
    assert "storlet_user_name" not in conf.read_text()


def test_remove_deletes_the_files_the_handler_names(tmp_path):
    conf = tmp_path / "object-server.conf"
    conf.write_text(read_sample("object"))
    elsewhere = tmp_path / "storlets"
    elsewhere.mkdir()
    apply(plan_configure(str(conf), "object", str(elsewhere), "/var/lib/storlets", name="obj1"))
    assert sorted(os.listdir(elsewhere)) == [
        "storlet-gateway-obj1.conf",
        "storlet-internal-client-obj1.conf",
    ]
    apply(plan_remove(str(conf)))
    assert os.listdir(elsewhere) == []
    assert conf.read_text() == read_sample("object")


def test_remove_on_a_stock_file_changes_nothing(tmp_path):
    conf = tmp_path / "proxy-server.conf"
    shutil.copy(os.path.join(SAMPLES, "proxy-server.conf-sample"), conf)
    changes = plan_remove(str(conf))
    assert not [c for c in changes if c.changed]
