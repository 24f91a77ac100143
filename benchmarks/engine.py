"""Cost of the embedded cluster and of one storlet invocation.

Measures, in one run on this machine:

* ``aio up`` cold (a new state directory: configuration, rings, servers)
  and warm (the same cluster stopped and started again);
* the steady-state latency of a plain GET of a small object against a GET
  through an identity storlet (the project's probe storlet, copy action),
  both on an object server, interleaved so that load on the machine hits
  both alike.

    .venv/bin/python benchmarks/engine.py [--requests 200] [--size 1024]

Prints a table and saves benchmarks/results/engine.json.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests'))
warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')

from mlstorlets.server.aio import Cluster  # noqa: E402
from mlstorlets.client.deploy import deploy  # noqa: E402
from support import free_base_port  # noqa: E402
import targets  # noqa: E402


def timed(func):
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def percentiles(samples):
    ordered = sorted(samples)
    return {'mean_ms': 1000 * statistics.fmean(ordered),
            'p50_ms': 1000 * ordered[len(ordered) // 2],
            'p95_ms': 1000 * ordered[int(len(ordered) * 0.95)]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--requests', type=int, default=200)
    parser.add_argument('--size', type=int, default=1024)
    args = parser.parse_args()
    quiet = lambda msg: None  # noqa: E731
    with tempfile.TemporaryDirectory() as state:
        cluster = Cluster(state)
        base = free_base_port()
        cold = timed(lambda: cluster.up(base_port=base, log=quiet))
        cluster.down(log=quiet)
        warm = timed(lambda: cluster.up(log=quiet))
        try:
            conn = cluster.connection()
            deploy(conn, os.path.join(HERE, '..', 'tests', 'storlets'),
                   library=False, log=quiet)
            conn.put_container('bench')
            conn.put_object('bench', 'small', os.urandom(args.size))
            storlet = {'X-Run-Storlet': 'probe.py'}
            first = timed(lambda: conn.get_object('bench', 'small',
                                                  headers=storlet))
            for _ in range(10):  # past the daemon's start
                conn.get_object('bench', 'small', headers=storlet)
            plain, through = [], []
            for _ in range(args.requests):
                plain.append(timed(lambda: conn.get_object('bench', 'small')))
                through.append(timed(lambda: conn.get_object(
                    'bench', 'small', headers=storlet)))
        finally:
            cluster.down(log=quiet)
    result = {
        'aio_up_cold_s': cold, 'aio_up_warm_s': warm,
        'first_storlet_get_s': first, 'object_bytes': args.size,
        'requests': args.requests, 'plain_get': percentiles(plain),
        'identity_storlet_get': percentiles(through),
    }
    result['storlet_over_plain_mean'] = (
        result['identity_storlet_get']['mean_ms'] /
        result['plain_get']['mean_ms'])
    print('aio up: cold %.2f s, warm %.2f s' % (cold, warm))
    print('first storlet GET (sandbox + daemon start): %.2f s' % first)
    print('%-22s %8s %8s %8s' % ('%d x GET of %d B' % (args.requests,
                                                       args.size),
                                 'mean ms', 'p50 ms', 'p95 ms'))
    for label, key in (('plain', 'plain_get'),
                       ('identity storlet', 'identity_storlet_get')):
        r = result[key]
        print('%-22s %8.1f %8.1f %8.1f' % (label, r['mean_ms'], r['p50_ms'],
                                           r['p95_ms']))
    print('storlet / plain (mean): %.2fx' % result['storlet_over_plain_mean'])
    result['targets'] = [targets.check(
        'identity storlet GET p50 / plain GET p50',
        result['identity_storlet_get']['p50_ms'] /
        result['plain_get']['p50_ms'], 2.0)]
    os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
    with open(os.path.join(HERE, 'results', 'engine.json'), 'w') as f:
        json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
