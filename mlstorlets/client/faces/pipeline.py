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
not only by Swift's 8 KB header: see :mod:`mlstorlets.client.faces.plan`.
"""

import dataclasses
import functools
import mimetypes
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from mlstorlets.client.batch import list_sources
from mlstorlets.client.faces import plan
from mlstorlets.client.local_storlet import InputFile, StorletFailed
from mlstorlets.client.placement import run_anywhere
from mlstorlets.client.runners import runner_for, stores_for
from mlstorlets.client.swift import SwiftError
from mlstorlets.client.uri import format_uri, parse, parse_uri
from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces import shards as train_steps
from mlstorlets.sandbox.faces.shards import job_body
from mlstorlets.sandbox.inputs import metadata_value
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
#: objects its requests run on), in the model's container:
#: ``<SHARD_PREFIX><model object>/<run>/``.  Under the project's internal
#: prefix, which the batch runner's listings leave out.
SHARD_PREFIX = INTERNAL_PREFIX + "/shards/"

_META = protocol.OBJECT_META.lower()
# Metadata a shard carries (it inherits none from its job), counted
# generously; and what the job object a request runs on costs.
_SHARD_COST = plan.input_cost({"Shard-Rows": "9" * 9})
_JOB_COST = plan.input_cost({})


# -- extract ---------------------------------------------------------------
#: What ``extract_face`` writes, whatever the photo's type.
CROP_TYPE = (".png", "image/png")


def extract(conn, src, dest, size=150, margin=0.25, label_key="Name", **batch_options):
    """Crop the largest face of every photo under ``src`` into ``dest``.

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
        Metadata key holding the person's name, copied to the crop.
    **batch_options
        ``concurrency``, ``resume``, ``progress``, ``dry_run``: see
        ``run_anywhere``.

    Returns
    -------
    summary : mlstorlets.client.batch.BatchSummary
    """
    params = {"size": size, "margin": margin, "label_key": label_key}
    return run_anywhere(
        EXTRACT,
        src,
        dest,
        params=params,
        stores=stores_for(conn),
        output_type=CROP_TYPE,
        **batch_options,
    )


# -- recognize -------------------------------------------------------------
@dataclasses.dataclass
class Recognitions:
    """Tags read back by :func:`recognize` without an output.

    ``results`` maps each source (``container/object`` in the cluster, its
    URI elsewhere) to its ``Face-*`` metadata (keys lower case, without the
    ``Face-`` prefix: ``name``, ``confidence``, ``box``, ``frames``,
    ``damaged``); ``failed`` lists ``(source, reason)``; a dry run lists in
    ``planned`` the objects it would tag.
    """

    results: dict = dataclasses.field(default_factory=dict)
    failed: list = dataclasses.field(default_factory=list)
    planned: list = dataclasses.field(default_factory=list)


def recognize(
    conn,
    model,
    src,
    dest=None,
    threshold=None,
    kind=None,
    concurrency=4,
    dry_run=False,
    **batch_options,
):
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
    **batch_options
        ``resume``, ``progress``: see ``run_anywhere``.

    Returns
    -------
    mlstorlets.client.batch.BatchSummary, or Recognitions when ``dest`` is None
    """
    runner = runner_for(src, dest, model, stores=stores_for(conn))
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
        except (ObjectError, StorletFailed) as err:
            return uri, None, getattr(err, "reason", None) or str(err)
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


@dataclasses.dataclass
class _Input:
    container: str
    name: str
    cost: int
    faces: int

    @property
    def path(self):
        """Quoted, as the engine receives it: what a request's budget counts."""
        return plan.resource_path(self.container, self.name)

    @property
    def resource(self):
        return "/%s/%s" % (self.container, self.name)

    @property
    def label(self):
        return "%s/%s" % (self.container, self.name)


