"""The rotoscope workflow: a video to frames, a filter over every frame, the
frames back to a video, inside the cluster.

Written once over a runner (:func:`mlstorlets.client.runners.runner_for`,
deciding from the video and the work objects): in the cluster each stage
is storlet requests next to the data, as below; for a video in a store
without storlets (``file://``, ``s3://`` elsewhere, ...), the same
storlets run on the client, stage for stage, and the tar of each range is
extracted by the client as Swift's bulk extraction would.

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
   ``frame_filter.py`` over every frame (one copy-semantics request each);
   or, with ``model``, of ``apply_model.py``: the user's own ONNX
   image-to-image model (a style network) over every frame, the model
   object an extra resource of each request.  With ``temporal``, this
   stage is folded into the next: each segment filters its frames in
   order, carrying each output along the motion from the previous one,
   and no filtered frame is stored.
4. **video**: ``frames_to_video.py`` over groups of ``group_size`` filtered
   frames (the first frame is the request's object, the others
   ``X-Storlet-Extra-Resources``, so it runs on the proxy) makes Motion JPEG
   AVI segments; then the same storlet over groups of segments, level
   after level, until one video remains.  Frames are copied, not
   re-encoded: a level costs I/O.
5. **publish**: the video is copied to ``dest`` (server-side within the
   cluster; through the client to any other store).

Without ``frames_to`` (and without a model), stages 2 to 4 are one: each
range of frames is decoded, filtered and encoded into a Motion JPEG AVI
segment by one request on the object server holding the video
(``video_frames.py``, ``op=segment``), and the segments are joined as in
stage 4; no frame object is made.  ``frames_to`` keeps the filtered frames
as objects (stages 2 and 3, the filtered frames written there).

Work objects live under ``work`` in stage folders whose names carry a
digest of everything that made them (the video's ETag, the parameters),
so a changed input or parameter starts afresh and an unchanged one resumes.
"""

import dataclasses
import json
import posixpath
import time
from collections.abc import Callable

import numpy as np

from mlstorlets.client.batch import BatchSummary, execute, run_digest
from mlstorlets.client.errors import NotFound, StorletFailed, UsageError
from mlstorlets.client.runners import ConnectionLike, budget, runner_for, stores_for
from mlstorlets.client.stores.registry import Stores
from mlstorlets.client.uri import parse, parse_uri
from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.video.filters import apply_filter
from mlstorlets.sandbox.video.frames import MAX_RANGE, frame_name

FRAMES_STORLET = "video_frames.py"
FILTER_STORLET = "frame_filter.py"
MODEL_STORLET = "apply_model.py"
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


@dataclasses.dataclass
class _Run:
    """What every stage of one :func:`rotoscope` shares."""

    summary: RotoscopeSummary
    started: float
    runner: object
    stores: Stores
    work: object  # the parsed work URI
    video_uri: str
    group_size: int
    quality: int
    concurrency: int
    progress: bool | None
    resume: bool
    dry_run: bool
    log: Callable[[str], None]

    def at(self, key):
        """The URI of ``key`` under the work folder's container."""
        return str(self.work.with_key(key))

    def finish(self):
        self.summary.seconds = time.monotonic() - self.started
        return self.summary

    def execute(self, label, steps, work):
        """A stage of ``steps``, each ``work(step, job)``."""
        # The steps go through the runner, which counts what its calls read
        # through the client (on the client: the video and the frames).
        before = self.runner.client_bytes
        summary = execute(
            BatchSummary(label, placement=self.runner.placement),
            steps,
            work,
            self.concurrency,
            self.progress,
            dry_run=self.dry_run,
        )
        summary.client_bytes += self.runner.client_bytes - before
        return summary


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
    work = str(base.with_key((folder + "/" if folder else "") + name + ".work/"))
    return video, work


