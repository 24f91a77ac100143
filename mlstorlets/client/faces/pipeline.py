"""The face pipeline in storage: extract faces, train, recognize.

Client functions over a swiftclient ``Connection`` (or the client's Swift
gateway, :class:`mlstorlets.client.swift.Swift`); the data stays in the
cluster and only requests, names and metadata pass through the client.

Where the work runs:

* :func:`extract` runs ``extract_face.py`` once per photo with copy
  semantics; each invocation reads one object, so it runs on an object
  server holding the photo.
* :func:`train` runs ``train.py`` over many crops per request.  Reading
  several objects makes the engine run a storlet on the proxy, which fetches
  the objects from the object servers: packing crops into shards, merging
  shards, and fitting the model all run on the proxy.
* :func:`recognize` runs ``recognize_face.py`` with the model as an extra
  resource, so on the proxy too.

How many objects one request can read is bounded by the storlets engine,
not only by Swift's 8 KB header: see :mod:`mlstorlets.client.runners.budget`.
"""

import dataclasses
import functools
import math
import mimetypes
import posixpath
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from mlstorlets.client import batch
from mlstorlets.client.errors import (
    NotFound,
    ObjectFailed,
    UsageError,
    removed_after,
)
from mlstorlets.client.faces.labels import label_rule, mix_by_label
from mlstorlets.client.placement import run_anywhere
from mlstorlets.client.runners import ConnectionLike, runner_for, stores_for
from mlstorlets.client.runners import budget as plan
from mlstorlets.client.uri import parse, parse_uri
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces.shards import job_body
from mlstorlets.sandbox.protocol import INTERNAL_PREFIX

__all__ = [
    "CROP_TYPE",
    "EXTRACT",
    "RECOGNIZE",
    "TRAIN",
    "SHARD_PREFIX",
    "TrainReport",
    "Recognitions",
    "extract",
    "train",
    "recognize",
]

EXTRACT = "extract_face.py"
RECOGNIZE = "recognize_face.py"
TRAIN = "train.py"

#: Where :func:`train` writes its intermediate objects (shards, and the job
#: objects its calls run on), beside the model:
#: ``<model's folder>/<SHARD_PREFIX><model's name>/<run>/``.  Under the
#: project's internal prefix, which every listing leaves out.
SHARD_PREFIX = INTERNAL_PREFIX + "/shards/"

# Metadata a shard carries (it inherits none from its job), counted
# generously; and what the job object a request runs on costs.
_SHARD_COST = plan.input_cost({"Shard-Rows": "9" * 9})
_JOB_COST = plan.input_cost({})


# -- extract ---------------------------------------------------------------
#: What ``extract_face`` writes, whatever the photo's type.
CROP_TYPE = (".png", "image/png")


