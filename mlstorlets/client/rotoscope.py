"""The rotoscope workflow: a video to frames, a filter over every frame, the
frames back to a video, inside the cluster.

:func:`rotoscope` runs five stages, each a batch of the engine
(:func:`mlstorlets.client.batch.execute`: progress, Ctrl-C, a summary),
each resumable from what its outputs already are:

1. **probe**: one storlet ``GET`` of the video (``video_frames.py``,
   ``op=probe``) answers its frame count and rate as headers, no body.
2. **frames**: one request per range of up to ``range_size`` frames, a
   ``PUT`` of the frames prefix with ``X-Copy-From: <video>``,
   ``X-Run-Storlet: video_frames.py`` and ``X-Mlstorlets-Extract: tar``: the
   storlet cuts the range into a tar of JPEG frames on the object server
   holding the video, and the proxy extracts it into frame objects
   (``000000.jpg``, ... with ``Frame-Index``, ``Frame-Time``, ``Frame-Fps``).
   Only missing frames are asked for, so a range cut short is completed
   without writing a frame twice.
3. **filter**: :func:`mlstorlets.client.batch.run_batch` of
   ``frame_filter.py`` over every frame (one copy-semantics request each).
4. **video**: ``frames_to_video.py`` over groups of ``group_size`` filtered
   frames (the first frame is the request's object, the others
   ``X-Storlet-Extra-Resources``, so it runs on the proxy) makes Motion JPEG
   AVI segments; then the same storlet over groups of segments, level
   after level, until one video remains.  Frames are copied, not
   re-encoded: a level costs I/O.
5. **publish**: the video is copied to ``dest`` (server-side within the
   cluster; through the client to any other store).

Work objects live under ``work`` in stage folders whose names carry a
digest of everything that made them (the video's ETag, the parameters),
so a changed input or parameter starts afresh and an unchanged one resumes.
"""

import dataclasses
import json
import posixpath
import time

from mlstorlets.client.batch import (
    BatchSummary,
    execute,
    existing_outputs,
    gateway,
    run_batch,
    run_digest,
)
from mlstorlets.client.swift import SwiftError
from mlstorlets.client.uri import format_uri, parse, parse_uri
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.video.frames import MAX_RANGE, frame_name

FRAMES_STORLET = "video_frames.py"
FILTER_STORLET = "frame_filter.py"
VIDEO_STORLET = "frames_to_video.py"
# Extra resources are one header of at most 8 KiB (Swift's max_header_size)
# and the proxy holds every one open while the storlet runs.
MAX_GROUP = 100


@dataclasses.dataclass
class RotoscopeSummary:
    """What :func:`rotoscope` did: one batch summary per stage.

    ``client_bytes`` counts the bytes of data (video, frames, answers of
    failed requests) that went through the client: none when source and
    destination are in the cluster.
    """

    src: str
    dest: str
    filter: str
    frames: int = 0
    fps: float = 0.0
    stages: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def interrupted(self):
        return any(s.interrupted for s in self.stages)

    @property
    def ok(self):
        return all(s.ok for s in self.stages)

    @property
    def client_bytes(self):
        return sum(s.client_bytes for s in self.stages)

    def format(self):
        lines = [s.format() for s in self.stages]
        verb = "would make" if self.dry_run else "made" if self.ok else "did not finish"
        lines.append(
            "rotoscope %s -> %s: %s %d frames at %.6g fps through %s in %.1f s; "
            "%d bytes through the client"
            % (
                self.src,
                self.dest,
                verb,
                self.frames,
                self.fps,
                self.filter,
                self.seconds,
                self.client_bytes,
            )
        )
        return "\n".join(lines)

    def as_dict(self):
        return {
            "src": self.src,
            "dest": self.dest,
            "filter": self.filter,
            "frames": self.frames,
            "fps": self.fps,
            "seconds": self.seconds,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "interrupted": self.interrupted,
            "client_bytes": self.client_bytes,
            "stages": [s.as_dict() for s in self.stages],
        }

    def to_json(self):
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False)


@dataclasses.dataclass
class _Step:
    """One request of a stage: ``label`` for the summary, ``size`` for its
    data, ``args`` for the work function."""

    label: str
    size: int
    args: tuple


def plan_ranges(missing, range_size):
    """Runs of consecutive frame indices, each at most ``range_size`` long:
    [(start, count), ...]."""
    ranges = []
    for index in sorted(missing):
        if ranges and ranges[-1][0] + ranges[-1][1] == index and ranges[-1][1] < range_size:
            ranges[-1][1] += 1
        else:
            ranges.append([index, 1])
    return [tuple(r) for r in ranges]


def groups(names, size):
    """``names`` in consecutive groups of at most ``size``."""
    return [names[i : i + size] for i in range(0, len(names), size)]


