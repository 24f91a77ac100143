"""The ``mlstorlets`` command line's arguments: each subcommand runs a
function of :mod:`mlstorlets.client.cli.commands` (looked up when the
parser is built, so that a test may replace one)."""

import argparse

import mlstorlets
from mlstorlets.client.cli import commands


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
        ("up", commands.cmd_aio_up, "start it (idempotent)"),
        ("status", commands.cmd_aio_status, "show its processes"),
        ("env", commands.cmd_aio_env, "print the variables that reach it"),
        ("down", commands.cmd_aio_down, "stop it"),
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
    dp.set_defaults(func=commands.cmd_deploy)

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
    rp.set_defaults(func=commands.cmd_run)

    cp = sub.add_parser(
        "cp", help="copy objects between stores (swift://, s3://, file://, dropbox://, gdrive://)"
    )
    cp.add_argument("src")
    cp.add_argument("dest")
    add_batch_options(cp, params=False)
    cp.set_defaults(func=commands.cmd_cp)

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
    ls.set_defaults(func=commands.cmd_ls)

    ca = sub.add_parser("cat", help="write an object's body to stdout")
    ca.add_argument("uri")
    ca.set_defaults(func=commands.cmd_cat)

    st = sub.add_parser(
        "stat",
        help="an object's size, etag, content headers and metadata (every object under a prefix)",
    )
    st.add_argument("uri")
    st.add_argument("--json", action="store_true")
    add_filters(st)
    st.set_defaults(func=commands.cmd_stat)

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
    rm.set_defaults(func=commands.cmd_rm)

    sl = sub.add_parser(
        "storlets",
        help="the storlets deployed to the account, with their parameters and descriptions",
    )
    sl.add_argument("--json", action="store_true")
    sl.set_defaults(func=commands.cmd_storlets)

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
    rep.set_defaults(func=commands.cmd_report)

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
    fe.add_argument(
        "--faces",
        choices=("largest", "all"),
        default="largest",
        help="crop the largest face (default), or every face: a.png for the largest, "
        "a-face1.png... for the others",
    )
    fe.add_argument(
        "--min-face",
        type=int,
        default=None,
        metavar="PX",
        help="with --faces all, the narrowest face cropped (default 24)",
    )
    add_batch_options(fe, params=False)
    fe.set_defaults(func=commands.cmd_faces_extract)
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
    ft.set_defaults(func=commands.cmd_faces_train)
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
    fr.set_defaults(func=commands.cmd_faces_recognize)

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
    how = ro.add_mutually_exclusive_group(required=True)
    how.add_argument("--filter", help="cartoon, pencil, stylize, smooth or colormap")
    how.add_argument(
        "--model",
        metavar="URI",
        help="an ONNX image-to-image model (a style network) applied to every frame instead",
    )
    ro.add_argument(
        "--temporal",
        type=float,
        default=0.0,
        metavar="STRENGTH",
        help="carry each output along the motion from the previous one, against flicker: "
        "the previous output's share, in [0, 0.95] (default 0: every frame on its own; "
        "0.7 is a good start); frames are then filtered in segments, none stored",
    )
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
        "--frames-to",
        default=None,
        metavar="swift://C/PREFIX/",
        help="keep every filtered frame as an object under this prefix (default: no frame "
        "object; each range of frames is filtered into a video segment next to the video)",
    )
    ro.add_argument(
        "--range-size",
        type=positive,
        default=500,
        help="frames per extraction or segment request (default 500)",
    )
    ro.add_argument(
        "--group-size", type=positive, default=10, help="inputs per assembly request (default 10)"
    )
    add_batch_options(ro)
    ro.set_defaults(func=commands.cmd_rotoscope)

    de = sub.add_parser(
        "demo", help="run the face pipeline on a labelled data set in the embedded cluster"
    )
    de.add_argument("--data", required=True, help="folder with train/, test/ and video/")
    de.add_argument("--state-dir", default=None)
    de.add_argument("--threshold", type=float, default=None)
    de.set_defaults(func=commands.cmd_demo)

    nc = sub.add_parser(
        "node-config",
        help="add storlets to one Swift server's configuration (run on every node)",
        description="Add storlets to one Swift server's configuration, or take them out "
        "(--remove). The server's file is edited line by line, its comments kept; a copy "
        "of it is kept as FILE.mlstorlets-orig before the first change. Every change is "
        "printed; a second run with the same options changes nothing.",
    )
    nc.add_argument(
        "--role",
        choices=("proxy", "object"),
        default=None,
        help="the server's role (required, except with --remove)",
    )
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
    nc.add_argument(
        "--gateway-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another storlet-gateway.conf option, kept on every later run "
        "(repeatable; e.g. container_cpuset_cpus=2-3, cgroup_parent=swift/storlets)",
    )
    nc.add_argument(
        "--dry-run",
        action="store_true",
        help="print the diff of every file that would change, and write nothing",
    )
    nc.add_argument(
        "--remove",
        action="store_true",
        help="take storlets out: the project's filters, node_timeout as it was, and the "
        "gateway and internal client files (--conf-dir and --name find them where the "
        "server's file no longer names them)",
    )
    nc.set_defaults(func=commands.cmd_node_config)
    return p