def train(
    conn,
    src,
    model,
    label_key="Name",
    C=1.0,
    seed=0,
    shard_size=None,
    max_shard_faces=5000,
    keep_shards=False,
    concurrency=4,
    budget=None,
    dry_run=False,
):
    """Train a face model on the labelled crops under ``src``, in the cluster.

    1. The client reads each crop's metadata (HEAD): the labels, checked
       before any storlet runs, and the metadata size, which bounds how many
       crops one request can read (:mod:`mlstorlets.client.faces.plan`).
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
        :func:`mlstorlets.client.faces.plan.plan_groups`.  By default, what
        the cluster's /info says its datagrams hold, less
        :data:`~mlstorlets.client.faces.plan.RESERVED`.
    dry_run : bool, default=False
        Read and check the crops' labels and plan the shards; run nothing,
        write nothing (the report's ``seconds`` is the planning time and
        ``metadata`` is empty).

    Returns
    -------
    report : TrainReport

    Raises
    ------
    ObjectError
        Naming the crop or shard a storlet refused, a crop without label,
        or ``src`` when it holds faces of fewer than two people.
    ValueError
        If there are no crops, or too many for one fit request with this
        ``max_shard_faces``.
    """
    started = time.monotonic()
    stores = stores_for(conn)
    src_uri, model_uri = parse(src), parse(model)
    if model_uri.is_prefix:
        raise ValueError(f"{model} must name an object")
    runner = runner_for(src, model, stores=stores)
    if runner.placement == "client":
        # The training storlet's own steps, run here over the crops read
        # into memory; in the cluster, sharded requests next to the crops.
        return _train_on_client(
            stores, src_uri, model_uri, label_key, C, seed, concurrency, dry_run, started
        )
    swift = runner.swift
    limits = swift.limits()
    if budget is None:
        budget = limits.datagram - plan.RESERVED
    src = runner.locate(src)
    model_container, model_name = parse_uri(runner.locate(model))
    swift.check_storlet(
        TRAIN,
        {"step": "fit", "label_key": label_key, "C": C, "seed": seed},
    )
    src_container, _, entries = list_sources(swift, src)
    entries = [e for e in entries if (src_container, e["name"]) != (model_container, model_name)]
    if not entries:
        raise ValueError(f"no face crops under {src}")

    def crop_metadata(entry):
        return _user_metadata(
            swift.call(
                "%s/%s" % (src_container, entry["name"]),
                "head_object",
                src_container,
                entry["name"],
            )
        )

    metadata = swift.parallel(crop_metadata, entries, concurrency)
    labels = []
    for entry, meta in zip(entries, metadata):
        label = metadata_value(meta, label_key)
        if not label:
            raise ObjectError(
                format_uri(src_container, entry["name"]),
                f"no label: the crop has no X-Object-Meta-{label_key}",
            )
        labels.append(label)
    if len(set(labels)) < 2:
        raise ObjectError(
            src,
            "training needs faces of at least two people, found only %r (%d crop(s))"
            % (labels[0], len(labels)),
        )
    crops = [
        _Input(src_container, entries[i]["name"], plan.input_cost(metadata[i]), 1)
        for i in plan.mix_by_label(labels, seed)
    ]

    run = "%s/%s-%s/" % (model_name, time.strftime("%Y%m%dT%H%M%S"), uuid.uuid4().hex[:8])
    prefix = SHARD_PREFIX + run
    written = []
    common = {}
    if dry_run:
        groups = plan.plan_groups(
            [c.cost for c in crops],
            [c.path for c in crops],
            max_weight=shard_size,
            budget=budget - _JOB_COST,
            header_limit=limits.header,
        )
        return TrainReport(
            model=model,
            faces=len(crops),
            classes=sorted(set(labels)),
            shards=len(groups),
            merges=0,
            fit_inputs=0,
            shard_prefix=format_uri(model_container, prefix),
            metadata={},
            seconds=time.monotonic() - started,
        )
    swift.ensure_container(model_container)
    try:
        groups = plan.plan_groups(
            [c.cost for c in crops],
            [c.path for c in crops],
            max_weight=shard_size,
            budget=budget - _JOB_COST,
            header_limit=limits.header,
        )
        shards = _run_step(
            swift,
            "pack",
            crops,
            groups,
            model_container,
            prefix + "L0-",
            dict(common, label_key=label_key),
            concurrency,
            written,
        )
        n_packed, merges, level = len(shards), 0, 0
        while len(_plan(shards, budget, limits.header)) > 1:
            level += 1
            groups = _plan(shards, budget, limits.header, max_shard_faces)
            if len(groups) == len(shards):
                raise ValueError(
                    f"{len(crops)} faces need more than one fit request with max_shard_faces="
                    f"{max_shard_faces}; raise it"
                )
            merged = _run_step(
                swift,
                "merge",
                shards,
                [g for g in groups if len(g) > 1],
                model_container,
                prefix + "L%d-" % level,
                common,
                concurrency,
                written,
            )
            # A group of one shard needs no request: the shard goes up as is.
            merged = iter(merged)
            shards = [next(merged) if len(g) > 1 else shards[g[0]] for g in groups]
            merges += sum(len(g) > 1 for g in groups)
        params = dict(common, step="fit", C=C, seed=seed)
        _invoke(
            swift,
            shards,
            model_container,
            model_name,
            params,
            prefix + "fit.json",
            written,
            {"X-Object-Meta-Training-Data": src[:256]},
        )
        headers = swift.call(
            format_uri(model_container, model_name), "head_object", model_container, model_name
        )
    finally:
        if not keep_shards:
            _delete(swift, model_container, written, concurrency)
    model_meta = _user_metadata(headers)
    return TrainReport(
        model=model,
        faces=len(crops),
        classes=sorted(set(labels)),
        shards=n_packed,
        merges=merges,
        fit_inputs=len(shards),
        shard_prefix=format_uri(model_container, prefix),
        metadata=model_meta,
        seconds=time.monotonic() - started,
    )


