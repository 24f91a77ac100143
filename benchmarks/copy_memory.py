"""Peak memory of copies between stores: streaming against whole objects.

Copies one object of ``--size`` bytes (default 1 GiB) between local files,
Swift and S3 (the embedded cluster's two APIs), each copy in a process of
its own whose peak resident set size (VmHWM) is measured, in one run:

* ``mlstorlets``: :func:`mlstorlets.client.placement.copy`, streaming;
* ``whole object``: the behaviour before streaming, the body read into
  memory then written (``Store.get`` then ``Store.put``);
* ``swift`` CLI: ``swift upload`` / ``swift download`` of the same file.

Paths: file -> swift (one streamed PUT), file -> swift in 64 MiB segments
(a Static Large Object), swift -> file, file -> s3 (multipart, 8 MiB
parts), s3 -> file, and a client-side storlet run (swift -> file through
an identity storlet that reads and writes 1 MiB at a time: ``mlstorlets``
is :func:`~mlstorlets.client.placement.run_anywhere`, ``whole object``
the same storlet over the body read into memory, as before).

    .venv/bin/python benchmarks/copy_memory.py [--size BYTES]

Prints a table and saves benchmarks/results/copy_memory.json.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

MIB = 1 << 20
SEGMENT = 64 * MIB
IDENTITY = """
class IdentityStorlet:
    def __init__(self, logger):
        pass

    def __call__(self, in_files, out_files, params):
        out_files[0].set_metadata({})
        for chunk in iter(lambda: in_files[0].read(1 << 20), b''):
            out_files[0].write(chunk)
        out_files[0].close()
"""


def child(mode, src, dest, segment_size):
    """One copy in this process (run by the parent in a child)."""
    from mlstorlets.client.placement import copy, run_anywhere
    from mlstorlets.client.stores import Stores

    stores = Stores(segment_size=segment_size or None)
    if mode in ("stream", "run"):
        if mode == "stream":
            summary = copy(src, dest, stores=stores, resume=False)
        else:
            summary = run_anywhere(
                "identity.py",
                src,
                dest,
                stores=stores,
                resume=False,
                storlets_dir=os.environ["BENCH_STORLETS"],
            )
        if not summary.ok:
            raise SystemExit(summary.format())
    elif mode == "run-whole":
        from mlstorlets.client.local_storlet import invoke, load_storlet

        source, src_uri = stores.open(src)
        target, dest_uri = stores.open(dest)
        data, metadata = source.get(src_uri.key)
        cls = load_storlet("identity.py", os.environ["BENCH_STORLETS"])
        out_metadata, body = invoke(cls, [(data, metadata)], {})
        target.put(dest_uri.key, body, dict(metadata, **out_metadata))
    else:
        source, src_uri = stores.open(src)
        target, dest_uri = stores.open(dest)
        data, metadata = source.get(src_uri.key)
        target.put(dest_uri.key, data, metadata)


def proc_number(pid, name, key):
    """The number after ``key`` in ``/proc/PID/NAME``, or None."""
    try:
        with open("/proc/%d/%s" % (pid, name)) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def high_water(pid):
    """The process's peak resident set size so far (VmHWM), in KiB."""
    return proc_number(pid, "status", "VmHWM:")


def measure(argv, env):
    """(peak RSS in MiB, seconds) of the command ``argv``.

    The peak is the kernel's VmHWM of the process, read every 20 ms until
    it exits (a high-water mark: the last reading is the peak up to its
    last 20 ms).  ``ru_maxrss`` would not do: it survives ``exec`` and so
    starts at the parent's size.
    """
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, high_water(proc.pid) or 0)
        time.sleep(0.02)
    if proc.returncode:
        raise SystemExit("%s failed (%d)" % (" ".join(argv), proc.returncode))
    return peak / 1024, time.monotonic() - started


