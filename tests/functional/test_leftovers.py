"""Nothing a request starts outlives it.

The hostile storlet starts two processes that detach (double fork,
``setsid``), one sleeping and one spinning, and returns.  Upstream's sandbox
kept them running after the answer (spinners slowed other tenants); the
worker, a child subreaper, kills them before it answers.
"""

HOSTILE = 'hostile.py'
RESULT = 'x-object-meta-hostile-result'


def attack(conn, container, action, **params):
    headers = {'X-Run-Storlet': HOSTILE, 'X-Storlet-Run-On-Proxy': '',
               'X-Storlet-Parameter-1': 'action:' + action}
    for i, (key, value) in enumerate(sorted(params.items()), 2):
        headers['X-Storlet-Parameter-%d' % i] = '%s:%s' % (key, value)
    headers_out, _ = conn.get_object(container, 'x', headers=headers)
    return headers_out[RESULT]


def test_detached_processes_end_with_their_request(conn, container):
    conn.put_object(container, 'x', b'x')
    left = attack(conn, container, 'leave')
    assert left.startswith('allowed ')
    pids = left.split()[1]
    still = attack(conn, container, 'alive', pids=pids)
    print('left %s behind; still running after the answer: %s'
          % (pids, still.split()[1]))
    assert still == 'allowed none'
