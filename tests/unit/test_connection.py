"""The client reads Swift credentials as the ``swift`` command line does."""

import re

import pytest

from mlstorlets.client.connection import connection_from_environment, swift_options
from mlstorlets.server.aio.layout import Layout
from mlstorlets.server.aio.swiftconf import _proxy, keystone_filters
from mlstorlets.server.node import insert_into_pipeline

V3 = {
    "OS_AUTH_URL": "http://127.0.0.1:5000/v3",
    "OS_USERNAME": "alice",
    "OS_PASSWORD": "secret",
    "OS_PROJECT_NAME": "science",
}
V1 = {"ST_AUTH": "http://127.0.0.1:8080/auth/v1.0", "ST_USER": "a:b", "ST_KEY": "k"}


@pytest.mark.parametrize(
    "variable", ["OS_IDENTITY_API_VERSION", "OS_AUTH_VERSION", "ST_AUTH_VERSION"]
)
@pytest.mark.parametrize("value", ["3", "3.0"])
def test_the_identity_api_version_is_read(variable, value):
    # Without a domain variable the version cannot be guessed: only the
    # variable says v3 (swiftclient's service module alone says v2.0).
    conn = connection_from_environment(dict(V3, **{variable: value}))
    assert conn.auth_version == "3"
    assert conn.authurl == V3["OS_AUTH_URL"] and conn.user == "alice"
    assert conn.key == "secret"
    assert conn.os_options["project_name"] == "science"


def test_version_variables_take_the_swift_clis_precedence():
    env = dict(V3, ST_AUTH_VERSION="2.0", OS_AUTH_VERSION="3", OS_IDENTITY_API_VERSION="3")
    assert swift_options(env)["auth_version"] == "2.0"
    env = dict(V3, OS_AUTH_VERSION="2", OS_IDENTITY_API_VERSION="3")
    assert swift_options(env)["auth_version"] == "2.0"


def test_domains_imply_v3_and_are_passed_on():
    env = dict(V3, OS_USER_DOMAIN_NAME="Default", OS_PROJECT_DOMAIN_ID="default")
    options = swift_options(env)
    assert options["auth_version"] == "3"
    assert options["os_options"]["user_domain_name"] == "Default"
    assert options["os_options"]["project_domain_id"] == "default"


def test_v1_credentials():
    conn = connection_from_environment(V1)
    assert (conn.auth_version, conn.authurl, conn.user, conn.key) == (
        "1.0",
        V1["ST_AUTH"],
        "a:b",
        "k",
    )


def test_a_token_and_storage_url_need_no_password():
    conn = connection_from_environment(
        {"OS_AUTH_TOKEN": "tok", "OS_STORAGE_URL": "http://s/v1/AUTH_x"}
    )
    assert conn.os_options["auth_token"] == "tok"
    assert conn.os_options["object_storage_url"] == "http://s/v1/AUTH_x"


@pytest.mark.parametrize(
    "missing,named",
    [
        ("OS_PASSWORD", "OS_PASSWORD"),
        ("OS_AUTH_URL", "OS_AUTH_URL"),
        ("OS_USERNAME", "OS_USERNAME"),
    ],
)
def test_an_incomplete_v3_setting_names_what_is_missing(missing, named):
    env = dict(V3, OS_IDENTITY_API_VERSION="3")
    del env[missing]
    with pytest.raises(ValueError, match="credentials.*requires.*" + named):
        connection_from_environment(env)


def test_no_credentials():
    with pytest.raises(ValueError, match="no usable Swift credentials") as err:
        connection_from_environment({})
    # The variables, not the swift command's flags, which mlstorlets lacks.
    assert "ST_AUTH, ST_USER, and ST_KEY" in str(err.value)
    assert "aio env" in str(err.value)
    assert not re.search(r"(^|\s)-[AUK]\b|--os-", str(err.value))


def test_the_keystone_extra_is_installed():
    # swiftclient authenticates with Keystone through these; without them
    # a v3 connection fails at its first request.
    from swiftclient import client

    assert client.ksclient_v3 is not None and client.ksa_v3 is not None


def test_the_environment_is_not_changed_by_a_parse():
    import os

    from swiftclient import shell

    before = dict(os.environ)
    swift_options(dict(V3, OS_IDENTITY_API_VERSION="3"))
    assert shell.environ is os.environ and dict(os.environ) == before


# -- the proxy of a Keystone cluster ---------------------------------------
KEYSTONE = dict(
    V3, OS_IDENTITY_API_VERSION="3", OS_USER_DOMAIN_NAME="Default", OS_PROJECT_DOMAIN_NAME="Default"
)


def test_a_keystone_cluster_authenticates_with_keystone_only(tmp_path):
    sections = _proxy(Layout(str(tmp_path), keystone=KEYSTONE))
    pipeline = sections["pipeline:main"]["pipeline"].split()
    assert "tempauth" not in pipeline and "filter:tempauth" not in sections
    at = pipeline.index("authtoken")
    assert pipeline[at : at + 4] == ["authtoken", "s3api", "s3token", "keystoneauth"]
    authtoken = sections["filter:authtoken"]
    assert authtoken["auth_url"] == V3["OS_AUTH_URL"]
    assert (authtoken["username"], authtoken["password"]) == ("alice", "secret")
    assert authtoken["project_name"] == "science"
    assert authtoken["user_domain_name"] == "Default"
    # Keystone sets X-User-Name itself: the tempauth filter that would
    # derive it from REMOTE_USER is left out.
    storlets = insert_into_pipeline(" ".join(pipeline), "proxy").split()
    assert "storlet_user_name" not in storlets
    at = storlets.index("keystoneauth")
    assert storlets[at + 1 : at + 4] == ["storlet_enable", "storlet_copy", "storlet_handler"]


def test_a_tempauth_cluster_is_unchanged(tmp_path):
    sections = _proxy(Layout(str(tmp_path)))
    assert "tempauth" in sections["pipeline:main"]["pipeline"].split()
    assert "filter:authtoken" not in sections


def test_the_proxy_needs_the_v3_api():
    with pytest.raises(ValueError, match="OS_IDENTITY_API_VERSION=3"):
        keystone_filters(dict(V3, OS_IDENTITY_API_VERSION="2.0"))
