"""The embedded cluster's life cycle and the deploy command."""

import os
import socket
import subprocess
import sys

import pytest

from mlstorlets.aio import Cluster, ClusterError
from mlstorlets.deployment.storlets import artifacts, deploy

from support import free_base_port

CLI = [sys.executable, '-m', 'mlstorlets.cli']


def cli(*args, env=None):
    return subprocess.run(CLI + list(args), capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=120)


def test_up_again_changes_nothing(cluster):
    before = cluster.status()
    messages = []
    assert cluster.up(log=messages.append) is False
    assert 'nothing changed' in messages[0]
    assert cluster.status() == before


def test_status_and_env_commands(cluster):
    status = cli('aio', 'status', '--state-dir', cluster.state_dir)
    assert status.returncode == 0, status.stderr
    for name in ('proxy-server', 'object-server-2', 'memcached'):
        assert name in status.stdout
    assert 'stopped' not in status.stdout
    env = cli('aio', 'env', '--state-dir', cluster.state_dir)
    assert env.stdout.startswith('export ST_AUTH=http://127.0.0.1:')
    values = dict(part.split('=', 1) for part in env.stdout.split()[1:])
    # The printed credentials work with the swift CLI's variables.
    conn = __import__('mlstorlets.connection', fromlist=['x']) \
        .connection_from_environment(values)
    assert conn.head_account()['x-account-meta-storlet-enabled'] == 'True'


def test_changing_the_node_count_is_refused(cluster):
    with pytest.raises(ClusterError, match='made with nodes 3, not 1'):
        cluster.up(nodes=1)


def test_a_taken_port_is_refused_clearly(tmp_path):
    base = free_base_port()
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', base + 2))
        sock.listen()
        with pytest.raises(ClusterError, match='port %d' % (base + 2)):
            Cluster(str(tmp_path)).up(base_port=base, log=lambda m: None)
    # Nothing was started or left half-made.
    assert not os.path.exists(tmp_path / 'cluster.json')


def test_a_missing_prerequisite_is_refused_clearly(tmp_path):
    with pytest.raises(ClusterError, match='libsbus.so'):
        Cluster(str(tmp_path)).up(base_port=free_base_port(),
                                  native_lib_dir=str(tmp_path / 'none'))


def test_down_stops_only_what_it_started(tmp_path):
    cluster = Cluster(str(tmp_path))
    cluster.up(base_port=free_base_port(), log=lambda m: None)
    pids = cluster.status()
    bystander = subprocess.Popen([sys.executable, '-c',
                                  'import time; time.sleep(60)'])
    try:
        result = cli('aio', 'down', '--state-dir', str(tmp_path), '--purge')
        assert result.returncode == 0, result.stderr
        for pid in pids.values():
            assert not os.path.exists('/proc/%d' % pid) or \
                open('/proc/%d/stat' % pid).read().split()[2] == 'Z'
        assert bystander.poll() is None
        assert not tmp_path.exists()
    finally:
        bystander.kill()


def test_deploy_uploads_only_what_changed(cluster, conn):
    # The session fixture deployed everything already.
    assert deploy(conn, log=lambda m: None) == []
    names = {a.name for a in artifacts()}
    assert 'mlstorlets.zip' in names and 'sgd_estimator.py' in names
    for artifact in artifacts():
        headers = conn.head_object(artifact.container, artifact.name)
        assert headers['etag'] == artifact.etag
    main = conn.head_object('storlet', 'sgd_estimator.py')
    assert main['x-object-meta-storlet-main'] == \
        'sgd_estimator.SGDEstimatorStorlet'
    assert main['x-object-meta-storlet-dependency'] == 'mlstorlets.zip'
