"""Configuring a Swift node for storlets (mlstorlets node-config)."""

import configparser

import pytest

from mlstorlets.server.node import configure_node, insert_into_pipeline

PROXY = ('catch_errors gatekeeper healthcheck proxy-logging cache '
         'tempauth copy slo dlo proxy-logging proxy-server')


def test_proxy_pipeline_puts_storlets_after_auth_and_before_copy():
    assert insert_into_pipeline(PROXY, 'proxy').split()[5:10] == [
        'tempauth', 'storlet_user_name', 'storlet_copy', 'storlet_handler',
        'copy']


def test_keystone_needs_no_user_name_filter():
    names = insert_into_pipeline(
        'catch_errors authtoken keystoneauth copy proxy-server',
        'proxy').split()
    assert names == ['catch_errors', 'authtoken', 'keystoneauth',
                     'storlet_copy', 'storlet_handler', 'copy',
                     'proxy-server']


def test_object_pipeline():
    assert insert_into_pipeline('healthcheck recon object-server',
                                'object') == (
        'healthcheck recon storlet_failure storlet_handler object-server')


def test_inserting_twice_changes_nothing():
    once = insert_into_pipeline(PROXY, 'proxy')
    assert insert_into_pipeline(once, 'proxy') == once


@pytest.mark.parametrize('pipeline, message', [
    ('catch_errors tempauth proxy-server', 'no copy'),
    ('catch_errors copy proxy-server', 'no tempauth'),
    ('catch_errors copy tempauth proxy-server', 'before copy'),
])
def test_pipelines_that_cannot_run_storlets_are_refused(pipeline, message):
    with pytest.raises(ValueError, match=message):
        insert_into_pipeline(pipeline, 'proxy')


def test_configure_node_writes_the_three_files(tmp_path):
    conf = tmp_path / 'object-server.conf'
    conf.write_text('[DEFAULT]\nswift_dir = /srv/swift\n'
                    '[pipeline:main]\npipeline = healthcheck object-server\n'
                    '[app:object-server]\nuse = egg:swift#object\n')
    written = configure_node(str(conf), 'object', str(tmp_path),
                             '/var/lib/storlets', name='obj1',
                             native_lib_dir='/opt/sbus',
                             container_mem_limit=2 ** 30)
    for _ in range(2):  # re-running is harmless
        configure_node(str(conf), 'object', str(tmp_path),
                       '/var/lib/storlets', name='obj1',
                       native_lib_dir='/opt/sbus',
                       container_mem_limit=2 ** 30)
    server = configparser.RawConfigParser()
    server.read(written['server_conf'])
    assert server.get('pipeline:main', 'pipeline') == (
        'healthcheck storlet_failure storlet_handler object-server')
    handler = dict(server.items('filter:storlet_handler'))
    assert handler['execution_server'] == 'object'
    assert handler['storlet_gateway_module'] == 'bubblewrap'
    assert handler['storlet_gateway_conf'] == written['gateway_conf']
    assert server.get('filter:storlet_failure', 'paste.filter_factory') == (
        'mlstorlets.server.middleware.storlet_failure:filter_factory')
    gateway = configparser.RawConfigParser()
    gateway.read(written['gateway_conf'])
    assert gateway.get('DEFAULT', 'native_lib_dir') == '/opt/sbus'
    assert gateway.get('DEFAULT', 'container_mem_limit') == str(2 ** 30)
    assert gateway.get('DEFAULT', 'pipes_dir') == \
        '/var/lib/storlets/pipes/scopes'
    client = configparser.RawConfigParser()
    client.read(written['internal_client_conf'])
    assert client.get('DEFAULT', 'swift_dir') == '/srv/swift'


def test_the_proxy_waits_as_long_as_a_storlet_may_run(tmp_path):
    conf = tmp_path / 'proxy-server.conf'
    conf.write_text('[DEFAULT]\n[pipeline:main]\npipeline = catch_errors '
                    'tempauth copy proxy-server\n[app:proxy-server]\n'
                    'use = egg:swift#proxy\n')
    configure_node(str(conf), 'proxy', str(tmp_path), '/var/lib/storlets',
                   storlet_timeout=100)
    server = configparser.RawConfigParser()
    server.read(str(conf))
    assert float(server.get('app:proxy-server', 'node_timeout')) >= 100