@contextlib.contextmanager
def bench_cluster(prefix, size):
    """An embedded cluster of its own with the containers ``bench`` and
    ``bench-s3`` (a bucket of its S3 API: the container of that name), and
    a file of ``size`` random bytes: ``(cluster, files folder, file)``.

    The buckets are made through Swift: this process imports the server,
    whose eventlet breaks botocore here.
    """
    from support import free_base_port

    from mlstorlets.server.aio import Cluster

    quiet = lambda msg: None  # noqa: E731
    with (
        tempfile.TemporaryDirectory(prefix=prefix) as state,
        tempfile.TemporaryDirectory(prefix=prefix + "-files") as files,
    ):
        cluster = Cluster(state)
        cluster.up(base_port=free_base_port(), log=quiet)
        try:
            conn = cluster.connection()
            conn.put_container("bench")
            conn.put_container("bench-s3")
            path = os.path.join(files, "big.bin")
            with open(path, "wb") as f:
                for _ in range(size // MIB):
                    f.write(os.urandom(MIB))
                f.write(os.urandom(size % MIB))
            yield cluster, files, path
        finally:
            cluster.down(log=quiet, purge=True)


def this_tree(env):
    """``env`` whose processes import this tree's mlstorlets, wherever they
    run and whatever the venv's editable install points at."""
    return dict(
        env,
        PYTHONPATH=os.pathsep.join(
            [os.path.join(HERE, "..")] + [p for p in [env.get("PYTHONPATH")] if p]
        ),
    )


def same_file(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return all(
            x == y for x, y in zip(iter(lambda: fa.read(MIB), b""), iter(lambda: fb.read(MIB), b""))
        ) and os.path.getsize(a) == os.path.getsize(b)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1 << 30)
    parser.add_argument(
        "--child", nargs=4, metavar=("MODE", "SRC", "DEST", "SEGMENT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        mode, src, dest, segment = args.child
        return child(mode, src, dest, int(segment))

    rows = []
    with bench_cluster("cpmem", args.size) as (cluster, files, path):
        with open(os.path.join(files, "identity.py"), "w") as f:
            f.write(IDENTITY)
        env = this_tree(dict(os.environ, BENCH_STORLETS=files, **cluster.env()))
        here = [sys.executable, os.path.abspath(__file__), "--child"]
        swift = [os.path.join(os.path.dirname(sys.executable), "swift")]

        def run(path_name, how, argv, cwd_files=False):
            rss, seconds = measure(argv, env)
            rows.append(
                {
                    "path": path_name,
                    "how": how,
                    "peak_rss_mib": round(rss, 1),
                    "seconds": round(seconds, 2),
                }
            )
            print("%-28s %-14s %8.1f MiB %7.2f s" % (path_name, how, rss, seconds), flush=True)

        src = "file://" + path
        for name, dest, segment in (
            ("file -> swift", "swift://bench/one", 0),
            ("file -> swift (SLO 64 MiB)", "swift://bench/slo", SEGMENT),
            ("file -> s3 (multipart)", "s3://bench-s3/one", 0),
        ):
            run(name, "mlstorlets", here + ["stream", src, dest, str(segment)])
            run(name, "whole object", here + ["whole", src, dest + "-w", str(segment)])
        run(
            "file -> swift",
            "swift CLI",
            swift + ["upload", "bench", path, "--object-name", "cli"],
        )
        run(
            "file -> swift (SLO 64 MiB)",
            "swift CLI",
            swift + ["upload", "bench", path, "--object-name", "cli-slo", "-S", str(SEGMENT)],
        )
        out = os.path.join(files, "out")
        for name, source in (
            ("swift -> file", "swift://bench/one"),
            ("s3 -> file", "s3://bench-s3/one"),
        ):
            run(name, "mlstorlets", here + ["stream", source, "file://" + out, "0"])
            run(name, "whole object", here + ["whole", source, "file://" + out + "-w", "0"])
        run(
            "swift -> file",
            "swift CLI",
            swift + ["download", "bench", "one", "-o", out + "-cli"],
        )
        run(
            "storlet run, swift -> file",
            "mlstorlets",
            here + ["run", "swift://bench/one", "file://" + out + "-run", "0"],
        )
        run(
            "storlet run, swift -> file",
            "whole object",
            here + ["run-whole", "swift://bench/one", "file://" + out + "-rw", "0"],
        )
        for copied in (out, out + "-run"):
            if not same_file(copied, path):
                raise SystemExit("%s differs from its source" % copied)
    result = {
        "size_bytes": args.size,
        "python": sys.version.split()[0],
        "rows": rows,
        "peak_rss_of": "each copy in its own process (VmHWM)",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    by = {(r["path"], r["how"]): r["peak_rss_mib"] for r in rows}
    result["whole_over_streaming"] = {
        p: round(by[(p, "whole object")] / by[(p, "mlstorlets")], 2)
        for p, h in by
        if h == "mlstorlets"
    }
    print("whole object / streaming peak RSS:", result["whole_over_streaming"])
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "copy_memory.json"), "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
