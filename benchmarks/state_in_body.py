"""A model state over the parameters: in the request's body vs in a
temporary object, per ``remote_partial_fit`` call.

A state that does not fit the SBus datagram used to be PUT as an object
before each call, named as the call's first extra resource, and deleted
after it.  The proxy now takes it as the GET's body
(:mod:`mlstorlets.server.middleware.body_input`).  This starts an embedded
cluster (one object server), uploads small ``.npy`` objects, and runs in one
run, interleaved, ``--repeat`` times each:

(a) ``remote_partial_fit`` with ``objects_per_call=1`` (every call carries
    the state), the state in the body;
(b) the same with the cluster's body limit taken as 0 by the client: a
    temporary object per call (what every call did before).

The objects are small (200 rows by default), so that what a call costs
besides the fit shows.

Both give the same model, which the script asserts.  It prints the median
milliseconds per call, the ratio (b)/(a), Swift requests per call and the
CPU per call by process.

Usage::

    .venv/bin/python benchmarks/state_in_body.py
    .venv/bin/python benchmarks/state_in_body.py --hidden 256 --objects 20 --repeat 3
"""

import argparse
import dataclasses
import io
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import cpu  # noqa: E402

CONTAINER = "state-bench"
# Sandbox sockets live under the state directory: keep its path short.
STATE_PARENT = "/tmp"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--rows", type=int, default=200, help="rows per object")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument(
        "--hidden", type=int, default=256, help="units of each of the MLP's two hidden layers"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--base-port", type=int, default=0)
    parser.add_argument(
        "--output", default=os.path.join(HERE, "results", "state_in_body.json"), help="JSON file"
    )
    return parser.parse_args(argv)


def make_object(args, i):
    rng = np.random.RandomState(1 + i)
    arr = np.empty((args.rows, args.features + 1))
    arr[:, :-1] = rng.normal(size=(args.rows, args.features))
    arr[:, -1] = (arr[:, 0] + arr[:, 1] > 0).astype(float) + (arr[:, 2] > 1)
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


class Counting:
    """A Swift gateway's requests, counted: swiftclient calls, and the raw
    requests a body needs."""

    def __init__(self, swift):
        self.requests = 0
        call, request = swift.call, swift._request

        def counted_call(*a, **kw):
            self.requests += 1
            return call(*a, **kw)

        def counted_request(*a, **kw):
            self.requests += 1
            return request(*a, **kw)

        swift.call, swift._request = counted_call, counted_request


def run(args, conn, body_input):
    from mlstorlets.client.incremental import MLPClassifier
    from mlstorlets.client.swift import Swift

    swift = Swift(conn)
    swift._limits = dataclasses.replace(swift.limits(), body_input=body_input)
    est = MLPClassifier(
        hidden_layer_sizes=(args.hidden, args.hidden), batch_size=200, random_state=0
    )
    # The first call's unfitted state is small: not measured.
    est.remote_partial_fit(
        "swift://%s/part-000.npy" % CONTAINER, classes=[0, 1, 2], connection=swift
    )
    counting = Counting(swift)
    before, own = cpu.snapshot(), time.process_time()
    start = time.perf_counter()
    est.remote_partial_fit("swift://%s/" % CONTAINER, connection=swift, objects_per_call=1)
    wall = time.perf_counter() - start
    # The client is this process, not a child of it.
    after = dict(cpu.snapshot(), client=before["client"] + time.process_time() - own)
    return est, wall, cpu.per_object(before, after, args.objects), counting.requests


def main(argv=None):
    args = parse_args(argv)
    from sgd_remote_vs_local import free_base_port, machine, max_state_diff

    from mlstorlets.client.deploy import deploy
    from mlstorlets.sandbox.incremental import state
    from mlstorlets.sandbox.protocol import DEFAULT_MAX_BODY_INPUT
    from mlstorlets.server.aio import Cluster

    quiet = lambda msg: None  # noqa: E731
    state_dir = tempfile.mkdtemp(prefix="mlsb-", dir=STATE_PARENT)
    cluster = Cluster(os.path.join(state_dir, "aio"))
    load_at_start = list(os.getloadavg())
    try:
        cluster.up(base_port=args.base_port or free_base_port(), nodes=1, log=quiet)
        deploy(cluster.connection(), log=quiet)
        conn = cluster.connection()
        conn.put_container(CONTAINER)
        for i in range(args.objects):
            conn.put_object(CONTAINER, "part-%03d.npy" % i, make_object(args, i))
        ways = {"body": DEFAULT_MAX_BODY_INPUT, "temporary object": 0}
        # The sandbox's start and imports: not either way's.
        run(args, conn, DEFAULT_MAX_BODY_INPUT)
        runs = {way: [] for way in ways}
        models = {}
        for _ in range(args.repeat):
            for way, limit in ways.items():
                est, wall, cpu_ms, requests = run(args, conn, limit)
                runs[way].append((wall, cpu_ms, requests))
                models[way] = est
                print("  %-16s %.3f s" % (way, wall), flush=True)
        state_bytes = len(state.dumps(models["body"]))
        diff = max_state_diff(models["body"].to_sklearn(), models["temporary object"].to_sklearn())
        results = {"parameters": vars(args).copy(), "state_bytes": state_bytes, "ways": {}}
        print(
            "MLP (%d, %d) over %d features: a state of %.2f MB, %d calls of one object each"
            % (args.hidden, args.hidden, args.features, state_bytes / 1e6, args.objects)
        )
        for way, found in runs.items():
            wall, cpu_ms, requests = sorted(found, key=lambda r: r[0])[len(found) // 2]
            per_call = 1000.0 * wall / args.objects
            results["ways"][way] = {
                "ms_per_call": round(per_call, 2),
                "runs_s": [round(r[0], 4) for r in found],
                "swift_requests_per_call": requests / args.objects,
                "cpu_ms_per_call": cpu_ms,
            }
            print(
                "%-16s %7.1f ms/call (median of %d), %.0f requests/call; %s"
                % (way, per_call, len(found), requests / args.objects, cpu.format_cpu(cpu_ms))
            )
        ratio = (
            results["ways"]["temporary object"]["ms_per_call"]
            / results["ways"]["body"]["ms_per_call"]
        )
        results["ratio_temporary_object_to_body"] = round(ratio, 3)
        results["max_state_diff"] = diff
        results["machine"] = machine(load_at_start)
        print("temporary object / body: %.2fx; models differ by %.3g" % (ratio, diff))
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
        print("saved %s" % args.output)
        assert diff == 0, diff
        return results
    finally:
        cluster.down(purge=True, log=quiet)
        shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
