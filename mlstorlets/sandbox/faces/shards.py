"""What the training storlet computes: shards of features, then a model.

Training over thousands of face crops runs in three kinds of request, all
to the ``train`` storlet, chosen by its parameter ``step`` (see
:mod:`mlstorlets.client.faces.pipeline` for the client that plans them):

``pack``
    Inputs are face crops (PNG, labelled in their metadata); the output is
    a shard (:func:`~mlstorlets.sandbox.faces.model.pack_shard`) of their feature
    rows, each crop also mirrored.
``merge``
    Inputs are shards; the output is one shard holding all their rows.
    Needed when there are more shards than one request can read.
``fit``
    Inputs are shards; each is spilled to the sandbox's private ``/tmp`` and
    read back from disk on every epoch, so memory holds one shard at a time
    whatever the training set's size.  The output is the model file (skops)
    with its summary (:func:`~mlstorlets.sandbox.faces.model.model_metadata`) as
    metadata.

Every request runs on a *job object* the client writes: JSON
``{"inputs": ["container/object", ...]}`` naming, in order, the objects
listed in ``X-Storlet-Extra-Resources``.  The storlet thus names the object
at fault in every error, and its output inherits the job's (empty) user
metadata instead of a crop's: the engine copies the metadata of the object
a request runs on to the output, and a model labelled with the first
crop's ``Name`` would mislead.

Every step takes ``size`` and ``margin`` (the crop geometry, default 64 and
0.2, as :func:`~mlstorlets.sandbox.faces.tasks.extract`), which make the feature
spec; ``pack`` also ``label_key`` (default ``Name``); ``fit`` also
``epochs`` (20), ``alpha`` (1.0) and ``seed`` (0).
"""

import collections.abc
import json
import os
import shutil
import tempfile

import numpy as np

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces.features import default_spec, feature_length, training_features
from mlstorlets.sandbox.faces.image import decode_image
from mlstorlets.sandbox.faces.model import dump_model, load_shard, pack_shard, train_incremental
from mlstorlets.sandbox.faces.tasks import (
    input_name,
    metadata_value,
    read_input,
    spill_input,
)
from mlstorlets.sandbox.invocation import float_param, int_param

__all__ = ["STEPS", "job_body", "run", "pack", "merge", "fit"]

STEPS = ("pack", "merge", "fit")

#: Largest job object: a few thousand names.
MAX_JOB_BYTES = 4 * 2**20

#: Largest face crop read; a 256x256 grayscale PNG is under 70 KB.
MAX_CROP_BYTES = 4 * 2**20
#: Largest shard; 512 MiB of float32 rows is about 38,000 faces.
MAX_SHARD_BYTES = 512 * 2**20


def job_body(names):
    """The job object naming a request's inputs, as bytes."""
    return json.dumps({"inputs": list(names)}, separators=(",", ":")).encode("utf-8")


def _job_inputs(f, name, n_inputs):
    try:
        job = json.loads(read_input(f, name, MAX_JOB_BYTES))
        names = job["inputs"]
    except (ValueError, TypeError, KeyError):
        raise ObjectError(name, 'not a training job (JSON {"inputs": [...]})') from None
    if not (isinstance(names, list) and all(isinstance(n, str) and n for n in names)):
        raise ObjectError(name, "a training job's inputs must be a list of object names")
    if len(names) != n_inputs:
        raise ObjectError(
            name,
            f"the job names {len(names)} inputs but the request reads "
            f"{n_inputs} (X-Storlet-Extra-Resources)",
        )
    return names


def run(in_files, params):
    """Run one step: ``in_files[0]`` is the job, the others its inputs."""
    job = input_name(params, 0)
    step = params.get("step")
    if step not in STEPS:
        raise ObjectError(job, f"parameter step must be one of {', '.join(STEPS)}, got {step!r}")
    names = _job_inputs(in_files[0], job, len(in_files) - 1)
    if not names:
        raise ObjectError(job, "no inputs: name them in X-Storlet-Extra-Resources")
    return {"pack": pack, "merge": merge, "fit": fit}[step](in_files[1:], names, params)


