"""The rotoscope workflow at scale: 10,000 frame objects, a kill -9, a resume.

A video of at least ``--frames`` frames is made from the sample video
(looped, scaled to 320 pixels wide, Motion JPEG at its 25 fps), uploaded
once, and ``mlstorlets rotoscope --frames-to`` runs over it in a client
process of its own: one request per range of 500 frames filters them on
the object server holding the video and writes both the filtered frames
and the range's segment; the segments are assembled into one video.
Halfway through the frames the client is killed with SIGKILL; the same
command then completes the job.  Then the default (filtered segments
straight from the video, no frame object) runs into a fresh destination.
Measured and checked:

* frames per second of each run, end to end;
* the client's resident memory, sampled every 0.5 s in both runs (flat:
  the last quarter's peak against the first quarter's);
* nothing lost (one filtered frame per frame, and a video of every frame at
  the source's rate), nothing done twice (every segment written before the
  kill, and every frame of its range, keeps its timestamp through the
  resume; only ranges cut short are made again), every output decodable
  (each filtered frame and the video's frames decode);
* the filter alone, in the same run, over the same frames three ways,
  each into a fresh destination: in the cluster (``mlstorlets run``), on
  the client written back into the same store (``--on-client``: download,
  filter, upload; like for like) and on the client to local files; objects
  per second and CPU milliseconds per object of every process by role
  (proxy, object servers, container servers, sandboxes, client:
  ``benchmarks/cpu.py``).

Run (about 15 minutes on 2 cores)::

    DATA=../shared/data/faces .venv/bin/python benchmarks/rotoscope_scale.py [--frames 10000]

Figures go to benchmarks/results/rotoscope_scale.json.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import cpu  # noqa: E402
import targets  # noqa: E402

CONTAINER = "rotoscope"
# Frames per segment request (rotoscope's default --range-size).
RANGE = 500
# The whole workflow's rate the issue measured before segments and many
# objects per call (10,000 frames, this machine): what its targets are
# ratios of.  The same run's --frames-to run is the like-for-like baseline.
ISSUE_FRAMES_PER_S = 21.5
FILTER = "colormap"
WIDTH = 320
MLSTORLETS = os.path.join(os.path.dirname(sys.executable), "mlstorlets")


def make_video(source, frames, path):
    """``source`` looped to at least ``frames`` frames, WIDTH wide, MJPEG."""
    import cv2

    capture = cv2.VideoCapture(source)
    fps = capture.get(cv2.CAP_PROP_FPS)
    loop = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        height = round(frame.shape[0] * WIDTH / frame.shape[1] / 2) * 2
        loop.append(cv2.resize(frame, (WIDTH, height), interpolation=cv2.INTER_AREA))
    capture.release()
    rounds = -(-frames // len(loop))
    writer = cv2.VideoWriter(
        path, cv2.VideoWriter_fourcc(*"MJPG"), fps, (loop[0].shape[1], loop[0].shape[0])
    )
    for _ in range(rounds):
        for frame in loop:
            writer.write(frame)
    writer.release()
    return rounds * len(loop), fps


class Client:
    """A client process with its RSS sampled every 0.5 s."""

    def __init__(self, argv, env):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.rss = []  # (seconds, bytes)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while self.proc.poll() is None:
            try:
                with open("/proc/%d/status" % self.proc.pid) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.rss.append(
                                (time.monotonic() - self.started, int(line.split()[1]) * 1024)
                            )
            except OSError:
                break
            time.sleep(0.5)

    def wait(self):
        out = self.proc.stdout.read()
        self.proc.wait()
        self._thread.join()
        self.seconds = time.monotonic() - self.started
        return out

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._thread.join()
        self.seconds = time.monotonic() - self.started

    def memory(self):
        values = [b for _, b in self.rss]
        quarter = max(1, len(values) // 4)
        return {
            "samples": len(values),
            "peak_mb": max(values) / 1e6,
            "first_quarter_peak_mb": max(values[:quarter]) / 1e6,
            "last_quarter_peak_mb": max(values[-quarter:]) / 1e6,
        }


def listing(conn, prefix):
    return {
        e["name"]: e["last_modified"]
        for e in conn.get_container(CONTAINER, prefix=prefix, full_listing=True)[1]
    }


def segments_folder_of(conn, work):
    names = listing(conn, work)
    folders = {n[len(work) :].split("/")[0] for n in names}
    return next(f for f in folders if f.startswith("segments-"))


def decodable(conn, names):
    """The names among ``names`` whose object does not decode as an image."""
    import cv2
    import numpy as np

    def bad(name):
        _, body = conn_for_thread(conn).get_object(CONTAINER, name)
        return cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR) is None

    with ThreadPoolExecutor(8) as pool:
        return [n for n, b in zip(names, pool.map(bad, names)) if b]


_local = threading.local()


def conn_for_thread(conn):
    from mlstorlets.client.swift import clone_connection

    if not hasattr(_local, "conn"):
        _local.conn = clone_connection(conn)
    return _local.conn


def video_frames(data):
    import cv2

    with tempfile.NamedTemporaryFile(suffix=".avi") as f:
        f.write(data)
        f.flush()
        capture = cv2.VideoCapture(f.name)
        fps = capture.get(cv2.CAP_PROP_FPS)
        count = 0
        while capture.grab():
            count += 1
    return count, fps


def run(args):
    from support import data_dir, free_base_port

    from mlstorlets.client.deploy import deploy
    from mlstorlets.server.aio import Cluster

    quiet = lambda msg: None  # noqa: E731
    state = tempfile.mkdtemp(prefix="mlsr-", dir="/tmp")
    scratch = tempfile.mkdtemp(prefix="mlsr-data-")
    cluster = Cluster(state)
    result = {
        "load_average_at_start": os.getloadavg(),
        "filter": FILTER,
        "concurrency": args.concurrency,
    }
    try:
        video_dir = os.path.join(data_dir(), "video")
        source = os.path.join(video_dir, sorted(os.listdir(video_dir))[0])
        path = os.path.join(scratch, "long.avi")
        frames, fps = make_video(source, args.frames, path)
        result.update(frames=frames, fps=fps, video_bytes=os.path.getsize(path))
        print(
            "video: %d frames at %g fps (%s looped, %d px wide), %.0f MB"
            % (frames, fps, os.path.basename(source), WIDTH, os.path.getsize(path) / 1e6),
            flush=True,
        )
        cluster.up(base_port=free_base_port(), log=quiet)
        conn = cluster.connection()
        deploy(conn, log=quiet)
        conn.put_container(CONTAINER)
        with open(path, "rb") as f:
            conn.put_object(CONTAINER, "in/long.avi", f, content_type="video/x-msvideo")
        env = dict(os.environ, **cluster.env())
        work = "out/long-%s.work/" % FILTER
        filtered = "out/long-%s.frames/" % FILTER
        argv = [
            MLSTORLETS,
            "rotoscope",
            "swift://%s/in/long.avi" % CONTAINER,
            "swift://%s/out/" % CONTAINER,
            "--filter",
            FILTER,
            "--frames-to",
            "swift://%s/%s" % (CONTAINER, filtered),
            "-j",
            str(args.concurrency),
            "--json",
        ]

        # -- first run, killed halfway through the filter ------------------
        first = Client(argv, env)
        filter_started = None
        while True:
            time.sleep(2)
            if first.proc.poll() is not None:
                # Some requests failed (storlet timeouts on a loaded
                # machine): the same command resumes the job.
                out = json.loads(first.wait())
                failed = [f for s in out["stages"] for f in s["failed"]]
                print(
                    "the client ended before halfway, %d failed (%s): run again"
                    % (len(failed), failed[:2]),
                    flush=True,
                )
                result.setdefault("early_ends", []).append(failed[:5])
                first = Client(argv, env)
                continue
            done = len(listing(conn, filtered))
            if not done:
                continue
            if filter_started is None:
                filter_started = (time.monotonic(), done)
            if done >= frames // 2:
                first.kill()
                killed_at = time.monotonic()
                break
        time.sleep(3)  # requests in flight at the kill end in the cluster
        segments_folder = work + segments_folder_of(conn, work) + "/"
        segments = listing(conn, segments_folder)
        before = listing(conn, filtered)
        filter_rate_first = (len(before) - filter_started[1]) / (killed_at - filter_started[0])
        print(
            "killed the client (SIGKILL) after %.1f s: %d filtered frames, %d whole segments"
            % (first.seconds, len(before), len(segments)),
            flush=True,
        )

        # -- the same command completes it ---------------------------------
        second = Client(argv, env)
        summary = json.loads(second.wait())
        print(
            "resumed: %s in %.1f s" % ("ok" if summary["ok"] else "NOT ok", second.seconds),
            flush=True,
        )
        if not summary["ok"]:
            for stage in summary["stages"]:
                print("  %s: %s" % (stage["storlet"], stage["failed"][:3]))
        after = listing(conn, filtered)
        segments_after = listing(conn, segments_folder)
        stages = {s["storlet"]: s for s in summary["stages"]}
        segment_stage = stages["segments"]
        # A range is resumed whole: the frames of a range whose segment was
        # written before the kill must not change; those of a range cut
        # short are made again.
        whole = {int(n[len(segments_folder) :].split(".")[0]) for n in segments}
        kept = [n for n in before if int(n[len(filtered) :].split(".")[0]) // RANGE in whole]
        changed = [n for n in kept if after.get(n) != before[n]]
        segments_changed = [n for n, t in segments.items() if segments_after.get(n) != t]
        filter_rate_resume = (frames - len(kept)) / segment_stage["seconds"]

        _, body = conn.get_object(CONTAINER, "out/long-%s.avi" % FILTER)
        video_count, video_fps = video_frames(body)
        undecodable = decodable(conn, sorted(after))
        checks = {
            "frames_filtered": len(after),
            "segments": len(segments_after),
            "segments_rewritten_on_resume": len(segments_changed),
            "filtered_of_whole_ranges_at_kill": len(kept),
            "filtered_rewritten_on_resume": len(changed),
            "segments_done_on_resume": len(segment_stage["done"]),
            "segments_skipped_on_resume": len(segment_stage["skipped"]),
            "undecodable_outputs": len(undecodable),
            "video_frames": video_count,
            "video_fps": video_fps,
            "client_bytes": summary["client_bytes"],
        }
        checks["nothing_lost"] = len(after) == frames == video_count and abs(video_fps - fps) < 1e-3
        checks["nothing_done_twice"] = (
            not changed
            and not segments_changed
            and len(segment_stage["done"]) + len(segments) == -(-frames // RANGE)
        )
        checks["every_output_decodable"] = not undecodable
        result["checks"] = checks
        result["first_run"] = {
            "seconds": first.seconds,
            "filtered_at_kill": len(before),
            "filter_objects_per_s": filter_rate_first,
            "client_memory": first.memory(),
        }
        result["resumed_run"] = {
            "seconds": second.seconds,
            "filter_objects_per_s": filter_rate_resume,
            "client_memory": second.memory(),
            "stages": {
                name: {
                    "done": len(s["done"]),
                    "skipped": len(s["skipped"]),
                    "failed": len(s["failed"]),
                    "seconds": s["seconds"],
                }
                for name, s in stages.items()
            },
        }
        result["total_seconds"] = first.seconds + second.seconds
        result["objects_per_s_overall"] = frames / result["total_seconds"]

        # -- the default: no frame object, filtered segments ---------------
        # The same video and filter into a fresh destination, in one run.
        direct = Client(
            [MLSTORLETS, "rotoscope", "swift://%s/in/long.avi" % CONTAINER]
            + ["swift://%s/direct/" % CONTAINER, "--filter", FILTER]
            + ["-j", str(args.concurrency), "--json"],
            env,
        )
        direct_summary = json.loads(direct.wait())
        _, body = conn.get_object(CONTAINER, "direct/long-%s.avi" % FILTER)
        direct_count, direct_fps = video_frames(body)
        result["segments_run"] = {
            "ok": direct_summary["ok"],
            "seconds": direct.seconds,
            "frames_per_s": frames / direct.seconds,
            "video_frames": direct_count,
            "video_fps": direct_fps,
            "frame_objects": sum(
                1
                for e in conn.get_container(CONTAINER, prefix="direct/", full_listing=True)[1]
                if e["name"].endswith(".jpg")
            ),
            "stages": {
                s["storlet"]: {"done": len(s["done"]), "seconds": s["seconds"]}
                for s in direct_summary["stages"]
            },
            "client_memory": direct.memory(),
        }
        print(
            "segments (no frame object): %.1f frames/s end to end, %d frames in the video"
            % (result["segments_run"]["frames_per_s"], direct_count),
            flush=True,
        )

        # -- baselines: the same filter on the client ----------------------
        # Like for like: written back into the same store (--on-client);
        # and to local files, as a user who keeps the frames would.
        # The same filter over the same frames three ways, each into a fresh
        # destination, with the CPU of every process per object: in the
        # cluster (again, now that nothing else runs), and on the client.
        frames_uri = "swift://%s/%s" % (CONTAINER, filtered)
        for key, dest, extra, placement in (
            ("in_cluster", "swift://%s/cluster-again/" % CONTAINER, [], "cluster"),
            ("client_side", "swift://%s/client-side/" % CONTAINER, ["--on-client"], "client"),
            (
                "client_side_local_files",
                "file://%s/" % os.path.join(scratch, "local"),
                [],
                "client",
            ),
        ):
            before = cpu.snapshot()
            base = Client(
                [MLSTORLETS, "run", "frame_filter.py", frames_uri, dest]
                + ["-p", "filter=" + FILTER, "-p", "quality=90"]
                + ["-j", str(args.concurrency), "--json"]
                + extra,
                env,
            )
            base_summary = json.loads(base.wait())
            assert base_summary["placement"] == placement, base_summary["placement"]
            done = len(base_summary["done"])
            result[key] = {
                "dest": dest,
                "seconds": base.seconds,
                "done": done,
                "objects_per_s": done / base.seconds,
                "client_bytes": base_summary["client_bytes"],
                "client_memory": base.memory(),
                "cpu_ms_per_object": cpu.per_object(before, cpu.snapshot(), done),
            }
    finally:
        cluster.down(purge=True, log=quiet)
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    result["load_average_at_end"] = os.getloadavg()
    return result


def report(result):
    first, second, base = result["first_run"], result["resumed_run"], result["client_side"]
    print(
        "%d frames, filter %s, concurrency %d"
        % (result["frames"], result["filter"], result["concurrency"])
    )
    print("%-40s %10s" % ("", "objects/s"))
    print("%-40s %10.1f" % ("frames/s in the cluster (first run)", first["filter_objects_per_s"]))
    print(
        "%-40s %10.1f" % ("frames/s in the cluster (resumed run)", second["filter_objects_per_s"])
    )
    print("%-40s %10.1f" % ("filter on the client, into Swift (baseline)", base["objects_per_s"]))
    local = result["client_side_local_files"]
    print("%-40s %10.1f" % ("filter on the client, to local files", local["objects_per_s"]))
    print("the filter alone, each way, objects/s and CPU per object by process:")
    for key, label in (
        ("in_cluster", "in the cluster"),
        ("client_side", "on the client, into Swift"),
        ("client_side_local_files", "on the client, to local files"),
    ):
        run_ = result[key]
        print(
            "  %-30s %7.1f/s  %s"
            % (label, run_["objects_per_s"], cpu.format_cpu(run_["cpu_ms_per_object"]))
        )
    print(
        "%-40s %10.1f" % ("whole workflow, --frames-to, both runs", result["objects_per_s_overall"])
    )
    segments = result["segments_run"]
    print(
        "%-40s %10.1f  (%d frame objects)"
        % (
            "whole workflow, segments (default)",
            segments["frames_per_s"],
            segments["frame_objects"],
        )
    )
    for name, stage in second["stages"].items():
        print(
            "  resumed %-28s %5d done %5d skipped %3d failed %7.1f s"
            % (name, stage["done"], stage["skipped"], stage["failed"], stage["seconds"])
        )
    for label, run_ in (
        ("first run", first),
        ("resumed run", second),
        ("client-side", base),
        ("local files", local),
    ):
        m = run_["client_memory"]
        print(
            "client RSS, %-12s peak %6.1f MB; first quarter %6.1f MB, last quarter %6.1f MB"
            % (label, m["peak_mb"], m["first_quarter_peak_mb"], m["last_quarter_peak_mb"])
        )
    print("checks: %s" % json.dumps(result["checks"]))
    # No speed target: over loopback, a cheap filter on small frames costs
    # less than an invocation, so the client-side path is faster here; the
    # ratio is reported, the link benchmarks say when moving data costs more.
    # Like for like: the same run command, the same frames, into the same
    # store.
    result["in_cluster_over_client_side"] = (
        result["in_cluster"]["objects_per_s"] / base["objects_per_s"]
    )
    print(
        "filter objects/s in the cluster / on the client into Swift: %.2fx"
        % result["in_cluster_over_client_side"]
    )
    result["segments_over_frames_to"] = segments["frames_per_s"] / result["objects_per_s_overall"]
    print(
        "whole workflow, segments / --frames-to (same run): %.2fx"
        % result["segments_over_frames_to"]
    )
    result["targets"] = [
        targets.check(
            "rotoscope end to end, segments / the issue's %.1f frames/s" % ISSUE_FRAMES_PER_S,
            segments["frames_per_s"] / ISSUE_FRAMES_PER_S,
            5.0,
            at_least=True,
        ),
        targets.check(
            "rotoscope end to end, --frames-to / the issue's %.1f frames/s" % ISSUE_FRAMES_PER_S,
            result["objects_per_s_overall"] / ISSUE_FRAMES_PER_S,
            2.0,
            at_least=True,
        ),
    ]
    result["targets"] += [
        targets.check(
            "client RSS last quarter / first quarter (%s)" % label,
            run_["client_memory"]["last_quarter_peak_mb"]
            / run_["client_memory"]["first_quarter_peak_mb"],
            1.5,
        )
        for label, run_ in (("first run", first), ("resumed run", second))
    ]
    result["targets"].append(
        targets.check(
            "checks passed (nothing lost, nothing done twice, every output decodable)",
            float(
                all(
                    result["checks"][k]
                    for k in ("nothing_lost", "nothing_done_twice", "every_output_decodable")
                )
                and segments["ok"]
                and segments["video_frames"] == result["frames"]
                and not segments["frame_objects"]
            ),
            1.0,
            at_least=True,
        )
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=4)
    args = p.parse_args(argv)
    result = run(args)
    report(result)
    targets.save("rotoscope_scale", result)


if __name__ == "__main__":
    main()
