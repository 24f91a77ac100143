"""The sandbox the bubblewrap gateway builds (argument level).

The functional tests show the isolation from inside a running sandbox;
these pin down the command line that gives it.
"""

import logging
import os
import resource

import pytest

from mlstorlets.server.gateway.bubblewrap import BubblewrapRunTimeSandbox, \
    _parse_cpuset


@pytest.fixture
def sandbox(tmp_path):
    conf = {'host_root': str(tmp_path), 'native_lib_dir': str(tmp_path),
            'sandbox_hostname': 'object-server-7',
            'container_mem_limit': str(2 ** 31),
            'container_cpuset_cpus': '0', 'sandbox_file_size_limit': '1000'}
    sbox = BubblewrapRunTimeSandbox('AUTH_x', conf, logging.getLogger())
    sbox.paths.create_host_pipe_dir()
    return sbox


def test_isolation_flags(sandbox):
    argv = sandbox._command('image_AUTH_x')
    for flag in ('--unshare-net', '--unshare-pid', '--unshare-ipc',
                 '--unshare-uts', '--die-with-parent', '--new-session',
                 '--clearenv'):
        assert flag in argv
    assert argv[argv.index('--cap-drop') + 1] == 'ALL'
    assert argv[argv.index('--hostname') + 1] == 'object-server-7'
    # The root is a tmpfs made read-only once everything is mounted.
    assert argv[argv.index('--tmpfs') + 1] == '/'
    assert argv[argv.index('--remount-ro') + 1] == '/'
    assert argv.index('--remount-ro') > argv.index('/mnt/channels')
    assert argv[argv.index('--proc') + 1] == '/proc'
    assert '/tmp' in [argv[i + 1] for i, a in enumerate(argv)
                      if a == '--tmpfs']


def test_only_what_storlets_need_is_visible(sandbox):
    argv = sandbox._command('image_AUTH_x')
    sources = [argv[i + 1] for i, a in enumerate(argv)
               if a in ('--ro-bind', '--bind')]
    writable = [argv[i + 1] for i, a in enumerate(argv) if a == '--bind']
    assert '/' not in sources and '/root' not in sources
    assert '/var' not in sources and '/srv' not in sources
    # Only the pipes (and the log socket, when there is one) are writable.
    assert writable[0] == sandbox.paths.host_pipe_dir
    assert set(writable[1:]) <= {'/dev/log'}
    # The storlet code is mounted read-only.
    storlets = argv.index(sandbox.paths.sandbox_storlet_base_dir)
    assert argv[storlets - 2] == '--ro-bind'


def test_an_environment_under_tmp_stays_visible(tmp_path):
    venv = str(tmp_path / 'checkout' / '.venv')
    conf = {'host_root': str(tmp_path), 'native_lib_dir': str(tmp_path),
            'sandbox_python': venv + '/bin/python3'}
    sbox = BubblewrapRunTimeSandbox('AUTH_x', conf, logging.getLogger())
    sbox.paths.create_host_pipe_dir()
    argv = sbox._command('image_AUTH_x')
    private_tmp = [i for i, a in enumerate(argv)
                   if a == '--tmpfs' and argv[i + 1] == '/tmp']
    assert len(private_tmp) == 1
    # Mounted after the private /tmp, so not hidden by it.
    assert argv.index(venv) > private_tmp[0]


def test_python_wrapper_runs_the_configured_interpreter(sandbox):
    path = sandbox._python_wrapper()
    with open(path) as f:
        assert f.read().endswith('exec %s "$@"\n' % sandbox.sandbox_python)
    assert os.access(path, os.X_OK)


def test_limits_are_applied_in_the_child(sandbox):
    # Applied as the gateway applies them, between fork and exec; the child
    # answers by its exit status (the storlets engine monkey-patches this
    # process with eventlet, whose pipes do not mix with subprocess's).
    apply = sandbox._limits()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        ok = False
        try:
            apply()
            ok = (resource.getrlimit(resource.RLIMIT_AS)[0] == 2 ** 31 and
                  resource.getrlimit(resource.RLIMIT_FSIZE)[0] == 1000 and
                  os.sched_getaffinity(0) == {0})
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_cpuset_syntax():
    assert _parse_cpuset('0-2,5') == {0, 1, 2, 5}
    assert _parse_cpuset('3') == {3}


def test_the_persistent_agent_is_started_from_the_read_only_engine(sandbox):
    import mlstorlets
    from mlstorlets.server.gateway.bubblewrap import SANDBOX_ENGINE_DIR
    argv = sandbox._command('image_AUTH_x')
    engine = os.path.dirname(os.path.abspath(mlstorlets.__file__))
    at = argv.index(engine)
    assert argv[at - 1] == '--ro-bind'
    assert argv[at + 1] == SANDBOX_ENGINE_DIR + '/mlstorlets'
    # Found on the interpreter's path before anything of the storlets'.
    path = argv[argv.index('PYTHONPATH') + 1]
    assert path.split(':')[0] == SANDBOX_ENGINE_DIR
    tail = argv[len(argv) - argv[::-1].index('/usr/bin/python3'):]
    assert tail[:2] == ['-m', 'mlstorlets.server.agent.factory']
    assert tail[-2:] == ['--workers', '0']


def test_workers_and_agent_are_configurable(tmp_path):
    conf = {'host_root': str(tmp_path), 'native_lib_dir': str(tmp_path),
            'storlet_workers': '3'}
    sbox = BubblewrapRunTimeSandbox('AUTH_x', conf, logging.getLogger())
    assert sbox._get_container_command('c')[-2:] == ['--workers', '3']
    conf['storlet_agent'] = 'upstream'
    sbox = BubblewrapRunTimeSandbox('AUTH_x', conf, logging.getLogger())
    assert sbox._get_container_command('c')[:2] == [
        '-m', 'storlets.agent.daemon_factory']
    conf['storlet_agent'] = 'fork'
    with pytest.raises(ValueError, match='storlet_agent'):
        BubblewrapRunTimeSandbox('AUTH_x', conf, logging.getLogger())