def default_outputs(src, dest, filter_name):
    """(video URI, work URI) for ``src`` rotoscoped into ``dest``.

    A ``dest`` prefix receives ``<video stem>-<filter>.avi``.  Work objects
    go beside the video when ``dest`` is in Swift, else beside ``src``.
    """
    stem = posixpath.splitext(posixpath.basename(parse(src).key))[0]
    target = parse(dest)
    name = "%s-%s" % (stem, filter_name)
    video = str(target.with_key(target.key + name + ".avi")) if target.is_prefix else dest
    base = target if target.scheme == "swift" else parse(src)
    folder = base.key.rstrip("/") if base.is_prefix else posixpath.dirname(base.key)
    work = format_uri(base.location, (folder + "/" if folder else "") + name + ".work/")
    return video, work


def rotoscope(
    conn,
    src,
    dest,
    filter_name,
    params=None,
    *,
    every=1,
    width=0,
    quality=90,
    work=None,
    range_size=500,
    group_size=10,
    concurrency=4,
    resume=True,
    progress=None,
    dry_run=False,
    stores=None,
    log=None,
):
    """Turn the video ``src`` into frames, filter them, and make them a
    video at ``dest``, inside the cluster.

    Parameters
    ----------
    conn : swiftclient Connection or mlstorlets.client.swift.Swift
    src : str
        ``swift://container/video`` (any format FFmpeg reads).
    dest : str
        The video (or a prefix for it), in any store: ``swift://`` stays in
        the cluster, anything else is published through the client.
    filter_name : str
        One of :data:`mlstorlets.sandbox.video.filters.FILTERS`.
    params : dict, optional
        The filter's parameters (``frame_filter.py`` declares them).
    every : int
        Keep one frame in ``every`` (the video's rate is divided by it).
    width : int
        Scale frames to this width (0: the video's).
    quality : int
        JPEG quality of the frames and the video.
    work : str, optional
        ``swift://container/prefix/`` for the work objects (see
        :func:`default_outputs`).
    range_size, group_size : int
        Frames per extraction request; inputs per assembly request.
    concurrency, resume, progress, dry_run
        As :func:`mlstorlets.client.batch.run_batch`.
    stores : Stores, optional
        Where ``dest`` is published (default: from the environment).
    log : callable, optional
        Called with one line per stage as it starts.

    Returns
    -------
    RotoscopeSummary
    """
    if not 1 <= range_size <= MAX_RANGE:
        raise ValueError("range_size must be in [1, %d]" % MAX_RANGE)
    if not 2 <= group_size <= MAX_GROUP:
        raise ValueError("group_size must be in [2, %d]" % MAX_GROUP)
    log = log or (lambda line: None)
    swift = gateway(conn)
    members = swift.limits().extract_members
    if members is not None and range_size > members:
        raise ValueError(
            "range_size %d is over the %d objects this cluster "
            "writes from one extraction (max_extract_members)" % (range_size, members)
        )
    started = time.monotonic()
    filter_params = dict(params or {}, filter=filter_name, quality=quality)
    for storlet, checked in (
        (FRAMES_STORLET, None),
        (FILTER_STORLET, filter_params),
        (VIDEO_STORLET, None),
    ):
        swift.check_storlet(storlet, checked)
    src_uri = parse(src)
    if src_uri.scheme != "swift" or src_uri.is_prefix:
        raise ValueError("rotoscope reads one video in the cluster: swift://container/object")
    video_uri, default_work = default_outputs(src, dest, filter_name)
    work = work or default_work
    if not work.endswith("/"):
        work += "/"
    work_container, work_prefix = parse_uri(work)
    container, name = src_uri.location, src_uri.key
    headers = swift.head(container, name)
    if headers is None:
        raise ObjectError(src, "no such object")

    summary = RotoscopeSummary(src, dest, filter_name, dry_run=dry_run)
    log("probe %s" % src)
    probe = _probe(swift, container, name)
    summary.fps = probe["fps"] / every
    expected = -(-probe["frames"] // every)
    summary.frames = expected

    extraction = {"every": every, "width": width, "quality": quality}
    frames_digest = run_digest(FRAMES_STORLET, extraction, [headers["etag"]])[:12]
    frames_prefix = "%sframes-%s/" % (work_prefix, frames_digest)
    filter_digest = run_digest(FILTER_STORLET, filter_params, [frames_digest])[:12]
    filtered_prefix = "%s%s-%s/" % (work_prefix, filter_name, filter_digest)
    video_prefix = "%svideo-%s-%d/" % (work_prefix, filter_digest, group_size)

    # -- frames ----------------------------------------------------------
    log("frames %s -> %s" % (src, format_uri(work_container, frames_prefix)))
    existing = _names(swift, work_container, frames_prefix, create=not dry_run) if resume else set()
    missing = [i for i in range(expected) if frame_name(i) not in existing]
    steps = []
    for start, count in plan_ranges(missing, range_size):
        # The last range runs to the end of the video, whatever its
        # container claimed.
        open_end = start + count == expected
        # The range's share of the video, as the data it reads.
        share = int(headers.get("content-length", 0)) * count // max(expected, 1)
        steps.append(
            _Step(
                "%s frames %d-%s" % (name, start, "" if open_end else start + count - 1),
                share,
                (start, 0 if open_end else count),
            )
        )
    base_params = dict(extraction, op="extract", source="%s/%s" % (container, name))

    def extract(step, job):
        start, count = step.args
        try:
            answer = swift.storlet_extract(
                container,
                name,
                work_container,
                frames_prefix.rstrip("/"),
                FRAMES_STORLET,
                dict(base_params, start=start, count=count),
            )
        except SwiftError as err:
            raise SwiftError(step.label, err.reason, err.status, err.kind) from None
        if not answer["Response Status"].startswith("201") or answer.get("Errors"):
            text = json.dumps(answer)
            job.count(len(text))
            raise ObjectError(step.label, "extraction failed: %s" % text[:500])

    stage = execute(BatchSummary("frames"), steps, extract, concurrency, progress, dry_run=dry_run)
    summary.stages.append(stage)
    if not stage.ok or dry_run:
        return _finish(summary, started)

    # -- filter ----------------------------------------------------------
    log("filter %s over %s" % (filter_name, format_uri(work_container, frames_prefix)))
    stage = run_batch(
        swift,
        FILTER_STORLET,
        format_uri(work_container, frames_prefix),
        format_uri(work_container, filtered_prefix),
        params=filter_params,
        concurrency=concurrency,
        resume=resume,
        progress=progress,
    )
    summary.stages.append(stage)
    if not stage.ok:
        return _finish(summary, started)

    # -- video -----------------------------------------------------------
    inputs = sorted(_names(swift, work_container, filtered_prefix))
    summary.frames = len(inputs)
    level, prefix = 0, filtered_prefix
    while True:
        out_prefix = "%sL%d/" % (video_prefix, level)
        log("video level %d: %d inputs -> %d" % (level, len(inputs), -(-len(inputs) // group_size)))
        stage = _assemble(
            swift,
            work_container,
            prefix,
            inputs,
            out_prefix,
            group_size,
            summary.fps,
            quality,
            concurrency,
            progress,
            resume,
        )
        summary.stages.append(stage)
        if not stage.ok:
            return _finish(summary, started)
        inputs = ["%06d.avi" % i for i in range(-(-len(inputs) // group_size))]
        prefix, level = out_prefix, level + 1
        if len(inputs) == 1:
            break

    # -- publish ---------------------------------------------------------
    from mlstorlets.client.placement import copy
    from mlstorlets.client.stores.registry import Stores

    log("publish %s" % video_uri)
    stores = stores or Stores(swift=swift.parent)
    stage = copy(
        format_uri(work_container, prefix + inputs[0]),
        video_uri,
        concurrency=1,
        resume=resume,
        stores=stores,
        progress=progress,
    )
    summary.stages.append(stage)
    summary.dest = video_uri
    return _finish(summary, started)


def _finish(summary, started):
    summary.seconds = time.monotonic() - started
    return summary


def _probe(swift, container, name):
    headers, _ = swift.storlet_get(
        container, name, FRAMES_STORLET, {"op": "probe", "source": "%s/%s" % (container, name)}
    )
    meta = "x-object-meta-video-"
    try:
        return {"frames": int(headers[meta + "frames"]), "fps": float(headers[meta + "fps"])}
    except (KeyError, ValueError):
        raise ObjectError(
            "%s/%s" % (container, name), "the probe answered no frame count"
        ) from None


def _names(swift, container, prefix, create=False):
    """Names (relative to ``prefix``) of the objects under it."""
    found = existing_outputs(swift, format_uri(container, prefix), create)
    return {name[len(prefix) :] for name in found}


def _assemble(
    swift,
    container,
    prefix,
    inputs,
    out_prefix,
    group_size,
    fps,
    quality,
    concurrency,
    progress,
    resume,
):
    """One level of assembly: ``frames_to_video.py`` over each group of
    ``inputs`` (names under ``prefix``) into ``out_prefix`` ``%06d.avi``."""
    done = _names(swift, container, out_prefix, create=True) if resume else set()
    steps = [
        _Step("%s%06d.avi" % (out_prefix, i), len(group), tuple(group))
        for i, group in enumerate(groups(inputs, group_size))
        if "%06d.avi" % i not in done
    ]
    params = {"fps": "%.6g" % fps, "quality": quality}

    def work(step, job):
        first, rest = step.args[0], step.args[1:]
        swift.storlet_copy(
            container,
            prefix + first,
            container,
            step.label,
            VIDEO_STORLET,
            dict(params, source="%s/%s%s" % (container, prefix, first)),
            ["/%s/%s%s" % (container, prefix, n) for n in rest],
            headers={"Content-Type": "video/x-msvideo"},
        )

    stage = execute(
        BatchSummary("%s (%s)" % (VIDEO_STORLET, out_prefix.rstrip("/"))),
        steps,
        work,
        concurrency,
        progress,
    )
    stage.skipped.extend("%s%s" % (out_prefix, n) for n in sorted(done))
    return stage