def extract(
    conn: ConnectionLike,
    src: str,
    dest: str,
    size: int = 150,
    margin: float = 0.25,
    label_key: str = "Name",
    faces: str = "largest",
    min_face: int | None = None,
    **batch_options,
) -> batch.BatchSummary:
    """Crop the largest face, or every face, of every photo under ``src``
    into ``dest``.

    Runs ``extract_face.py`` through
    :func:`mlstorlets.client.placement.run_anywhere`: on the object servers,
    one photo per invocation, when ``src`` and ``dest`` are in the cluster
    (``swift://``, or ``s3://`` served by it); otherwise the same storlet
    code on the client (``file://``, ``dropbox://``, another S3).  Each
    photo's name is passed as ``source``, outputs already made from the
    same photo are skipped, and failures are reported per photo (no face,
    not an image...).  Crops are PNG: ``train/a.jpeg`` gives ``a.png``,
    typed ``image/png``.

    Parameters
    ----------
    conn : Stores, swiftclient.client.Connection or None
        See :func:`mlstorlets.client.runners.stores_for`.
    src, dest : str
        URIs of the photos and of the crops (prefixes end with ``/``).
    size, margin : int, float
        Side of the aligned crop and room around the face; the embedding
        each crop carries does not depend on them.
    label_key : str, default="Name"
        Metadata key holding the person's name, copied to the crop (of
        the largest face only, with ``faces='all'``).
    faces : {'largest', 'all'}, default='largest'
        ``'all'``: a crop per face at least ``min_face`` pixels wide, made
        in one request per photo whose tar the proxy extracts (Swift's bulk
        extraction): ``a.png`` for the largest face, ``a-face1.png``,
        ``a-face2.png``... for the others by size, each with
        ``Face-Index`` and ``Face-Count``.  A rerun skips a photo whose
        ``a.png`` was made from the same photo (it is written last).
    min_face : int, optional
        Narrowest face cropped with ``faces='all'``, in pixels (default
        :data:`mlstorlets.sandbox.faces.people.MIN_FACE`).
    **batch_options
        ``concurrency``, ``resume``, ``progress``, ``dry_run``,
        ``placement``: see ``run_anywhere``.

    Returns
    -------
    summary : mlstorlets.client.batch.BatchSummary
    """
    params = {"size": size, "margin": margin, "label_key": label_key}
    if faces not in ("largest", "all"):
        raise UsageError("faces must be largest or all, got %r" % faces)
    if faces == "all":
        if min_face is not None:
            params["min_face"] = min_face
        return _extract_every_face(conn, src, dest, params, **batch_options)
    return run_anywhere(
        EXTRACT,
        src,
        dest,
        params=params,
        stores=stores_for(conn),
        output_type=CROP_TYPE,
        **batch_options,
    )


def _extract_every_face(
    conn,
    src,
    dest,
    params,
    concurrency=4,
    resume=True,
    progress=None,
    dry_run=False,
    placement="auto",
):
    """:func:`extract` with ``faces='all'``: a request per photo, its tar
    of crops extracted under the photo's place in ``dest``."""
    from mlstorlets.client.runners.client import existing, tasks_of
    from mlstorlets.sandbox.faces.tasks import MAX_FACES

    stores = stores_for(conn)
    runner = runner_for(src, dest, stores=stores, placement=placement)
    params = dict(params, faces="all")
    runner.check_storlet(EXTRACT, dict(params, stem="x", source_etag="x"))
    src_uri, dest_uri = parse(runner.locate(src)), parse(runner.locate(dest))
    if not dest_uri.is_prefix:
        raise UsageError("%s must be a prefix (end it with /): a photo gives many crops" % dest)
    src_store, _ = stores.open(src_uri)
    tasks = tasks_of(src_store, src_uri, dest_uri, CROP_TYPE[0])
    if not tasks:
        raise NotFound(src, "no photos under this prefix")
    dest_store, _ = stores.open(dest_uri)
    made = existing(dest_store, dest_uri) if resume else {}

    def up_to_date(task):
        # The largest face's crop is extracted last: it stands for all.
        if task.dest_key not in made:
            return False
        entry = dest_store.head(task.dest_key)
        metadata = {k.lower(): v for k, v in ((entry and entry.metadata) or {}).items()}
        return metadata.get("source-etag") == task.source.etag

    def work(task, job):
        folder, crop = posixpath.split(task.dest_key)
        runner.extract(
            EXTRACT,
            task.label,
            str(dest_uri.with_key(folder + "/" if folder else "")),
            dict(
                params,
                stem=crop[: -len(CROP_TYPE[0])],
                source=runner.source_name(task.label),
                source_etag=task.source.etag or "",
            ),
            MAX_FACES,
        )

    if not dry_run:
        runner.ensure_location(str(dest_uri))
    return batch.execute(
        batch.BatchSummary(EXTRACT, placement=runner.placement),
        tasks,
        work,
        concurrency,
        progress,
        up_to_date=up_to_date if resume else None,
        dry_run=dry_run,
    )


