"""A user's own ONNX models applied next to the data.

``apply_model.py`` (:mod:`mlstorlets.sandbox.models.tasks`) applies an ONNX
model object to every object under a prefix: a style network or any
image-to-image model over photos and frames, a classifier or an embedding
over images (scores as ``.npy``, or top labels in metadata), a scikit-learn
estimator or pipeline exported with ``skl2onnx`` over tables.  In the
cluster when the data and the model are there; on the client, with the
same storlet code, for other stores.

For scikit-learn::

    from mlstorlets.client import models
    models.export(pipeline, "swift://models/churn.onnx")
    models.remote_predict(pipeline, "swift://tables/new/", "swift://pred/",
                          model="swift://models/churn.onnx")

The model file holds the estimator's computation only: no pickle, no
code, and no credentials.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from typing import Union

from sklearn.base import is_classifier
from sklearn.utils.validation import check_is_fitted

from mlstorlets.client.batch import BatchSummary
from mlstorlets.client.errors import UsageError
from mlstorlets.client.incremental.mixin import PREDICTION_TYPE, Sources
from mlstorlets.client.runners import runner_for, stores_for
from mlstorlets.client.stores.registry import Stores
from mlstorlets.client.swift import Connection, Swift
from mlstorlets.client.uri import parse
from mlstorlets.sandbox.models.tasks import OUTPUTS

__all__ = ["STORLET", "MODEL_TYPE", "apply_model", "export", "remote_predict", "to_onnx"]

STORLET = "apply_model.py"
#: Content type a stored model is given.
MODEL_TYPE = "application/onnx"
#: ONNX operator set of exported estimators: one the pinned runtime runs.
TARGET_OPSET = 17

ConnectionLike = Union[Connection, Swift, Stores, None]


def to_onnx(estimator, X=None):
    """A fitted scikit-learn estimator (or pipeline) as an ONNX model.

    Parameters
    ----------
    estimator : fitted estimator
    X : array-like, optional
        A sample of its input, for the feature count and type; by default
        ``n_features_in_`` float features.

    Returns
    -------
    onnx.ModelProto
        One input ``X`` of shape (rows, features); a classifier's outputs
        are ``label`` and ``probabilities`` (plain tensors, not ZipMap).
    """
    import numpy as np
    import skl2onnx
    from skl2onnx.common.data_types import FloatTensorType

    check_is_fitted(estimator)
    if X is not None:
        n_features = np.asarray(X).shape[1]
    elif hasattr(estimator, "n_features_in_"):
        n_features = int(estimator.n_features_in_)
    else:
        raise UsageError("pass X: %s does not say how many features it takes" % estimator)
    options = {"zipmap": False} if is_classifier(estimator) else None
    try:
        return skl2onnx.to_onnx(
            estimator,
            initial_types=[("X", FloatTensorType([None, n_features]))],
            options=options,
            target_opset=TARGET_OPSET,
        )
    except (RuntimeError, NameError, ValueError) as exc:
        # skl2onnx names what it cannot convert: an estimator of its own
        # without a converter, an option a step does not take.
        raise UsageError("cannot export %s to ONNX: %s" % (type(estimator).__name__, exc)) from None


def export(
    estimator,
    uri: str,
    X=None,
    *,
    connection: ConnectionLike = None,
    stores: Stores | None = None,
) -> str:
    """Export a fitted estimator with ``skl2onnx`` and store it at ``uri``.

    Returns ``uri``.  The same estimator always gives the same bytes, so a
    batch that applied it before resumes.
    """
    data = to_onnx(estimator, X).SerializeToString()
    store, key = stores_for(connection, stores).open(parse(uri))
    store.put(key.key, data, headers={"Content-Type": MODEL_TYPE})
    return uri


def _output_type(output):
    """``(suffix, content type)`` of the output made from a source name."""
    if output == "npy":
        return PREDICTION_TYPE
    if output in ("image", "tags"):
        return None

    def by_source(name):
        guessed = mimetypes.guess_type(name)[0] or ""
        return None if guessed.startswith("image/") else PREDICTION_TYPE

    return by_source


def apply_model(
    model: str,
    source: Sources,
    dest: str,
    *,
    output: str = "auto",
    output_name: str | None = None,
    params: Mapping[str, object] | None = None,
    data_options: Mapping[str, object] | None = None,
    concurrency: int = 4,
    resume: bool = True,
    progress: bool | None = None,
    dry_run: bool = False,
    connection: ConnectionLike = None,
    stores: Stores | None = None,
    placement: str = "auto",
) -> BatchSummary:
    """Apply the ONNX model ``model`` to every object of ``source``.

    Parameters
    ----------
    model : str
        URI of the ONNX model object.
    source : str or list of str
        A URI, a prefix ending in ``/``, or a list.
    dest : str
        Where the outputs go (a prefix): an image keeps its name (its
        output image, or itself tagged with ``output='tags'``); a table,
        and an image with ``output='npy'``, gives ``<name>.npy``.
    output : {'auto', 'image', 'npy', 'tags'}, default='auto'
        See :mod:`mlstorlets.sandbox.models.tasks`.
    output_name : str, optional
        The model output to write (default the first; ``'probabilities'``
        for an exported classifier's scores).
    params : dict, optional
        More storlet parameters: ``top_k``, ``quality``, ``width``,
        ``threads``.
    data_options : dict, optional
        How tables are read (``label_column``, ``format``...), as for
        ``remote_predict``; rows hold no label by default.
    concurrency, resume, progress, dry_run
        As :func:`mlstorlets.client.batch.run_batch`.
    connection, stores
        Where the URIs are reached: see
        :func:`mlstorlets.client.runners.stores_for`.
    placement : {'auto', 'client', 'cluster'}, default='auto'
        Where to run: see :func:`mlstorlets.client.runners.runner_for`.

    Returns
    -------
    mlstorlets.client.batch.BatchSummary
    """
    if output not in OUTPUTS:
        raise UsageError("output must be one of %s, got %r" % (", ".join(OUTPUTS), output))
    runner = runner_for(
        source, dest, model, connection=connection, stores=stores, placement=placement
    )
    # The engine would feed a missing model to the storlet as an error
    # page; asking first names it.
    runner.require(model)
    request = dict(data_options or {}, **(params or {}))
    request.update(model=runner.source_name(model), output=output)
    if output_name:
        request["output_name"] = output_name
    return runner.run_storlet(
        STORLET,
        source,
        dest,
        request,
        concurrency=concurrency,
        resume=resume,
        extras=[model],
        progress=progress,
        dry_run=dry_run,
        output_type=_output_type(output),
    )


def remote_predict(
    estimator,
    source: Sources,
    dest: str,
    *,
    model: str,
    method: str = "predict",
    data_options: Mapping[str, object] | None = None,
    **kwargs,
) -> BatchSummary:
    """``estimator.predict`` (or ``predict_proba``) over the rows of every
    object of ``source``, next to them: any fitted scikit-learn estimator
    or pipeline ``skl2onnx`` converts.

    The estimator is exported and stored at ``model`` (a URI), then
    applied by :func:`apply_model`; each object gives one ``.npy`` under
    ``dest``, equal to the local method's output on the same rows.

    Parameters
    ----------
    estimator : fitted estimator
    source, dest : str
    model : str
        Where the exported model is stored (replaced).
    method : {'predict', 'predict_proba'}, default='predict'
    data_options : dict, optional
        How tables are read, as :func:`apply_model`.
    **kwargs
        Passed to :func:`apply_model` (``concurrency``, ``connection``...).
    """
    if method not in ("predict", "predict_proba"):
        raise UsageError("method must be predict or predict_proba, got %r" % method)
    if method == "predict_proba" and not is_classifier(estimator):
        raise UsageError("%s has no predict_proba" % type(estimator).__name__)
    connection, stores = kwargs.get("connection"), kwargs.get("stores")
    if not kwargs.get("dry_run"):
        export(estimator, model, connection=connection, stores=stores)
    # An exported regressor's one output, or a classifier's label, is
    # predict; probabilities, predict_proba.
    output_name = "probabilities" if method == "predict_proba" else None
    return apply_model(
        model,
        source,
        dest,
        output="npy",
        output_name=output_name,
        data_options=data_options,
        **kwargs,
    )
