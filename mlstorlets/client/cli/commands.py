"""What each ``mlstorlets`` command does: a function of its parsed
arguments, returning the exit status (see :mod:`mlstorlets.client.cli`).

A command imports what it runs when it runs: the server code (the embedded
cluster, node configuration) only for ``aio``, ``demo`` and
``node-config``.
"""

import dataclasses
import json
import shlex
import sys
import time

from mlstorlets.client.errors import UsageError

# Exit statuses: 1 some objects failed, 2 the command could not run, 130
# interrupted (Ctrl-C).
FAILED, ERROR, INTERRUPTED, READER_GONE = 1, 2, 130, 141


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
    rows = [("NAME", "PARAMETERS", "OUTPUT", "DESCRIPTION")] + [
        (s["name"], brief(s["parameters"]), s["output_type"] or "as source", s["doc"])
        for s in found
    ]
    print(table(rows))
    return 0


def brief(names, width=40):
    """``names`` joined by commas within about ``width`` characters, with
    how many there are when cut (``--json`` lists them all): a storlet of
    many parameters would push the other columns off the screen."""
    text = ",".join(names)
    if len(text) <= width:
        return text or "-"
    shown = names[:1]
    for name in names[1:]:
        if len(",".join(shown + [name])) > width:
            break
        shown.append(name)
    if len(shown) == len(names):
        return text
    return "%s,... (%d)" % (",".join(shown), len(names))


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
            faces=args.faces,
            min_face=args.min_face,
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
    if result.skipped and not args.json:
        print(
            "left out %d crop(s) of faces other than their photo's largest, e.g. %s"
            % (len(result.skipped), result.skipped[0])
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
        model=args.model,
        temporal=args.temporal,
        every=args.every,
        width=args.width,
        quality=args.quality,
        work=args.work,
        frames_to=args.frames_to,
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


def _gateway_options(pairs):
    """``--gateway-option KEY=VALUE`` as keyword arguments: an option name
    of the gateway's configuration and a one-line value."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier() or "\n" in value or "\r" in value:
            raise UsageError("--gateway-option takes KEY=VALUE, not %r" % pair)
        options[key] = value.strip()
    return options


def cmd_node_config(args):
    from mlstorlets.server import node

    if args.remove:
        changes = node.plan_remove(args.server_conf, args.conf_dir, args.name)
    elif args.role is None:
        raise UsageError("node-config needs --role (proxy or object)")
    else:
        changes = node.plan_configure(
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
            **_gateway_options(args.gateway_option),
        )
    changed = [c for c in changes if c.changed]
    if not changed:
        print("nothing to change: %s" % ", ".join(c.path for c in changes))
        return 0
    if not args.dry_run:
        for line in node.apply(changes, backup=True):
            print(line)
        return 0
    for change in changed:
        for note in change.notes:
            print("%s: %s" % (change.path, note))
    for change in changed:
        sys.stdout.write(change.diff())
    print("dry run: nothing written")
    return 0