def _train_on_client(stores, src, model, label_key, C, seed, concurrency, dry_run, started):
    """:func:`train` for crops or a model outside the cluster: the training
    storlet's own steps (``pack`` then ``fit``), run here."""
    store, _ = stores.open(src)
    names = [e.name for e in store.list(src.key)] if src.is_prefix else [src.key]
    names = [n for n in names if (store.uri(n) != str(model))]
    if not names:
        raise ValueError(f"no face crops under {src}")
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        crops = list(pool.map(store.get, names))
    inputs, labels = [], []
    for name, (body, metadata) in zip(names, crops):
        label = metadata_value(metadata, label_key)
        if not label:
            raise ObjectError(store.uri(name), f"no label: the crop has no {label_key} metadata")
        inputs.append(InputFile(body, metadata))
        labels.append(label)
    if len(set(labels)) < 2:
        raise ObjectError(
            str(src),
            "training needs faces of at least two people, found only %r (%d crop(s))"
            % (labels[0], len(labels)),
        )
    report = TrainReport(
        model=str(model),
        faces=len(names),
        classes=sorted(set(labels)),
        shards=1,
        merges=0,
        fit_inputs=1,
        shard_prefix="",
        metadata={},
        seconds=0.0,
    )
    if not dry_run:
        _, shard = train_steps.pack(inputs, [store.uri(n) for n in names], {"label_key": label_key})
        metadata, body = train_steps.fit(
            [InputFile(shard, {})], [str(src)], {"C": C, "seed": seed, "source": str(src)}
        )
        metadata = dict(metadata, **{"Training-Data": str(src)[:256]})
        model_store, _ = stores.open(model)
        model_store.put(model.key, body, metadata, {"Content-Type": "application/octet-stream"})
        report.metadata = {k.title(): v for k, v in metadata.items()}
    report.seconds = time.monotonic() - started
    return report


def _plan(shards, budget, header_limit, max_faces=None):
    return plan.plan_groups(
        [s.cost for s in shards],
        [s.path for s in shards],
        weights=[s.faces for s in shards],
        max_weight=max_faces,
        budget=budget - _JOB_COST,
        header_limit=header_limit,
    )


def _run_step(swift, step, inputs, groups, container, prefix, params, concurrency, written):
    """Run ``step`` once a group, writing ``<prefix>NNNNN`` shards."""
    names = ["%s%05d" % (prefix, i) for i in range(len(groups))]

    def one(job):
        group, name = job
        written.append(name)
        _invoke(
            swift,
            [inputs[i] for i in group],
            container,
            name,
            dict(params, step=step),
            name + ".json",
            written,
        )
        return _Input(container, name, _SHARD_COST, sum(inputs[i].faces for i in group))

    return swift.parallel(one, list(zip(groups, names)), concurrency)


def _invoke(swift, inputs, container, name, params, job, written, extra_headers=None):
    """Write ``container/name`` as ``train.py``'s output over ``inputs``.

    The request runs on the job object ``container/job``, written first,
    which names the inputs for the storlet's messages.  The job's name goes
    to ``written`` before it is written, so that removing ``written`` after
    a failure leaves nothing behind.
    """
    written.append(job)
    label = "%s/%s" % (container, job)
    swift.call(
        label,
        "put_object",
        container,
        job,
        job_body([i.label for i in inputs]),
        content_type="application/json",
    )
    try:
        swift.storlet_copy(
            container,
            job,
            container,
            name,
            TRAIN,
            dict(params, source=label),
            [i.resource for i in inputs],
            headers=extra_headers,
            content_type="application/octet-stream",
        )
    except SwiftError as err:
        raise _storlet_error(err, label, inputs) from None


def _storlet_error(err, job, inputs):
    """An ObjectError naming the input a storlet refused (a crop, a shard:
    the protocol's :data:`~mlstorlets.sandbox.protocol.OBJECT_HEADER`), or
    the job; a RuntimeError for any other failure."""
    if err.kind != "refused":
        return RuntimeError("%s over %s: %s" % (TRAIN, job, err.reason))
    names = [i.label for i in inputs] + [job]
    return ObjectError(err.object if err.object in names else job, err.reason)


def _delete(swift, container, names, concurrency):
    def remove(name):
        try:
            swift.call("%s/%s" % (container, name), "delete_object", container, name)
        except SwiftError as err:
            if err.status != 404:  # never written: its request failed
                raise

    swift.parallel(remove, names, concurrency)


# -- helpers ---------------------------------------------------------------
def _user_metadata(headers):
    """User metadata of a HEAD response, keys as the engine sees them."""
    return {
        "-".join(p.capitalize() for p in k[len(_META) :].split("-")): v
        for k, v in headers.items()
        if k.lower().startswith(_META)
    }
