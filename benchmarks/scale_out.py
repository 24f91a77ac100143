"""Scale-out: the same extraction with 1 and with 2 storage nodes.

Each run builds the operator's topology of tests/topology.py (a proxy node,
N storage nodes, a client, each a network namespace; storlets added by
``deploy/install-node.sh``) with one replica, so that the photos are spread
over the storage nodes, and each storage node pinned to a CPU of its own
(cgroup cpuset: its servers and its sandboxes).  The same photos (the
sample's training photos, each uploaded ``--copies`` times under other
names) are uploaded, then ``extract_face.py`` runs over all of them one
object per invocation, so that each runs on the storage node holding it
(many objects per call run on the proxy node instead: see the README's
scale-out model).  A first pass over a few photos starts every node's
sandbox before the clock starts.

Printed and saved (benchmarks/results/scale_out.json): photos per second
for N = 1 and 2 and their ratio (the machine has 2 cores: 2x is the
ceiling), and the CPU seconds per photo of every node (its cgroup: servers
and sandboxes) and of the client: the inputs of the README's model.

    DATA=../shared/data/faces .venv/bin/python benchmarks/scale_out.py [--copies 3] [-j 4]

Needs root (namespaces, cgroups), like the tests.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import targets  # noqa: E402
from support import data_dir  # noqa: E402
from topology import Topology  # noqa: E402

# One batch in the client's namespace, one object per invocation: the CLI
# has no such option (small photos go many to a call by default).
BATCH = """
import json, resource, sys, time
from mlstorlets.client import batch
from mlstorlets.client.stores.registry import Stores
src, dest, concurrency = sys.argv[1:4]
conn = Stores().swift_connection()
started = time.monotonic()
summary = batch.run_batch(conn, "extract_face.py", src, dest, {}, int(concurrency),
                          objects_per_call=1)
usage = resource.getrusage(resource.RUSAGE_SELF)
found = json.loads(summary.to_json())
print(json.dumps({"seconds": time.monotonic() - started, "done": len(found["done"]),
                  "failed": len(found["failed"]), "placement": found["placement"],
                  "client_cpu": usage.ru_utime + usage.ru_stime}))
"""


def photos(copies, into):
    """The training photos, ``copies`` times each under other names."""
    train = os.path.join(data_dir(), "train")
    names = sorted(os.listdir(train))
    for copy in range(copies):
        for name in names:
            shutil.copy(os.path.join(train, name), os.path.join(into, "c%d-%s" % (copy, name)))
    return len(names) * copies


def run(nodes, copies, concurrency, local):
    root = tempfile.mkdtemp(prefix="mlso-")
    topo = Topology(
        root,
        storage=nodes,
        replicas=1,
        proxy_workers=2,
        storage_cpus=[str(i % os.cpu_count()) for i in range(nodes)],
    )
    try:
        topo.up()
        topo.client(["mlstorlets", "deploy"])
        topo.client(["mlstorlets", "cp", "file://%s/" % local, "swift://photos/all/"])
        # Every node's sandbox started before the clock.
        warm = sorted(os.listdir(local))[: 4 * nodes]
        for name in warm:
            topo.client(["swift", "copy", "-d", "/photos/warm/" + name, "photos", "all/" + name])
        topo.client(["python", "-c", BATCH, "swift://photos/warm/", "swift://faces/warm/", "2"])
        before = {node.name: topo.cpu_seconds(node) for node in topo.nodes}
        done = topo.client(
            ["python", "-c", BATCH, "swift://photos/all/", "swift://faces/all/", str(concurrency)]
        )
        after = {node.name: topo.cpu_seconds(node) for node in topo.nodes}
        result = json.loads(done.stdout.strip().splitlines()[-1])
        count = max(result["done"], 1)
        result["photos_per_s"] = result["done"] / result["seconds"]
        result["cpu_s_per_photo"] = {name: (after[name] - before[name]) / count for name in before}
        result["cpu_s_per_photo"]["client"] = result.pop("client_cpu") / count
        result["objects_per_node"] = objects_per_node(topo)
        return result
    finally:
        topo.down()
        shutil.rmtree(root, ignore_errors=True)


def objects_per_node(topo):
    """Objects of the photos container on each storage node's device."""
    counts = {}
    for node in topo.storage:
        found = 0
        for _dir, _dirs, files in os.walk(os.path.join(node.devices, "d1", "objects")):
            found += sum(1 for f in files if f.endswith(".data"))
        counts[node.name] = found
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("-j", "--concurrency", type=int, default=4)
    args = parser.parse_args()
    started = time.time()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as local:
        count = photos(args.copies, local)
        print("%d photos, %d in flight, one per invocation" % (count, args.concurrency))
        results = {}
        for nodes in (1, 2):
            results[nodes] = run(nodes, args.copies, args.concurrency, local)
            r = results[nodes]
            print(
                "%d storage node(s): %.1f photos/s (%d done, %d failed in %.1f s); "
                "CPU ms per photo: %s; .data files per node: %s"
                % (
                    nodes,
                    r["photos_per_s"],
                    r["done"],
                    r["failed"],
                    r["seconds"],
                    ", ".join(
                        "%s %.1f" % (k, v * 1000) for k, v in sorted(r["cpu_s_per_photo"].items())
                    ),
                    r["objects_per_node"],
                )
            )
    ratio = results[2]["photos_per_s"] / results[1]["photos_per_s"]
    print("2 nodes / 1 node: %.2fx (ceiling 2x on %d cores)" % (ratio, os.cpu_count()))
    record = {
        "photos": count,
        "concurrency": args.concurrency,
        "runs": results,
        "ratio_2_over_1": ratio,
        "cores": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "seconds": time.time() - started,
    }
    os.makedirs(targets.RESULTS, exist_ok=True)
    path = os.path.join(targets.RESULTS, "scale_out.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    print("saved %s" % path)


if __name__ == "__main__":
    main()