# -- recognize -------------------------------------------------------------
@dataclasses.dataclass
class Recognitions:
    """Tags read back by :func:`recognize` without an output.

    ``results`` maps each source's URI (wherever it ran) to its ``Face-*``
    metadata (keys lower case, without the
    ``Face-`` prefix: ``name``, ``confidence``, ``box``, ``frames``,
    ``damaged``); ``failed`` lists ``(source, reason)``; a dry run lists in
    ``planned`` the objects it would tag.
    """

    results: dict = dataclasses.field(default_factory=dict)
    failed: list = dataclasses.field(default_factory=list)
    planned: list = dataclasses.field(default_factory=list)


def recognize(
    conn: ConnectionLike,
    model: str,
    src: str,
    dest: str | None = None,
    threshold: float | None = None,
    kind: str | None = None,
    concurrency: int = 4,
    dry_run: bool = False,
    placement: str = "auto",
    **batch_options,
) -> Recognitions | batch.BatchSummary:
    """Name the people in the photos and videos under ``src``.

    Runs ``recognize_face.py`` on the proxy (the model is an extra
    resource) when ``src`` (and ``dest``) are in the cluster, on the client
    otherwise, with the same code.

    Parameters
    ----------
    conn : Stores, swiftclient.client.Connection or None
        See :func:`mlstorlets.client.runners.stores_for`.
    model : str
        URI of a model made by :func:`train`: in the cluster, unless
        ``src`` is not and there is no ``dest``.
    src : str
        URI of a prefix (or one object).
    dest : str, optional
        Where to write the outputs (photos unchanged and tagged in their
        metadata, annotated videos), through the batch runner.  Without it
        nothing is written, no annotated video is built, and the tags are
        returned.
    threshold : float, optional
        A face farther than this from every training face is ``unknown``;
        by default the threshold the model calibrated on its training data.
    kind : {'image', 'video'}, optional
        Force the kind of every object; by default each is sniffed.
    concurrency : int, default=4
    dry_run : bool, default=False
        Say what would be recognized; run nothing.
    placement : {'auto', 'client', 'cluster'}, default='auto'
        Where to run: see :func:`mlstorlets.client.runners.runner_for`.
    **batch_options
        ``resume``, ``progress``: see ``run_anywhere``.

    Returns
    -------
    mlstorlets.client.batch.BatchSummary, or Recognitions when ``dest`` is None
    """
    runner = runner_for(src, dest, model, stores=stores_for(conn), placement=placement)
    # The engine feeds a missing extra resource to the storlet as the 404
    # page; asking first gives the user the real reason.
    runner.require(model)
    params = {"model": runner.source_name(model)}
    if threshold is not None:
        params["threshold"] = threshold
    if kind:
        params["kind"] = kind
    if dest is not None:
        return runner.run_storlet(
            RECOGNIZE,
            src,
            dest,
            params,
            concurrency=concurrency,
            extras=[model],
            dry_run=dry_run,
            output_type=functools.partial(_recognized_type, kind),
            **batch_options,
        )
    # Without a destination only the tags are wanted: the storlet builds no
    # annotated video and sends no body.
    params["output"] = "tags"
    return _tags(runner, src, params, [model], concurrency, dry_run)


def _recognized_type(kind, name):
    """``(suffix, content type)`` of the output recognized from ``name``.

    An annotated video is Motion JPEG in AVI, whatever its source; a tagged
    photo stays what it was.  Without ``kind`` the storlet sniffs the
    content, and the name's type says which it will be (a video of an
    unknown extension keeps its name).
    """
    guessed = mimetypes.guess_type(name)[0] or ""
    if kind == "video" or (kind is None and guessed.startswith("video/")):
        return (".avi", "video/x-msvideo")
    return None


def _tags(runner, src, params, extras, concurrency, dry_run):
    """The tags ``recognize_face.py`` finds in each object of ``src``."""
    runner.check_storlet(RECOGNIZE, params)
    uris = runner.list_objects(src)
    if dry_run:
        return Recognitions(planned=sorted(uris))

    def tag(uri):
        try:
            metadata, _ = runner.invoke(
                RECOGNIZE, [uri], dict(params, source=runner.source_name(uri)), extras=extras
            )
        except ObjectError as err:
            return uri, None, err.reason
        tags = {k[len("face-") :]: v for k, v in metadata.items() if k.startswith("face-")}
        return uri, tags, None

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return _collect(pool.map(tag, uris))


