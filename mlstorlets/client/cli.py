"""The ``mlstorlets`` command line.

A client process: it imports server code (the embedded cluster, node
configuration) only to run the commands that need it, ``aio``, ``demo``
and ``node-config``, because the storlets engine monkey-patches eventlet
when imported, which turns the client's threads green and breaks boto3's
SSL.
"""

import argparse
import dataclasses
import json
import shlex
import sys
import time

import mlstorlets
from mlstorlets.client.errors import UsageError

# Exit statuses: 1 some objects failed, 2 the command could not run, 130
# interrupted (Ctrl-C).
FAILED, ERROR, INTERRUPTED = 1, 2, 130


def _cluster(args):
    from mlstorlets.server.aio import Cluster

    return Cluster(args.state_dir)


def cmd_aio_up(args):
    started = time.monotonic()
    keystone = None
    if args.keystone:
        import os

        keystone = {k: v for k, v in os.environ.items() if k.startswith("OS_")}
    _cluster(args).up(base_port=args.base_port, nodes=args.nodes, keystone=keystone)
    print("(%.1f s)" % (time.monotonic() - started))


def cmd_aio_status(args):
    cluster = _cluster(args)
    layout = cluster.layout
    status = cluster.status()
    orphans = cluster.orphans(layout)
    for name, pid in status.items():
        if pid:
            state = "running (pid %d)" % pid
        elif name in orphans:
            state = (
                'stopped, its workers still serving (pid %s): "aio up" '
                'or "aio down" stops them' % ", ".join(map(str, orphans[name]))
            )
        else:
            state = "stopped"
        print("%-18s %s" % (name, state))
    auth = layout.keystone.get("OS_AUTH_URL") if layout.keystone else layout.auth_url
    print(
        "proxy: http://127.0.0.1:%d  auth: %s  state: %s"
        % (layout.proxy_port, auth, layout.state_dir)
    )
    return 0 if all(status.values()) else 3