def rotoscope(
    conn: ConnectionLike,
    src: str,
    dest: str,
    filter_name: str | None = None,
    params: dict | None = None,
    *,
    model: str | None = None,
    temporal: float = 0.0,
    every: int = 1,
    width: int = 0,
    quality: int = 90,
    work: str | None = None,
    frames_to: str | None = None,
    range_size: int = 500,
    group_size: int = 10,
    concurrency: int = 4,
    resume: bool = True,
    progress: bool | None = None,
    dry_run: bool = False,
    stores: Stores | None = None,
    log: Callable[[str], None] | None = None,
    placement: str = "auto",
) -> RotoscopeSummary:
    """Turn the video ``src`` into frames, filter them, and make them a
    video at ``dest``: inside the cluster when the video is there, else on
    the client with the same storlets.

    Parameters
    ----------
    conn : Stores, swiftclient Connection, Swift gateway or None
        See :func:`mlstorlets.client.runners.stores_for`.
    src : str
        The video (any format FFmpeg reads): ``swift://container/video``,
        or a URI of any store.
    dest : str
        The video (or a prefix for it), in any store: ``swift://`` stays in
        the cluster, anything else is published through the client.
    filter_name : str, optional
        One of :data:`mlstorlets.sandbox.video.filters.FILTERS`.
    params : dict, optional
        The filter's parameters (``frame_filter.py`` declares them), or
        the model's (``apply_model.py``: ``width``, ``threads``).
    model : str, optional
        URI of an ONNX image-to-image model (see
        :mod:`mlstorlets.sandbox.models.layout`) applied to every frame in
        place of a filter; its object name's stem names the outputs.
    temporal : float, default=0
        In [0, 0.95]: the share of each output carried from the previous
        one along the motion between the frames (see
        :mod:`mlstorlets.sandbox.video.temporal`); 0 filters every frame
        on its own.  Above 0 the frames are filtered in segments of
        ``group_size`` by the assembly (the previous segment's last frame
        primes each), and no filtered frame object is written.
    every : int
        Keep one frame in ``every`` (the video's rate is divided by it).
    width : int
        Scale frames to this width (0: the video's).
    quality : int
        JPEG quality of the frames and the video.
    work : str, optional
        ``swift://container/prefix/`` for the work objects (see
        :func:`default_outputs`).
    frames_to : str, optional
        A prefix (``swift://container/prefix/``, next to the work) to keep
        every filtered frame as an object under, for people to look at or
        publish.  Without it, and without ``model``, no frame object is
        made: each range of ``range_size`` frames is decoded, filtered and
        encoded into a video segment by one request on the object server
        holding the video.
    range_size, group_size : int
        Frames per extraction (or segment) request; inputs per assembly
        request.
    concurrency, resume, progress, dry_run
        As :func:`mlstorlets.client.batch.run_batch`.
    stores : Stores, optional
        Where ``dest`` is published (default: from the environment).
    log : callable, optional
        Called with one line per stage as it starts.
    placement : {'auto', 'client', 'cluster'}, default='auto'
        Where the stages run: see
        :func:`mlstorlets.client.runners.runner_for` (the publishing goes
        through the client whenever ``dest`` is elsewhere).

    Returns
    -------
    RotoscopeSummary
    """
    if not 1 <= range_size <= MAX_RANGE:
        raise UsageError("range_size must be in [1, %d]" % MAX_RANGE)
    if not 2 <= group_size <= MAX_GROUP:
        raise UsageError("group_size must be in [2, %d]" % MAX_GROUP)
    log = log or (lambda line: None)
    src_uri = parse(src)
    if src_uri.is_prefix:
        raise UsageError("rotoscope reads one video: %s names a prefix" % src)
    if (filter_name is None) == (model is None):
        raise UsageError("rotoscope takes a filter or a model: one of the two")
    if not 0 <= temporal <= 0.95:
        raise UsageError("temporal must be in [0, 0.95], got %r" % temporal)
    if frames_to is not None and temporal:
        raise UsageError(
            "--frames-to keeps every filtered frame; --temporal filters in segments "
            "and keeps none: one of the two"
        )
    if frames_to is not None and not parse(frames_to).is_prefix:
        raise UsageError("--frames-to takes a prefix (ending in /), got %s" % frames_to)
    label = filter_name or posixpath.splitext(posixpath.basename(parse(model).key))[0]
    video_uri, default_work = default_outputs(src, dest, label)
    work = work or default_work
    if not work.endswith("/"):
        work += "/"
    stores = stores_for(conn, stores)
    # Where the video and its work objects are: the publishing alone goes
    # through the client when dest is elsewhere.
    runner = runner_for(src, work, model, connection=conn, stores=stores, placement=placement)
    members = runner.extract_limit()
    # A range with its frames: the frames and the segment.
    if members is not None and range_size + (frames_to is not None) > members:
        raise UsageError(
            "range_size %d is over the %d objects this cluster "
            "writes from one extraction (max_extract_members)" % (range_size, members)
        )
    extras, model_etags = [], []
    if model is None:
        _check_filter(filter_name, params or {})
        stage_storlet = FILTER_STORLET
        filter_params = dict(params or {}, filter=filter_name, quality=quality)
    else:
        model_store, model_key = stores.open(parse(runner.locate(model)))
        found = model_store.head(model_key.key)
        if found is None:
            raise NotFound(model, "no such model")
        stage_storlet, extras, model_etags = MODEL_STORLET, [model], [found.etag]
        filter_params = dict(
            params or {}, model=runner.source_name(model), output="image", quality=quality
        )
    # Straight from the video to filtered segments: no frame object, or the
    # filtered frames written by the same requests when they go into the
    # work's container.
    direct = model is None and (
        frames_to is None
        or parse(runner.locate(frames_to)).with_key("") == parse(runner.locate(work)).with_key("")
    )
    segment = None
    if temporal and not direct:
        # The filter runs inside the assembly: its parameters are the
        # segment storlet's, the frame filter's own JPEG quality aside.
        segment = {
            k: v
            for k, v in dict(filter_params, temporal=temporal, context=1).items()
            if k not in ("output", "quality")
        }
    started = time.monotonic()
    for storlet, checked in (
        (FRAMES_STORLET, dict(filter_params, temporal=temporal) if direct else None),
        (None if segment or direct else stage_storlet, filter_params),
        (VIDEO_STORLET, segment),
    ):
        if storlet:
            runner.check_storlet(storlet, checked)
    src = runner.locate(src)
    src_store, src_key = stores.open(src)
    entry = src_store.head(src_key.key)
    if entry is None:
        raise NotFound(src, "no such object")
    work = parse(runner.locate(work))
    summary = RotoscopeSummary(src, dest, label, dry_run=dry_run)
    run = _Run(
        summary,
        started,
        runner,
        stores,
        work,
        video_uri,
        group_size,
        quality,
        concurrency,
        progress,
        resume,
        dry_run,
        log,
    )
    log("probe %s" % src)
    probe = _probe(runner, src)
    summary.fps = probe["fps"] / every
    expected = -(-probe["frames"] // every)
    summary.frames = expected

    extraction = {"every": every, "width": width, "quality": quality}
    if direct:
        params = dict(filter_params, **extraction)
        if temporal:
            params["temporal"] = temporal
        return _direct(
            run,
            src,
            entry,
            expected,
            params,
            range_size,
            None if frames_to is None else parse(runner.locate(frames_to)),
        )
    frames_digest = run_digest(FRAMES_STORLET, extraction, [entry.etag])[:12]
    frames_prefix = "%sframes-%s/" % (work.key, frames_digest)
    filter_digest = run_digest(
        stage_storlet, dict(filter_params, temporal=temporal), [frames_digest] + model_etags
    )[:12]
    filtered_prefix = "%s%s-%s/" % (work.key, label, filter_digest)
    filtered = work
    if frames_to is not None:
        filtered = parse(runner.locate(frames_to))
        filtered_prefix = filtered.key
    video_prefix = "%svideo-%s-%d/" % (work.key, filter_digest, group_size)

    # -- frames ----------------------------------------------------------
    log("frames %s -> %s" % (src, run.at(frames_prefix)))
    if not dry_run:
        runner.ensure_location(run.at(frames_prefix))
    existing = _names(stores, run.at(frames_prefix)) if resume else set()
    missing = [i for i in range(expected) if frame_name(i) not in existing]
    steps = []
    name = posixpath.basename(src_key.key)
    for start, count in plan_ranges(missing, range_size):
        # The last range runs to the end of the video, whatever its
        # container claimed.
        open_end = start + count == expected
        # The range's share of the video, as the data it reads.
        share = (entry.size or 0) * count // max(expected, 1)
        steps.append(
            _Step(
                "%s frames %d-%s" % (name, start, "" if open_end else start + count - 1),
                share,
                (start, 0 if open_end else count),
            )
        )
    base_params = dict(extraction, op="extract", source=runner.source_name(src))

    def extract(step, job):
        start, count = step.args
        runner.extract(
            FRAMES_STORLET,
            src,
            run.at(frames_prefix),
            dict(base_params, start=start, count=count),
            count or MAX_RANGE,
        )

    stage = run.execute("frames", steps, extract)
    summary.stages.append(stage)
    if not stage.ok or dry_run:
        return run.finish()

    # -- filter ----------------------------------------------------------
    # With segments the filter runs inside the assembly, over the frames.
    prefix = frames_prefix
    if not segment:
        log("filter %s over %s" % (label, run.at(frames_prefix)))
        stage = runner.run_storlet(
            stage_storlet,
            run.at(frames_prefix),
            str(filtered.with_key(filtered_prefix)),
            params=filter_params,
            concurrency=concurrency,
            resume=resume,
            extras=extras,
            progress=progress,
        )
        summary.stages.append(stage)
        if not stage.ok:
            return run.finish()
        prefix, extras = filtered_prefix, ()
    else:
        filtered = work
    return _segments_to_video(run, filtered, prefix, video_prefix, segment, extras)


def _direct(run, src, entry, expected, params, range_size, frames_to=None):
    """The video straight to filtered segments: ``video_frames.py``
    (``op=segment``) over each range of ``range_size`` frames, on the
    object server holding the video, makes ``%06d.avi`` of the range
    filtered; then the video stages join them.  Resumable by segment: the
    folder's name is a digest of the video's ETag and of ``params``.

    With ``frames_to`` (a parsed prefix in the work's container), each
    request also writes its filtered frames there: its output is a tar of
    the frames and the segment, extracted at the container's root, the
    segment last (it says its range is whole)."""
    work = run.work
    if frames_to is not None:
        params = dict(params, frames_to=frames_to.key)
    digest = run_digest(FRAMES_STORLET, dict(params, range_size=range_size), [entry.etag])[:12]
    prefix = "%ssegments-%s/" % (work.key, digest)
    video_prefix = "%svideo-%s-%d/" % (work.key, digest, run.group_size)
    run.log("segments %s -> %s" % (src, run.at(prefix)))
    if not run.dry_run:
        run.runner.ensure_location(run.at(prefix))
    done = _names(run.stores, run.at(prefix)) if run.resume else set()
    name = posixpath.basename(parse(src).key)
    steps = []
    for i, start in enumerate(range(0, expected, range_size)):
        # The last segment runs to the end of the video, whatever its
        # container claimed.
        count = min(range_size, expected - start)
        open_end = start + count == expected
        if "%06d.avi" % i in done:
            continue
        steps.append(
            _Step(
                "%s frames %d-%s" % (name, start, "" if open_end else start + count - 1),
                (entry.size or 0) * count // max(expected, 1),
                ("%06d.avi" % i, start, 0 if open_end else count),
            )
        )
    call = dict(params, op="segment", source=run.runner.source_name(src))

    def segment(step, job):
        out, start, count = step.args
        if frames_to is None:
            run.runner.produce(
                FRAMES_STORLET,
                [src],
                run.at(prefix + out),
                dict(call, start=start, count=count),
                content_type="video/x-msvideo",
            )
            return
        try:
            run.runner.extract(
                FRAMES_STORLET,
                src,
                str(work.with_key("")),
                dict(call, start=start, count=count, segment=prefix + out),
                (count or MAX_RANGE) + 1,
            )
        except Exception:
            # A frame not written: the range is not whole, its segment
            # (if written) must not say it is.
            run.runner.delete([run.at(prefix + out)])
            raise

    stage = run.execute("segments", steps, segment)
    stage.skipped.extend("%s%s" % (prefix, n) for n in sorted(done))
    run.summary.stages.append(stage)
    if not stage.ok or run.dry_run:
        return run.finish()
    return _segments_to_video(run, work, prefix, video_prefix)


def _segments_to_video(run, base, prefix, video_prefix, segment=None, extras=()):
    """The video stages: frames under ``prefix`` into segments, level
    after level, then the video published.  With ``segment`` (the
    parameters of a filter run inside the assembly), level 0 filters the
    source frames, ``extras`` (the model) after each group's frames.
    The first level's inputs are under ``base`` (a parsed URI), the next
    ones' under the work folder."""
    work, summary = run.work, run.summary
    inputs = sorted(_names(run.stores, str(base.with_key(prefix))))
    if inputs and not inputs[0].endswith(".avi"):
        summary.frames = len(inputs)
    level = 0
    # One segment is the video already.
    while not (len(inputs) == 1 and inputs[0].endswith(".avi")):
        # A segment of the first level also reads the previous segment's
        # last frame and the model.
        spare = 1 + len(extras) if segment and level == 0 else 0
        first = str((base if level == 0 else work).with_key(prefix + inputs[0]))
        size = max(2, _fitting(run.runner, first, run.group_size + spare) - spare)
        # A level's folder names its group size: segments made with
        # another grouping are never taken for this one's.
        out_prefix = "%sL%d/" % (video_prefix, level)
        if size != run.group_size:
            out_prefix = "%sL%d-%d/" % (video_prefix, level, size)
        run.log("video level %d: %d inputs -> %d" % (level, len(inputs), -(-len(inputs) // size)))
        stage = _assemble(
            run,
            base if level == 0 else work,
            prefix,
            inputs,
            out_prefix,
            size,
            segment if level == 0 else None,
            extras if level == 0 else (),
        )
        summary.stages.append(stage)
        if not stage.ok:
            return run.finish()
        inputs = ["%06d.avi" % i for i in range(-(-len(inputs) // size))]
        prefix, level = out_prefix, level + 1

    # -- publish ---------------------------------------------------------
    from mlstorlets.client.placement import copy

    run.log("publish %s" % run.video_uri)
    stage = copy(
        str((base if level == 0 else work).with_key(prefix + inputs[0])),
        run.video_uri,
        concurrency=1,
        resume=run.resume,
        stores=run.stores,
        progress=run.progress,
    )
    summary.stages.append(stage)
    summary.dest = run.video_uri
    return run.finish()


def _check_filter(filter_name, params):
    """Refuse an unknown filter or a bad parameter value before any work:
    the filter, the same function the storlet runs, over a small blank
    frame."""
    try:
        apply_filter(np.zeros((32, 32, 3), np.uint8), filter_name, params, "--filter")
    except ObjectError as err:
        raise UsageError(err.reason) from None


def _probe(runner, src):
    metadata, _ = runner.invoke(
        FRAMES_STORLET, [src], {"op": "probe", "source": runner.source_name(src)}
    )
    try:
        return {"frames": int(metadata["video-frames"]), "fps": float(metadata["video-fps"])}
    except (KeyError, ValueError):
        raise StorletFailed(src, "the probe answered no frame count") from None


def _names(stores, prefix):
    """Names (relative to ``prefix``, a URI) of the objects under it; none
    when its container does not exist yet."""
    store, parsed = stores.open(prefix)
    try:
        return {e.name[len(parsed.key) :] for e in store.list(parsed.key)}
    except NotFound:
        return set()


def _fitting(runner, first, group_size):
    """``group_size``, or fewer inputs where the engine's bounds on one
    request would be passed (see :mod:`mlstorlets.client.runners.budget`):
    the inputs of a level are alike (frames of one video through one
    filter or model, segments of one level), so the first one's metadata
    and name stand for all, with room for longer values."""
    limits = runner.limits()
    if limits is None:
        return group_size
    datagram, header = limits
    _, metadata = runner.describe([first])[first]
    per_input = budget.input_cost(metadata) + 32
    path = len(budget.resource_path(*parse_uri(runner.locate(first)))) + 8
    fits = min(
        (datagram - budget.RESERVED) // per_input, (header - 64) // path, protocol.MAX_INPUTS - 2
    )
    return max(2, min(group_size, fits))


def _assemble(run, base, prefix, inputs, out_prefix, group_size, segment=None, extras=()):
    """One level of assembly: ``frames_to_video.py`` over each group of
    ``inputs`` (names under ``prefix``) into ``out_prefix`` ``%06d.avi``.
    With ``segment``, the frames are filtered on the way in, each group
    primed by the previous group's last frame, ``extras`` read last."""
    runner = run.runner
    done = _names(run.stores, run.at(out_prefix)) if run.resume else set()
    chunks = groups(inputs, group_size)
    steps = [
        _Step(
            "%s%06d.avi" % (out_prefix, i),
            len(group),
            # The previous group's last frame primes a filtered segment.
            (chunks[i - 1][-1:] if segment and i else []) + group,
        )
        for i, group in enumerate(chunks)
        if "%06d.avi" % i not in done
    ]
    params = dict(segment or {}, fps="%.6g" % run.summary.fps, quality=run.quality)

    def work_on(step, job):
        uris = [str(base.with_key(prefix + n)) for n in step.args]
        call = dict(params, source=runner.source_name(uris[0]))
        if segment:
            call["context"] = len(step.args) - step.size
        runner.produce(
            VIDEO_STORLET,
            uris + list(extras),
            run.at(step.label),
            call,
            content_type="video/x-msvideo",
        )

    stage = run.execute("%s (%s)" % (VIDEO_STORLET, out_prefix.rstrip("/")), steps, work_on)
    stage.skipped.extend("%s%s" % (out_prefix, n) for n in sorted(done))
    return stage