def _collect(outcomes):
    found = Recognitions()
    for source, tags, reason in outcomes:
        if reason is None:
            found.results[source] = tags
        else:
            found.failed.append((source, reason))
    found.failed.sort()
    return found


# -- train -----------------------------------------------------------------
@dataclasses.dataclass
class TrainReport:
    """What :func:`train` did.

    Attributes
    ----------
    model : str
        The model's URI.
    faces : int
        Face crops trained on.
    classes : list of str
        The people the model names.
    shards : int
        Shards packed from the crops (one request each).
    merges : int
        Merge requests (when there were more shards than a request reads).
    fit_inputs : int
        Shards read by the final fit.
    shard_prefix : str
        Where the shards were written (removed unless kept).
    skipped : list of str
        Crops left out: faces other than their photo's largest (its label
        names its subject).
    metadata : dict
        The model object's ``X-Object-Meta-*`` headers.
    seconds : float
    """

    model: str
    faces: int
    classes: list
    shards: int
    merges: int
    fit_inputs: int
    shard_prefix: str
    metadata: dict
    seconds: float
    skipped: list = dataclasses.field(default_factory=list)


def train(
    conn: ConnectionLike,
    src: str,
    model: str,
    label_key: str = "Name",
    labels: str | None = None,
    C: float = 1.0,
    seed: int = 0,
    shard_size: int | None = None,
    max_shard_faces: int = 5000,
    keep_shards: bool = False,
    concurrency: int = 4,
    budget: int | None = None,
    dry_run: bool = False,
    placement: str = "auto",
) -> TrainReport:
    """Train a face model on the labelled crops under ``src``.

    One algorithm, run by the runner :func:`~mlstorlets.client.runners.runner_for`
    chooses: in the cluster, each step a storlet request next to its
    inputs; for other stores, the same storlet's steps on the client, where
    no datagram bounds a call (one pack of all the crops, then the fit).

    1. The client reads each crop's metadata (HEAD): the labels, checked
       before any storlet runs, and the metadata size, which bounds how many
       crops one request can read (:mod:`mlstorlets.client.runners.budget`).
    2. Crops are put in an order that mixes people, and packed, a request a
       group, into shard objects of feature rows (``train.py``,
       ``step=pack``, on the proxy), ``concurrency`` requests at a time.
    3. While there are more shards than one request can read, groups of
       them are merged into larger shards (``step=merge``), each holding at
       most ``max_shard_faces`` faces.
    4. One request fits the model over all the shards (``step=fit``, on the
       proxy): a linear SVM over the embeddings and the open-set threshold
       calibrated on them, and writes ``model``.

    Parameters
    ----------
    conn : swiftclient.client.Connection
    src : str
        ``swift://container/prefix/`` of face crops from :func:`extract`.
    model : str
        ``swift://container/object`` to write the model (``.npz``, no
        pickle) to.  Its metadata: ``Classes``, ``Class-Count``, ``Samples``,
        ``Threshold``, ``Descriptor``, ``Shards``.
    label_key : str, default="Name"
        Metadata key holding each crop's person.
    labels : str, optional
        Where each crop's person comes from instead: ``'folder'``,
        ``'name:REGEX'`` or ``'metadata:KEY'``
        (:mod:`mlstorlets.client.faces.labels`); by default its
        ``label_key`` metadata.
    C, seed
        See :func:`mlstorlets.sandbox.faces.model.train`.
    shard_size : int, optional
        Most crops a packed shard holds; by default as many as one request
        can read.
    max_shard_faces : int, default=5000
        Most faces a merged shard holds (512 bytes a face).
    keep_shards : bool, default=False
        Keep the shards (under :data:`SHARD_PREFIX`) instead of removing
        them, e.g. to inspect them.
    concurrency : int, default=4
        Pack and merge requests in flight.
    budget : int, optional
        Datagram bytes a request's inputs may use; see
        :func:`mlstorlets.client.runners.budget.plan_groups`.  By default, what
        the cluster's /info says its datagrams hold, less
        :data:`~mlstorlets.client.runners.budget.RESERVED`.
    dry_run : bool, default=False
        Read and check the crops' labels and plan the shards; run nothing,
        write nothing (the report's ``seconds`` is the planning time and
        ``metadata`` is empty).
    placement : {'auto', 'client', 'cluster'}, default='auto'
        Where to run: see :func:`mlstorlets.client.runners.runner_for`.

    Returns
    -------
    report : TrainReport

    Raises
    ------
    mlstorlets.client.errors.Refused
        Naming the crop or shard the storlet refused.
    mlstorlets.client.errors.ObjectFailed
        Naming a crop without label, or ``src`` when it holds faces of
        fewer than two people.
    mlstorlets.client.errors.NotFound
        If there are no crops.
    mlstorlets.client.errors.UsageError
        If there are too many for one fit request with this
        ``max_shard_faces``.
    """
    started = time.monotonic()
    if parse(model).is_prefix:
        raise UsageError(f"{model} must name an object")
    runner = runner_for(src, model, stores=stores_for(conn), placement=placement)
    runner.check_storlet(TRAIN, {"step": "fit", "label_key": label_key, "C": C, "seed": seed})
    model = runner.locate(model)
    limits = runner.limits()
    if limits is None:  # a call here reads from memory: no bound
        budget, header_limit = math.inf, math.inf
    else:
        budget = limits[0] - plan.RESERVED if budget is None else budget
        header_limit = limits[1]
    uris = [u for u in runner.list_objects(src) if u != model]
    if not uris:
        raise NotFound(str(src), "no face crops under this prefix")
    described = runner.describe(uris, concurrency)
    # A photo's label names its subject, the largest face: the crops of the
    # people around it (extract(faces='all')) are left out, and reported.
    others = [u for u in uris if described[u][1].get("face-index", "0") != "0"]
    uris = [u for u in uris if u not in set(others)]
    if not uris:
        raise NotFound(str(src), "no crop of a photo's largest face under this prefix")
    rule, found = label_rule(labels, label_key), []
    for uri in uris:
        label = rule(uri, described[uri][1])
        if not label:
            raise ObjectFailed(
                uri,
                f"no label: the crop has no {label_key} metadata"
                if labels is None
                else f"no label: the rule {labels!r} gives none",
            )
        found.append(label)
    labels = found
    if len(set(labels)) < 2:
        raise ObjectFailed(
            str(src),
            "training needs faces of at least two people, found only %r (%d crop(s))"
            % (labels[0], len(labels)),
        )
    crops = [
        _Input(runner, uris[i], plan.input_cost(described[uris[i]][1]), 1, labels[i])
        for i in mix_by_label(labels, seed)
    ]
    steps = _Steps(runner, _shard_prefix(parse(model)), concurrency, budget, header_limit)
    report = TrainReport(
        model=model,
        faces=len(crops),
        classes=sorted(set(labels)),
        shards=0,
        merges=0,
        fit_inputs=0,
        shard_prefix=str(steps.prefix),
        metadata={},
        seconds=0.0,
        skipped=others,
    )
    groups = steps.plan(crops, max_weight=shard_size)
    if dry_run:
        report.shards = len(groups)
        report.seconds = time.monotonic() - started
        return report
    runner.ensure_location(model)
    with removed_after(
        (lambda: None) if keep_shards else steps.remove, "the shards under %s" % steps.prefix
    ):
        shards = steps.run("pack", crops, groups, "L0-", {"label_key": label_key})
        report.shards, level = len(shards), 0
        while len(steps.plan(shards)) > 1:
            level += 1
            groups = steps.plan(shards, max_shard_faces)
            if len(groups) == len(shards):
                raise UsageError(
                    f"{len(crops)} faces need more than one fit request with max_shard_faces="
                    f"{max_shard_faces}; raise it"
                )
            pairs = [g for g in groups if len(g) > 1]
            merged = iter(steps.run("merge", shards, pairs, "L%d-" % level))
            # A group of one shard needs no request: the shard goes up as is.
            shards = [next(merged) if len(g) > 1 else shards[g[0]] for g in groups]
            report.merges += sum(len(g) > 1 for g in groups)
        steps.call(
            "fit",
            shards,
            model,
            {"C": C, "seed": seed},
            {"Training-Data": str(src)[:256]},
        )
        report.fit_inputs = len(shards)
    report.metadata = {
        "-".join(p.capitalize() for p in k.split("-")): v
        for k, v in runner.describe([model])[model][1].items()
    }
    report.seconds = time.monotonic() - started
    return report


