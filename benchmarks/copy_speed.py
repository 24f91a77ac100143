"""Speed of ``mlstorlets cp`` against the ``swift`` CLI and ``aws s3 cp``.

Copies one object of ``--size`` bytes (default 1 GiB) between a local file
and the embedded cluster's two APIs, each copy a command run as a user
runs it, in one run:

* ``mlstorlets``: ``mlstorlets cp SRC DEST --no-resume`` (the CLI);
* ``swift CLI``: ``swift upload`` / ``swift download`` with their default
  segment behaviour (a single streamed PUT up to 5 GiB, as ``mlstorlets``
  writes a file of that size), for the S3 paths into and out of the
  bucket's own container;
* ``aws CLI``: ``aws s3 cp`` (the ``awscli`` package from PyPI, the
  ``bench`` extra that ``make bench`` installs: 8 MiB parts, 10 at once),
  for the S3 paths.  Without it the
  reference is boto3's transfer manager (``upload_file`` /
  ``download_file`` with the default ``TransferConfig``, which is what
  ``aws s3 cp`` drives), and the table says ``boto3 transfer``.

Paths: file -> swift, swift -> file, file -> s3, s3 -> file.  For each
copy: wall seconds, MB/s (10^6 bytes), the ratio mlstorlets / reference,
the CPU seconds (user + system) of the client process and its children
(``wait4``), and the time to the first MiB, its start-up included: for a
download until the client process has written 1 MiB (``wchar`` of
``/proc/PID/io``), for an upload until the object servers have written 1 MiB
(the ``wchar`` of their processes); both sampled every 10 ms.
Each copy is run ``--repeat`` times (default 1) and the fastest is kept;
copies of one path alternate between the tools.

    .venv/bin/python benchmarks/copy_speed.py [--size BYTES] [--repeat N]

Prints a table and the issue's target (each path within 1.2x of its
references) as reached or NOT reached, and saves
benchmarks/results/copy_speed.json with the load averages before and
after.  The machine's cores are shared by client and cluster: on a busy
machine the figures are indicative only.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import targets  # noqa: E402
from copy_memory import bench_cluster, proc_number, same_file, this_tree  # noqa: E402

MIB = 1 << 20
TARGET = 1.2
FIRST = MIB  # bytes written by the client that count as its first byte out


def written(pid):
    """Bytes the process has written so far (wchar), or None."""
    return proc_number(pid, "io", "wchar:")


def group_written(pgids):
    """A function giving the bytes the processes of the process groups
    ``pgids`` (a Swift server and its workers) wrote since it was made."""
    pids = []
    for name in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % name) as f:
                if int(f.read().rsplit(")", 1)[1].split()[2]) in pgids:
                    pids.append(int(name))
        except (OSError, ValueError, IndexError):
            pass
    start = sum(written(pid) or 0 for pid in pids)
    return lambda: sum(written(pid) or 0 for pid in pids) - start


def measure(argv, env, cwd=None, arrived=None):
    """(seconds, CPU seconds, seconds to the first MiB or None) of the
    command ``argv``.  The first MiB is when ``arrived()`` (bytes) reaches
    1 MiB; by default when the process has written 1 MiB."""
    arrived = arrived or (lambda: written(proc.pid) or 0)
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    first = None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if first is None and arrived() >= FIRST:
            first = time.monotonic() - started
        time.sleep(0.01)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode:
        raise SystemExit("%s failed (%d): %s" % (" ".join(argv), proc.returncode, err[-2000:]))
    return seconds, usage.ru_utime + usage.ru_stime, first


def aws_reference(bindir):
    """(name, argv prefix) of the S3 reference: the aws CLI if installed,
    else boto3's transfer manager run by this script in a child."""
    aws = os.path.join(bindir, "aws")
    if os.path.exists(aws) or shutil.which("aws"):
        return "aws CLI", [aws if os.path.exists(aws) else shutil.which("aws"), "s3", "cp"]
    return "boto3 transfer", [sys.executable, os.path.abspath(__file__), "--boto3"]


