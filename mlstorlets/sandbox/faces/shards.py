"""What the training storlet computes: shards of embeddings, then a model.

Training over thousands of face crops runs in three kinds of request, all
to the ``train`` storlet, chosen by its parameter ``step`` (see
:mod:`mlstorlets.client.faces.pipeline` for the client that plans them):

``pack``
    Inputs are face crops (PNG, labelled in their metadata, carrying their
    embedding: :mod:`mlstorlets.sandbox.faces.crops`); the output is a shard
    (:func:`~mlstorlets.sandbox.faces.model.pack_shard`) of their embeddings.
    No pixel is decoded.
``merge``
    Inputs are shards; the output is one shard holding all their rows.
    Needed when there are more shards than one request can read.
``fit``
    Inputs are shards; their embeddings (512 bytes a face: 10,000 faces
    are 5 MB) are fitted in memory by a linear SVM, in well under a second
    for thousands of faces, and the open-set threshold calibrated
    (:func:`~mlstorlets.sandbox.faces.model.train`).  The output is the model
    file (``.npz``, no pickle) with its summary as metadata.

Every request runs on a *job object* the client writes: JSON
``{"inputs": ["container/object", ...]}`` naming, in order, the objects
listed in ``X-Storlet-Extra-Resources`` (for ``pack``, optionally
``"labels": [...]``, the person of each crop, which the client took from
their metadata, names or folders).  The storlet thus names the object
at fault in every error, and its output inherits the job's (empty) user
metadata instead of a crop's: the engine copies the metadata of the object
a request runs on to the output, and a model labelled with the first
crop's ``Name`` would mislead.

``pack`` takes ``label_key`` (default ``Name``); ``fit`` takes ``C`` (the
SVM's regularisation, default 1.0) and ``seed`` (0).
"""

import json

import numpy as np

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces.crops import read_embedding
from mlstorlets.sandbox.faces.model import dump_model, load_shard, pack_shard, train
from mlstorlets.sandbox.inputs import input_name, metadata_value, read_input
from mlstorlets.sandbox.invocation import float_param, int_param

__all__ = ["STEPS", "job_body", "run", "pack", "merge", "fit"]

STEPS = ("pack", "merge", "fit")

#: Largest job object: a few thousand names.
MAX_JOB_BYTES = 4 * 2**20

#: Longest person's name a job may give.
MAX_LABEL_CHARS = 256
#: Largest face crop read; a 512x512 RGB PNG is under 800 KB.
MAX_CROP_BYTES = 4 * 2**20
#: Largest shard; 512 MiB of embeddings is about a million faces.
MAX_SHARD_BYTES = 512 * 2**20
#: Most faces one model is fitted on: the model keeps every training
#: embedding (512 bytes a face) for its open-set rule.
MAX_FACES = 100_000


def job_body(names, labels=None):
    """The job object naming a request's inputs (and, for ``pack``, the
    person of each crop when the client chose them), as bytes."""
    job = {"inputs": list(names)}
    if labels is not None:
        job["labels"] = list(labels)
    return json.dumps(job, separators=(",", ":")).encode("utf-8")


def _job(f, name, n_inputs):
    """(input names, labels or None) of the job object ``f``."""
    try:
        job = json.loads(read_input(f, name, MAX_JOB_BYTES))
        names = job["inputs"]
        labels = job.get("labels")
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ObjectError(name, 'not a training job (JSON {"inputs": [...]})') from None
    if not (isinstance(names, list) and all(isinstance(n, str) and n for n in names)):
        raise ObjectError(name, "a training job's inputs must be a list of object names")
    if len(names) != n_inputs:
        raise ObjectError(
            name,
            f"the job names {len(names)} inputs but the request reads "
            f"{n_inputs} (X-Storlet-Extra-Resources)",
        )
    if labels is not None and not (
        isinstance(labels, list)
        and len(labels) == len(names)
        and all(isinstance(x, str) and 0 < len(x) <= MAX_LABEL_CHARS for x in labels)
    ):
        raise ObjectError(
            name,
            f"a training job's labels must be one name of 1 to {MAX_LABEL_CHARS} "
            "characters an input",
        )
    return names, labels


def run(in_files, params):
    """Run one step: ``in_files[0]`` is the job, the others its inputs."""
    job = input_name(params, 0)
    step = params.get("step")
    if step not in STEPS:
        raise ObjectError(job, f"parameter step must be one of {', '.join(STEPS)}, got {step!r}")
    names, labels = _job(in_files[0], job, len(in_files) - 1)
    if not names:
        raise ObjectError(job, "no inputs: name them in X-Storlet-Extra-Resources")
    if step == "pack":
        return pack(in_files[1:], names, params, labels)
    return {"merge": merge, "fit": fit}[step](in_files[1:], names, params)


def _shard_output(blocks, labels):
    X = np.concatenate(blocks)
    body = pack_shard(X, np.asarray(labels))
    return {"Shard-Rows": str(len(X))}, body


def pack(in_files, names, params, labels=None):
    """The embeddings of every input crop, as one shard: each labelled as
    ``labels`` says, else by its metadata (``label_key``)."""
    label_key = params.get("label_key") or "Name"
    blocks, found = [], []
    for i, (f, name) in enumerate(zip(in_files, names)):
        label = labels[i] if labels is not None else metadata_value(f.get_metadata(), label_key)
        if not label:
            raise ObjectError(name, f"no label: the crop has no X-Object-Meta-{label_key}")
        blocks.append(read_embedding(read_input(f, name, MAX_CROP_BYTES), name)[np.newaxis])
        found.append(label)
    return _shard_output(blocks, found)


def _read_shards(in_files, names):
    blocks, labels, total = [], [], 0
    for f, name in zip(in_files, names):
        X, y = load_shard(read_input(f, name, MAX_SHARD_BYTES), name)
        total += len(X)
        if total > MAX_FACES:
            raise ObjectError(name, f"more than {MAX_FACES} faces in one model")
        blocks.append(X)
        labels += y.tolist()
    return blocks, labels


def merge(in_files, names, params):
    """All embeddings of the input shards, as one shard."""
    return _shard_output(*_read_shards(in_files, names))


def fit(in_files, names, params):
    """Train the face model over every input shard."""
    name = input_name(params, 0)
    C = float_param(params, "C", 1.0, 1e-6, 1e6, name)
    seed = int_param(params, "seed", 0, 0, 2**31 - 1, name)
    blocks, labels = _read_shards(in_files, names)
    try:
        model = train(np.concatenate(blocks), np.asarray(labels), C=C, seed=seed)
    except ObjectError as err:
        # Named after the job, the request's object, not "training set".
        raise ObjectError(name, err.reason) from None
    metadata = dict(model.metadata, shards=str(len(in_files)))
    return metadata, dump_model(model)