def cmd_aio_env(args):
    env = _cluster(args).env(args.account)
    print("export " + " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in env.items()))


def cmd_aio_down(args):
    _cluster(args).down(purge=args.purge)


def cmd_deploy(args):
    from mlstorlets.client.connection import connection_from_environment
    from mlstorlets.client.deploy import deploy

    deploy(connection_from_environment(), args.source, library=not args.no_library)


def parse_params(pairs):
    """``['k=v', ...]`` -> dict, refusing anything else."""
    params = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError("parameter %r is not of the form key=value" % pair)
        params[key] = value
    return params


def report(summary, args):
    """Print a batch summary (as JSON with ``--json``); the exit status."""
    print(summary.to_json() if args.json else summary.format())
    if summary.interrupted:
        return INTERRUPTED
    return 0 if summary.ok else FAILED


def batch_options(args):
    return dict(
        concurrency=args.concurrency,
        resume=not args.no_resume,
        dry_run=args.dry_run,
        placement=args.placement,
    )


def cmd_run(args):
    from mlstorlets.client.placement import run_anywhere

    return report(
        run_anywhere(
            args.storlet,
            args.src,
            args.dest,
            params=parse_params(args.param),
            extra_resources=args.extra_resource,
            **batch_options(args),
        ),
        args,
    )


def cmd_cp(args):
    from mlstorlets.client.placement import copy

    return report(copy(args.src, args.dest, **batch_options(args)), args)


def _selection(args):
    from mlstorlets.client.objects import Filter

    return Filter(tuple(args.filters or ()))


def cmd_ls(args):
    from mlstorlets.client.objects import entries, format_size, table
    from mlstorlets.client.stores.registry import Stores

    found = list(entries(Stores(), args.uri, _selection(args)))
    if args.json:
        print(
            json.dumps([{"uri": uri, "size": e.size, "etag": e.etag} for uri, e in found], indent=2)
        )
        return 0
    size = format_size if args.human_readable else str
    rows = [
        (size(e.size), e.etag or "", uri) if args.long else (size(e.size), uri) for uri, e in found
    ]
    if rows:
        print(table(rows))
    total = sum(e.size for _uri, e in found)
    if args.summarize:
        print("%d objects, %s" % (len(found), size(total)))
    return 0


def cmd_cat(args):
    from mlstorlets.client.objects import copy_body
    from mlstorlets.client.stores.registry import Stores

    copy_body(Stores(), args.uri, sys.stdout.buffer)
    return 0


def cmd_stat(args):
    from mlstorlets.client.objects import describe, entries, format_size
    from mlstorlets.client.stores.registry import Stores

    found = [describe(uri, e) for uri, e in entries(Stores(), args.uri, _selection(args))]
    if args.json:
        print(json.dumps(found if len(found) != 1 else found[0], indent=2))
        return 0
    for one in found:
        print(
            "%s\n  size: %d (%s)\n  etag: %s"
            % (one["uri"], one["size"], format_size(one["size"]), one["etag"])
        )
        for key, value in sorted(one["headers"].items()):
            print("  %s: %s" % (key, value))
        for key, value in sorted(one["metadata"].items()):
            print("  meta %s: %s" % (key, value))
    return 0


def cmd_rm(args):
    from mlstorlets.client.objects import entries, remove
    from mlstorlets.client.stores.registry import Stores
    from mlstorlets.client.uri import parse

    registry = Stores()
    targets = [uri for uri, _e in entries(registry, args.uri, _selection(args))]
    if parse(args.uri).is_prefix and targets and not (args.force or args.dry_run):
        if not sys.stdin.isatty():
            raise UsageError(
                "rm %s would delete %d objects: pass --force "
                "(or --dry-run to list them)" % (args.uri, len(targets))
            )
        answer = input("delete %d objects under %s? [y/N] " % (len(targets), args.uri))
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 0
    removed = targets if args.dry_run else remove(registry, targets)
    if args.json:
        print(json.dumps({"deleted" if not args.dry_run else "would_delete": removed}, indent=2))
    else:
        for uri in removed:
            print("%s %s" % ("would delete" if args.dry_run else "deleted", uri))
    return 0


def cmd_storlets(args):
    from mlstorlets.client.objects import deployed_storlets, table
    from mlstorlets.client.stores.registry import Stores

    found = deployed_storlets(Stores())
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    rows = [("NAME", "PARAMETERS", "DESCRIPTION")] + [
        (s["name"], ",".join(s["parameters"]) or "-", s["doc"]) for s in found
    ]
    print(table(rows))
    return 0


def cmd_report(args):
    from mlstorlets.client.report import check_destination, write_report

    out = check_destination(args.out)
    shown = write_report(args.src, out, compare=args.compare, max_objects=args.max)
    print("wrote %s: %d %s" % (out, shown["objects"], "frame pairs" if args.compare else "objects"))
    return 0


def cmd_faces_extract(args):
    from mlstorlets.client.faces import pipeline

    return report(
        pipeline.extract(
            None,
            args.src,
            args.dest,
            size=args.size,
            margin=args.margin,
            label_key=args.label_key,
            **batch_options(args),
        ),
        args,
    )


def cmd_faces_train(args):
    from mlstorlets.client.faces import pipeline

    result = pipeline.train(
        None,
        args.src,
        args.model,
        label_key=args.label_key,
        labels=args.labels,
        C=args.C,
        concurrency=args.concurrency,
        dry_run=args.dry_run,
        placement=args.placement,
    )
    if args.json:
        print(json.dumps(dict(dataclasses.asdict(result), dry_run=args.dry_run), indent=2))
    elif args.dry_run:
        print(
            "would train %s on %d faces of %s: %d shard(s) to pack"
            % (result.model, result.faces, ", ".join(result.classes), result.shards)
        )
    else:
        print(
            "trained %s on %d faces of %s: %d shard(s), %d merge(s), "
            "open-set threshold %s, %.1f s"
            % (
                result.model,
                result.faces,
                ", ".join(result.classes),
                result.shards,
                result.merges,
                result.metadata.get("Threshold"),
                result.seconds,
            )
        )


def cmd_faces_recognize(args):
    from mlstorlets.client.faces import pipeline

    result = pipeline.recognize(
        None,
        args.model,
        args.src,
        args.dest,
        threshold=args.threshold,
        kind=args.kind,
        concurrency=args.concurrency,
        dry_run=args.dry_run,
        resume=not args.no_resume,
        placement=args.placement,
    )
    if args.dest is not None:
        return report(result, args)
    if args.json:
        print(
            json.dumps(
                {
                    "results": result.results,
                    "planned": result.planned,
                    "failed": [{"name": n, "reason": r} for n, r in result.failed],
                    "dry_run": args.dry_run,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        for name in result.planned:
            print("would recognize %s" % name)
        for name, tags in sorted(result.results.items()):
            print("%s: %s" % (name, " ".join("%s=%s" % kv for kv in sorted(tags.items()))))
        for name, reason in result.failed:
            print("failed %s: %s" % (name, reason))
    return FAILED if result.failed else 0


def cmd_rotoscope(args):
    from mlstorlets.client.rotoscope import rotoscope

    quiet = args.json or args.dry_run
    summary = rotoscope(
        None,  # the cluster's connection from the environment, if a URI needs it
        args.src,
        args.dest,
        args.filter,
        parse_params(args.param),
        every=args.every,
        width=args.width,
        quality=args.quality,
        work=args.work,
        range_size=args.range_size,
        group_size=args.group_size,
        concurrency=args.concurrency,
        resume=not args.no_resume,
        dry_run=args.dry_run,
        log=None if quiet else lambda line: print(line, file=sys.stderr),
        placement=args.placement,
    )
    return report(summary, args)


def cmd_demo(args):
    from mlstorlets.client import demo

    cluster = _cluster(args)
    result = demo.run(cluster.connection(), args.data, threshold=args.threshold)
    return 0 if result["photos_correct"] else 1


def cmd_node_config(args):
    from mlstorlets.server.node import configure_node

    written = configure_node(
        args.server_conf,
        args.role,
        args.conf_dir,
        args.host_root,
        gateway=args.gateway,
        memcache_servers=args.memcache_servers,
        name=args.name,
        native_lib_dir=args.native_lib_dir,
        storlet_cache_time=args.storlet_cache_time,
        container_mem_limit=args.mem_limit,
        container_pids_limit=args.pids_limit,
        sandbox_cpu_time_limit=args.cpu_time_limit,
    )
    for what, path in written.items():
        print("%-22s %s" % (what, path))


def add_batch_options(sp, params=True, resume=True):
    if params:
        sp.add_argument(
            "-p",
            "--param",
            action="append",
            metavar="KEY=VALUE",
            help="a storlet parameter (repeatable); the storlet must declare it",
        )
    sp.add_argument(
        "-j", "--concurrency", type=positive, default=4, help="objects in flight (default 4)"
    )
    if resume:
        sp.add_argument("--no-resume", action="store_true", help="redo outputs that already exist")
    sp.add_argument("--dry-run", action="store_true", help="say what would be done; do nothing")
    sp.add_argument("--json", action="store_true", help="print the summary as JSON")
    where = sp.add_mutually_exclusive_group()
    where.add_argument(
        "--on-client",
        dest="placement",
        action="store_const",
        const="client",
        default="auto",
        help="run here even when the data is in the cluster (the data comes through)",
    )
    where.add_argument(
        "--in-cluster-only",
        dest="placement",
        action="store_const",
        const="cluster",
        help="fail, before any work, unless it can run in the cluster next to the data",
    )


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parser():
    p = argparse.ArgumentParser(
        prog="mlstorlets", description="Machine learning inside an OpenStack Swift cluster."
    )
    p.add_argument("--version", action="version", version="%(prog)s " + mlstorlets.__version__)
    sub = p.add_subparsers(dest="command", required=True)

    aio = sub.add_parser("aio", help="the embedded all-in-one cluster")
    aio_sub = aio.add_subparsers(dest="aio_command", required=True)
    for name, func, help_ in (
        ("up", cmd_aio_up, "start it (idempotent)"),
        ("status", cmd_aio_status, "show its processes"),
        ("env", cmd_aio_env, "print the variables that reach it"),
        ("down", cmd_aio_down, "stop it"),
    ):
        sp = aio_sub.add_parser(name, help=help_)
        sp.add_argument(
            "--state-dir",
            default=None,
            help="default: $MLSTORLETS_AIO_DIR or ~/.local/state/mlstorlets/aio",
        )
        sp.set_defaults(func=func)
        if name == "up":
            sp.add_argument(
                "--nodes",
                type=int,
                default=None,
                help="object servers, one replica each (default 1)",
            )
            sp.add_argument(
                "--base-port",
                type=int,
                default=None,
                help="proxy port; the other servers use the next ones (default 8080)",
            )
            sp.add_argument(
                "--keystone",
                action="store_true",
                help="authenticate with the Keystone (v3) named "
                "by the OS_* variables instead of tempauth; "
                "their user needs the admin role",
            )
        elif name == "env":
            sp.add_argument("--account", choices=("main", "other"), default="main")
        elif name == "down":
            sp.add_argument("--purge", action="store_true", help="also remove its state directory")

    dp = sub.add_parser(
        "deploy", help="upload the storlets to the cluster named by ST_AUTH/ST_USER/ST_KEY or OS_*"
    )
    dp.add_argument(
        "--source",
        default=None,
        help="directory of storlet modules (default: the project's storlets/)",
    )
    dp.add_argument("--no-library", action="store_true", help="do not upload the library zip")
    dp.set_defaults(func=cmd_deploy)

    rp = sub.add_parser(
        "run",
        help="run a storlet over every object under "
        "SRC into DEST: in the cluster when both are in it, "
        "on the client otherwise",
    )
    rp.add_argument("storlet", help="the storlet object, e.g. extract_face.py")
    rp.add_argument(
        "src",
        help="an object or a prefix (ending in /): "
        "swift://, s3://, file://, dropbox:// or "
        "gdrive://",
    )
    rp.add_argument("dest", help="a prefix (ending in /) or one object")
    add_batch_options(rp)
    rp.add_argument(
        "--extra-resource",
        action="append",
        default=None,
        metavar="/CONTAINER/OBJECT",
        help="another input of every invocation (repeatable)",
    )
    rp.set_defaults(func=cmd_run)

    cp = sub.add_parser(
        "cp", help="copy objects between stores (swift://, s3://, file://, dropbox://, gdrive://)"
    )
    cp.add_argument("src")
    cp.add_argument("dest")
    add_batch_options(cp, params=False)
    cp.set_defaults(func=cmd_cp)

    def add_filters(sp):
        sp.add_argument(
            "--exclude",
            dest="filters",
            metavar="PATTERN",
            action="append",
            type=lambda p: ("exclude", p),
            help="leave out names (relative to the prefix) "
            "matching PATTERN; with --include, the last match "
            "decides, as in aws s3",
        )
        sp.add_argument(
            "--include",
            dest="filters",
            metavar="PATTERN",
            action="append",
            type=lambda p: ("include", p),
            help="take back names matching PATTERN",
        )

    ls = sub.add_parser("ls", help="list an object or every object under a prefix, in any store")
    ls.add_argument("uri", help="e.g. swift://photos/train/, s3://b/k, /local/dir/")
    ls.add_argument("-l", "--long", action="store_true", help="also show each etag")
    ls.add_argument("-H", "--human-readable", action="store_true")
    ls.add_argument(
        "-s", "--summarize", action="store_true", help="end with the count and total size"
    )
    ls.add_argument("--json", action="store_true")
    add_filters(ls)
    ls.set_defaults(func=cmd_ls)

    ca = sub.add_parser("cat", help="write an object's body to stdout")
    ca.add_argument("uri")
    ca.set_defaults(func=cmd_cat)

    st = sub.add_parser(
        "stat",
        help="an object's size, etag, content headers and metadata (every object under a prefix)",
    )
    st.add_argument("uri")
    st.add_argument("--json", action="store_true")
    add_filters(st)
    st.set_defaults(func=cmd_stat)

    rm = sub.add_parser(
        "rm", help="delete an object, or every object under a prefix (asks first, or --force)"
    )
    rm.add_argument("uri")
    rm.add_argument("-f", "--force", action="store_true", help="delete a prefix without asking")
    rm.add_argument(
        "--dry-run", action="store_true", help="list what would be deleted, delete nothing"
    )
    rm.add_argument("--json", action="store_true")
    add_filters(rm)
    rm.set_defaults(func=cmd_rm)

    sl = sub.add_parser(
        "storlets",
        help="the storlets deployed to the account, with their parameters and descriptions",
    )
    sl.add_argument("--json", action="store_true")
    sl.set_defaults(func=cmd_storlets)

    rep = sub.add_parser(
        "report",
        help="one HTML page to look at: "
        "recognized photos with their faces boxed and named, "
        "or frames before and after a filter",
    )
    rep.add_argument("src", help="recognized photos (or source frames)")
    rep.add_argument("out", help="the local HTML file to write")
    rep.add_argument(
        "--compare",
        metavar="FILTERED",
        default=None,
        help="filtered frames to show beside those of SRC",
    )
    rep.add_argument(
        "--max",
        type=positive,
        default=100,
        help="objects (or frame pairs, evenly spaced) shown (default 100)",
    )
    rep.set_defaults(func=cmd_report)

    faces = sub.add_parser(
        "faces", help="the face pipeline: in the cluster, or on the client for other stores"
    )
    faces_sub = faces.add_subparsers(dest="faces_command", required=True)
    fe = faces_sub.add_parser("extract", help="crop the face of every photo under SRC into DEST")
    fe.add_argument("src")
    fe.add_argument("dest")
    fe.add_argument("--size", type=int, default=150, help="side of the aligned PNG crop, in pixels")
    fe.add_argument(
        "--margin", type=float, default=0.25, help="room around the face, a fraction of its size"
    )
    fe.add_argument(
        "--label-key", default="Name", help="metadata key of the label (X-Object-Meta-<key>)"
    )
    add_batch_options(fe, params=False)
    fe.set_defaults(func=cmd_faces_extract)
    ft = faces_sub.add_parser(
        "train", help="train a recognizer from the labelled crops under SRC into MODEL"
    )
    ft.add_argument("src")
    ft.add_argument("model", help="the model object (.npz), e.g. swift://models/faces.npz")
    ft.add_argument("--label-key", default="Name", help="the metadata key of the person")
    ft.add_argument(
        "--labels",
        default=None,
        metavar="RULE",
        help="where each crop's person comes from instead: folder (crops/obama/1.png), "
        "name:REGEX (name:^([a-z]+) on obama14.png) or metadata:KEY",
    )
    ft.add_argument(
        "--C", type=float, default=1.0, dest="C", help="the linear SVM's regularisation"
    )
    add_batch_options(ft, params=False, resume=False)
    ft.set_defaults(func=cmd_faces_train)
    fr = faces_sub.add_parser("recognize", help="name the faces in the photos and videos under SRC")
    fr.add_argument("model")
    fr.add_argument("src")
    fr.add_argument(
        "dest", nargs="?", default=None, help="write tagged copies here; without it, print the tags"
    )
    fr.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="a face farther than this from every training face "
        "is unknown (default: the model's calibrated one)",
    )
    fr.add_argument(
        "--kind",
        choices=("image", "video"),
        default=None,
        help="force the kind of every object (video: outputs named .avi, Motion JPEG)",
    )
    add_batch_options(fr, params=False)
    fr.set_defaults(func=cmd_faces_recognize)

    ro = sub.add_parser(
        "rotoscope",
        help="video SRC to frames, FILTER over "
        "every frame, frames to a video at DEST, in the "
        "cluster",
    )
    ro.add_argument("src", help="swift://container/video")
    ro.add_argument(
        "dest",
        help="the video, or a prefix (ending in /) for "
        "<name>-<filter>.avi: swift:// stays in the cluster, "
        "any other store is published through the client",
    )
    ro.add_argument("--filter", required=True, help="cartoon, pencil, stylize, smooth or colormap")
    ro.add_argument(
        "--every", type=positive, default=1, help="keep one frame in N (default 1: every frame)"
    )
    ro.add_argument(
        "--width", type=int, default=0, help="scale frames to this width (default: as they are)"
    )
    ro.add_argument(
        "--quality", type=int, default=90, help="JPEG quality of frames and video (default 90)"
    )
    ro.add_argument(
        "--work",
        default=None,
        metavar="swift://C/PREFIX/",
        help="where the frames and segments go (default: <dest>/<name>-<filter>.work/)",
    )
    ro.add_argument(
        "--range-size",
        type=positive,
        default=500,
        help="frames per extraction request (default 500)",
    )
    ro.add_argument(
        "--group-size", type=positive, default=10, help="inputs per assembly request (default 10)"
    )
    add_batch_options(ro)
    ro.set_defaults(func=cmd_rotoscope)

    de = sub.add_parser(
        "demo", help="run the face pipeline on a labelled data set in the embedded cluster"
    )
    de.add_argument("--data", required=True, help="folder with train/, test/ and video/")
    de.add_argument("--state-dir", default=None)
    de.add_argument("--threshold", type=float, default=None)
    de.set_defaults(func=cmd_demo)

    nc = sub.add_parser(
        "node-config", help="add storlets to one Swift server's configuration (run on every node)"
    )
    nc.add_argument("--role", choices=("proxy", "object"), required=True)
    nc.add_argument("--server-conf", required=True, help="e.g. /etc/swift/proxy-server.conf")
    nc.add_argument("--conf-dir", default="/etc/swift")
    nc.add_argument("--host-root", default="/var/lib/storlets")
    nc.add_argument("--gateway", default="bubblewrap", choices=("bubblewrap", "docker", "podman"))
    nc.add_argument("--memcache-servers", default="127.0.0.1:11211")
    nc.add_argument("--name", default="")
    nc.add_argument(
        "--native-lib-dir", default=None, help="where libsbus.so is (bubblewrap gateway)"
    )
    nc.add_argument(
        "--storlet-cache-time",
        type=float,
        default=10,
        help="seconds a proxy keeps a storlet's metadata in memcache (default 10; 0: not at all)",
    )
    nc.add_argument(
        "--mem-limit",
        type=int,
        default=None,
        help="bytes of address space per sandbox process (default 4 GiB; 0: no limit)",
    )
    nc.add_argument(
        "--pids-limit",
        type=int,
        default=None,
        help="processes and threads per sandbox (default 256)",
    )
    nc.add_argument(
        "--cpu-time-limit",
        type=int,
        default=None,
        help="CPU-seconds per sandbox process, bubblewrap only (default 3600)",
    )
    nc.set_defaults(func=cmd_node_config)
    return p


# The commands that run server code; only they import it.
SERVER_COMMANDS = ("aio", "demo", "node-config")


def main(argv=None):
    args = parser().parse_args(argv)
    from swiftclient.exceptions import ClientException

    from mlstorlets.client.errors import Error
    from mlstorlets.client.swift import reason_of
    from mlstorlets.sandbox.errors import ObjectError

    # A bad object found by code the storlets also run is an ObjectError;
    # anything else is a bug, and keeps its traceback.
    expected = (Error, ObjectError)
    if args.command in SERVER_COMMANDS:
        import warnings

        # eventlet, imported by the storlets engine, warns of its own future.
        warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
        from mlstorlets.server.aio import ClusterError
        from mlstorlets.server.node import ConfigError

        expected += (ClusterError, ConfigError)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("mlstorlets: interrupted", file=sys.stderr)
        return INTERRUPTED
    except expected as err:
        print("mlstorlets: %s" % err, file=sys.stderr)
        for note in getattr(err, "__notes__", ()):
            print("mlstorlets: %s" % note, file=sys.stderr)
        return ERROR
    except ClientException as err:
        print(
            "mlstorlets: %s failed: %s" % (err.http_path or "a request", reason_of(err)[1]),
            file=sys.stderr,
        )
        return ERROR


if __name__ == "__main__":
    sys.exit(main())