def boto3_transfer(src, dest):
    """``aws s3 cp SRC DEST`` done with boto3's transfer manager, its
    defaults (8 MiB parts, 10 at once)."""
    import boto3

    s3 = boto3.client("s3")
    if src.startswith("s3://"):
        bucket, key = src[5:].split("/", 1)
        s3.download_file(bucket, key, dest)
    else:
        bucket, key = dest[5:].split("/", 1)
        s3.upload_file(src, bucket, key)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1 << 30)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--boto3", nargs=2, metavar=("SRC", "DEST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.boto3:
        return boto3_transfer(*args.boto3)

    bindir = os.path.dirname(sys.executable)
    mlstorlets = [sys.executable, "-m", "mlstorlets.client.cli"]
    swift = [os.path.join(bindir, "swift")]
    s3_name, s3_cp = aws_reference(bindir)
    load_before = os.getloadavg()
    rows = []
    with bench_cluster("cpspeed", args.size) as (cluster, files, path):
        env = this_tree(dict(os.environ, **cluster.env()))
        out = os.path.join(files, "out.bin")

        object_servers = set()
        for name in os.listdir(cluster.layout.run_dir):
            if name.startswith("object") and name.endswith(".pid"):
                with open(os.path.join(cluster.layout.run_dir, name)) as f:
                    object_servers.add(int(f.read().split()[0]))

        def run(path_name, how, argv, check=None):
            best = None
            for _ in range(args.repeat):
                # Uploads: when the object servers wrote the first MiB.
                arrived = None if check else group_written(object_servers)
                figures = measure(argv, env, cwd=files, arrived=arrived)
                if best is None or figures[0] < best[0]:
                    best = figures
                if check and not same_file(check, path):
                    raise SystemExit("%s differs from its source" % check)
                if check:
                    os.unlink(check)
            seconds, cpu, first = best
            row = {
                "path": path_name,
                "how": how,
                "seconds": round(seconds, 2),
                "mb_per_s": round(args.size / seconds / 1e6, 1),
                "cpu_seconds": round(cpu, 2),
                "first_mib_seconds": None if first is None else round(first, 2),
            }
            rows.append(row)
            print(
                "%-14s %-15s %7.2f s %7.1f MB/s  cpu %6.2f s  first MiB %s"
                % (
                    path_name,
                    how,
                    seconds,
                    row["mb_per_s"],
                    cpu,
                    "-" if first is None else "%.2f s" % first,
                ),
                flush=True,
            )

        plan = [
            (
                "file -> swift",
                [
                    ("mlstorlets", mlstorlets + ["cp", "file://" + path, "swift://bench/ml"]),
                    ("swift CLI", swift + ["upload", "bench", path, "--object-name", "cli"]),
                ],
                None,
            ),
            (
                "swift -> file",
                [
                    ("mlstorlets", mlstorlets + ["cp", "swift://bench/cli", "file://" + out]),
                    ("swift CLI", swift + ["download", "bench", "cli", "-o", out]),
                ],
                out,
            ),
            (
                "file -> s3",
                [
                    ("mlstorlets", mlstorlets + ["cp", "file://" + path, "s3://bench-s3/ml"]),
                    ("swift CLI", swift + ["upload", "bench-s3", path, "--object-name", "sw"]),
                    (s3_name, s3_cp + [path, "s3://bench-s3/ref"]),
                ],
                None,
            ),
            (
                "s3 -> file",
                [
                    ("mlstorlets", mlstorlets + ["cp", "s3://bench-s3/ref", "file://" + out]),
                    ("swift CLI", swift + ["download", "bench-s3", "ref", "-o", out]),
                    (s3_name, s3_cp + ["s3://bench-s3/ref", out]),
                ],
                out,
            ),
        ]
        for path_name, tools, check in plan:
            for how, argv in tools:
                if how == "mlstorlets":
                    argv = argv + ["--no-resume"]
                run(path_name, how, argv, check)
    # The reference of a path: the swift CLI for Swift, the aws CLI (or
    # boto3's transfer manager) for S3; the swift CLI on the S3 paths (the
    # bucket's container through the Swift API) is shown, not a target.
    ratios, checks = {}, []
    by = {(r["path"], r["how"]): r["seconds"] for r in rows}
    for (path_name, how), seconds in by.items():
        if how == "mlstorlets":
            continue
        ratio = round(by[(path_name, "mlstorlets")] / seconds, 2)
        label = "%s: mlstorlets / %s" % (path_name, how)
        ratios[label] = ratio
        if ("s3" in path_name) == (how != "swift CLI"):
            checks.append(targets.check(label, ratio, TARGET))
        else:
            print("%s = %.2fx (not a target: another API)" % (label, ratio))
    result = {
        "size_bytes": args.size,
        "repeat": args.repeat,
        "python": sys.version.split()[0],
        "s3_reference": s3_name,
        "rows": rows,
        "mlstorlets_over_reference": ratios,
        "targets": checks,
        "first_mib": "start-up included, until 1 MiB was written by the client (download) "
        "or by the object servers (upload)",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    targets.save("copy_speed" + ("" if args.size == 1 << 30 else "_%d" % args.size), result)


if __name__ == "__main__":
    main()