@dataclasses.dataclass
class _Input:
    """A crop or a shard: what a training call reads."""

    runner: object
    uri: str
    cost: int
    faces: int
    label: str | None = None  # a crop's person; a shard has its own

    @property
    def path(self):
        """Quoted, as the engine receives it: what a request's header
        counts (where there is one)."""
        return plan.resource_path(*parse_uri(self.uri)) if self.uri.startswith("swift://") else ""

    @property
    def name(self):
        """What the storlet calls it, in the job and in its refusals."""
        return self.runner.source_name(self.uri)


def _shard_prefix(model):
    """Where the training of ``model`` (a URI) writes its shards: beside it,
    under the project's internal prefix, a directory a run."""
    folder, _, name = model.key.rpartition("/")
    run = "%s-%s/" % (time.strftime("%Y%m%dT%H%M%S"), uuid.uuid4().hex[:8])
    return model.with_key((folder + "/" if folder else "") + SHARD_PREFIX + name + "/" + run)


class _Steps:
    """The training storlet's steps, each a call of the runner whose
    output is a shard (or the model): one algorithm, run in the cluster
    next to the crops or on the client."""

    def __init__(self, runner, prefix, concurrency, budget, header_limit):
        self.runner = runner
        self.prefix = prefix
        self.concurrency = concurrency
        self.budget = budget
        self.header_limit = header_limit
        self.written = []
        self._lock = threading.Lock()

    def plan(self, inputs, max_weight=None):
        """Groups of ``inputs`` one call each can read."""
        return plan.plan_groups(
            [i.cost for i in inputs],
            [i.path for i in inputs],
            weights=[i.faces for i in inputs],
            max_weight=max_weight,
            budget=self.budget - _JOB_COST,
            header_limit=self.header_limit,
        )

    def run(self, step, inputs, groups, level, params=None):
        """``step`` once a group, writing ``<prefix><level>NNNNN`` shards."""

        def one(job):
            index, group = job
            shard = self.prefix.with_key(self.prefix.key + "%s%05d" % (level, index))
            self.call(step, [inputs[i] for i in group], str(shard), params or {})
            return _Input(self.runner, str(shard), _SHARD_COST, sum(inputs[i].faces for i in group))

        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(one, enumerate(groups)))

    def call(self, step, inputs, dest, params, metadata=None):
        """Write ``dest`` as ``step`` over ``inputs``.

        The call runs on a job object, written first under :attr:`prefix`,
        that names the inputs for the storlet's messages.  The job and a
        shard go to :attr:`written` before they are written, so that
        removing it leaves nothing behind; the model is not a shard.
        """
        shard = dest.startswith(str(self.prefix))
        job = dest + ".json" if shard else str(self.prefix) + step + ".json"
        with self._lock:
            self.written += [job, dest] if shard else [job]
        labels = [i.label for i in inputs] if step == "pack" else None
        self.runner.put(job, job_body([i.name for i in inputs], labels), "application/json")
        self.runner.produce(
            TRAIN,
            [job] + [i.uri for i in inputs],
            dest,
            dict(params, step=step, source=self.runner.source_name(job)),
            metadata,
            "application/octet-stream",
        )

    def remove(self):
        self.runner.delete(self.written, self.concurrency)