def _spec(params):
    name = input_name(params, 0)  # the job
    size = int_param(params, "size", 64, 16, 256, name)
    margin = float_param(params, "margin", 0.2, 0.0, 1.0, name)
    try:
        return default_spec(size=size, margin=margin)
    except ValueError as exc:
        raise ObjectError(name, f"no feature spec for these parameters: {exc}") from None


def _shard_output(blocks, labels):
    X = np.concatenate(blocks)
    body = pack_shard(X, np.asarray(labels))
    return {"Shard-Rows": str(len(X))}, body


def pack(in_files, names, params):
    """Feature rows of every input crop, as one shard."""
    spec = _spec(params)
    size = spec["size"]
    label_key = params.get("label_key") or "Name"
    blocks, labels = [], []
    for f, name in zip(in_files, names):
        label = metadata_value(f.get_metadata(), label_key)
        if not label:
            raise ObjectError(name, f"no label: the crop has no X-Object-Meta-{label_key}")
        crop = decode_image(read_input(f, name, MAX_CROP_BYTES), name)
        if crop.shape != (size, size):
            raise ObjectError(
                name,
                f"a {crop.shape[1]}x{crop.shape[0]} image, not a {size}x{size} face crop "
                f"(extract the faces with size={size})",
            )
        rows = training_features(crop, spec)
        blocks.append(rows)
        labels += [label] * len(rows)
    return _shard_output(blocks, labels)


def merge(in_files, names, params):
    """All rows of the input shards, as one shard."""
    n_features = feature_length(_spec(params))
    blocks, labels = [], []
    for f, name in zip(in_files, names):
        X, y = load_shard(read_input(f, name, MAX_SHARD_BYTES), name)
        if X.shape[1] != n_features:
            raise ObjectError(name, f"rows of {X.shape[1]} features, expected {n_features}")
        blocks.append(X)
        labels += y.tolist()
    return _shard_output(blocks, labels)


class SpilledShards(collections.abc.Sequence):
    """Shards in local files, read from disk on every access.

    A sequence, so that :func:`~mlstorlets.sandbox.faces.model.train_incremental`
    visits them in a new order each epoch; items are ``(name, bytes)``.
    """

    def __init__(self, entries):
        self._entries = list(entries)

    def __len__(self):
        return len(self._entries)

    def __getitem__(self, index):
        name, path = self._entries[index]
        with open(path, "rb") as f:
            return name, f.read()


def fit(in_files, names, params):
    """Train the face model over every input shard."""
    spec = _spec(params)
    name = input_name(params, 0)
    epochs = int_param(params, "epochs", 20, 1, 1000, name)
    alpha = float_param(params, "alpha", 1.0, 1e-8, 1e4, name)
    seed = int_param(params, "seed", 0, 0, 2**31 - 1, name)
    n_features = feature_length(spec)
    workdir = tempfile.mkdtemp(prefix="mlstorlets-train-")
    try:
        entries, classes = [], set()
        for index, (f, shard_name) in enumerate(zip(in_files, names)):
            path = os.path.join(workdir, f"shard-{index:05d}.npz")
            spill_input(f, path, shard_name, MAX_SHARD_BYTES)
            # Checked now, one shard in memory at a time, so that a bad shard
            # is named before any training; the labels make the classes.
            with open(path, "rb") as spilled:
                X, y = load_shard(spilled.read(), shard_name)
            if X.shape[1] != n_features:
                raise ObjectError(
                    shard_name, f"rows of {X.shape[1]} features, expected {n_features}"
                )
            classes.update(y.tolist())
            del X, y
            entries.append((shard_name, path))
        if len(classes) < 2:
            raise ObjectError(
                name, f"training needs faces of at least two people, found {sorted(classes)}"
            )
        model = train_incremental(
            SpilledShards(entries),
            sorted(classes),
            spec,
            epochs=epochs,
            alpha=alpha,
            random_state=seed,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    metadata = dict(model.metadata, shards=str(len(in_files)))
    return metadata, dump_model(model, model.spec, model.classes, model.n_samples)
