"""Configuring a Swift node for storlets (mlstorlets node-config)."""

import configparser
import json
import os

import pytest
import tomllib

from mlstorlets.server.node import (
    SANDBOX_LIMITS,
    configure_node,
    gateway_options,
    insert_into_pipeline,
)

PROXY = (
    "catch_errors gatekeeper healthcheck proxy-logging cache "
    "tempauth copy slo dlo proxy-logging proxy-server"
)


def test_proxy_pipeline_puts_storlets_after_auth_and_before_copy():
    assert insert_into_pipeline(PROXY, "proxy").split()[5:13] == [
        "tempauth",
        "storlet_user_name",
        "storlet_enable",
        "storlet_copy",
        "storlet_handler",
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
        "storlet_extra_resources",
        "storlet_cache",
        "copy",
        "proxy-server",
    ]


def test_object_pipeline():
    assert insert_into_pipeline("healthcheck recon object-server", "object") == (
        "healthcheck recon storlet_failure storlet_handler object-server"
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
        "healthcheck storlet_failure storlet_handler object-server"
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
