"""The remote methods of an incremental scikit-learn estimator.

:class:`RemoteIncrementalMixin` gives any estimator with ``partial_fit``
(one of :data:`mlstorlets.sandbox.incremental.state.KINDS`, or a subclass)
``remote_partial_fit``, ``remote_fit``, ``remote_score`` and
``remote_predict`` (and ``remote_predict_proba``,
``remote_decision_function``, ``remote_transform`` where the estimator has
the method), run by the ``estimator.py`` storlet next to the data::

    class MyRemotePerceptron(RemoteIncrementalMixin, Perceptron):
        pass

The state travels as scikit-learn's own estimator (its ``get_params()`` and
fitted attributes, in a skops file, never pickle); the storlet calls the
estimator's own ``partial_fit`` and ``predict``, so a pass is exactly local
``partial_fit`` over the same mini-batches.  The estimator holds no
connection and no credentials: each remote method takes ``connection`` (a
swiftclient ``Connection`` or a :class:`~mlstorlets.client.swift.Swift`
gateway) or ``stores``, and defaults to the ``swift`` CLI's environment.

Sources are URIs of any store: ``swift://`` (and ``s3://`` through the
cluster's S3 API) in place; ``file://``, ``s3://`` elsewhere, ``dropbox://``
with the same storlet module run here.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import TYPE_CHECKING, Union

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import clone, is_classifier
from sklearn.callback import CallbackSupportMixin, with_callbacks
from sklearn.utils import check_random_state
from sklearn.utils._available_if import available_if
from sklearn.utils.validation import check_is_fitted

from mlstorlets.client.batch import BatchSummary
from mlstorlets.client.errors import UsageError
from mlstorlets.client.incremental import passes
from mlstorlets.client.incremental.callbacks import FitTasks
from mlstorlets.client.incremental.transport import STORLET_NAME, calls_for
from mlstorlets.client.runners import runner_for
from mlstorlets.client.stores.registry import Stores
from mlstorlets.client.swift import Connection, Swift
from mlstorlets.sandbox.incremental import state

if TYPE_CHECKING:  # typing.Self is Python 3.11's
    from typing import Self

#: The objects a call reads: one URI, a prefix ending in ``/``, or a list.
Sources = Union[str, Sequence[str]]
#: A weight for every row, one per object ({uri: weight or array}), or an
#: array of row weights for a single object.
Weights = Union[ArrayLike, Mapping[str, object], None]

#: (suffix, content type) of what remote_predict writes: numpy's own format.
PREDICTION_TYPE = (".npy", "application/octet-stream")
_MAX_SEED = np.iinfo(np.int32).max

REMOTE_DOC = """
    Remote methods
    --------------
    ``remote_partial_fit``, ``remote_fit``, ``remote_score`` and
    ``remote_predict`` (see :mod:`mlstorlets.client.incremental`) train and
    apply this estimator next to the data, with its own ``partial_fit`` and
    ``predict`` run by the ``estimator.py`` storlet.  ``source`` is a URI,
    a list of URIs, or a prefix ending in ``/``.  The estimator is updated
    only once every object has answered with a valid state: a failure leaves
    it as it was.  It holds no connection: pickling it carries no
    credentials.
"""


def _has(method):
    return lambda self: hasattr(self, method)


class RemoteIncrementalMixin(CallbackSupportMixin):
    """Remote training and prediction for an incremental estimator.

    Attributes set by ``remote_fit``
    --------------------------------
    remote_history_ : list of dict
        One record per epoch: ``epoch``, ``n_samples``, ``train_score`` (the
        score of each mini-batch before training on it, when a stopping
        rule needs it), ``validation_score`` (with ``early_stopping``, on
        the held-out objects) and ``seconds``.
    remote_validation_objects_ : list of str
        The objects held out by ``early_stopping``.
    """

    # -- state ----------------------------------------------------------------
    def _partial_fit_params(self, rng):
        """Parameters the storlet's copy of the final estimator runs with:
        scikit-learn's ``partial_fit`` refuses ``early_stopping`` (it
        belongs to ``fit``, here ``remote_fit``), and a ``RandomState``
        travels as a seed."""
        final = state.final_of(self)
        params = {}
        if getattr(final, "early_stopping", False):
            params["early_stopping"] = False
        seed = getattr(final, "random_state", None)
        if seed is not None and not isinstance(seed, Integral):
            params["random_state"] = int(check_random_state(seed).randint(_MAX_SEED))
        return params

    def _validate_remote(self):
        """scikit-learn's checks of the hyper-parameters, of each step of a
        pipeline too, which must be one a storlet can rebuild."""
        self._validate_params()
        if state.final_of(self) is not self:
            problem = state.pipeline_problem(self, exact=False)
            if problem:
                raise UsageError(problem)
            for step in state.parts_of(self):
                step._validate_params()

    def _apply(self, estimator):
        """Make the fitted attributes of ``self`` (of each of its steps)
        those of ``estimator`` (of its steps)."""
        if state.final_of(self) is not self:
            # A single estimator's own loop below drops these.
            for key in ("remote_history_", "remote_validation_objects_"):
                self.__dict__.pop(key, None)
        for mine, theirs in zip(state.parts_of(self), state.parts_of(estimator)):
            for key in state.fitted_attributes(mine):
                delattr(mine, key)
            for key, value in state.fitted_attributes(theirs).items():
                setattr(mine, key, value)
        return self

    def to_sklearn(self):
        """A plain scikit-learn estimator (its own class, no remote methods)
        with this one's parameters and fitted attributes (copied)."""
        return copy.deepcopy(state.plain(self))

    # -- the remote methods ---------------------------------------------------
    @with_callbacks
    def remote_partial_fit(
        self,
        source: Sources,
        classes: ArrayLike | None = None,
        sample_weight: Weights = None,
        *,
        data_options: dict | None = None,
        connection: Connection | Swift | None = None,
        stores: Stores | None = None,
        storlet: str = STORLET_NAME,
        objects_per_call: int | None = None,
        placement: str = "auto",
    ) -> Self:
        """``partial_fit`` over each object named by ``source``, in order.

        Each object is read in mini-batches of ``data_options['batch_size']``
        rows, each one a ``partial_fit`` call of this estimator's own class,
        exactly as locally.

        Parameters
        ----------
        source : str or list of str
            URIs (any store), or a prefix ending in ``/``.
        classes : array-like, default=None
            Required on the first call of a classifier, as for
            ``partial_fit``.
        sample_weight : array-like or dict, default=None
            An array of one weight per row when ``source`` names one object;
            or a dict of URI to a weight for all its rows, or to an array.
        data_options : dict, default=None
            How objects are read (see
            :class:`mlstorlets.sandbox.incremental.data.DataOptions`).
        connection : swiftclient Connection or Swift, default=None
            None: the ``swift`` CLI's environment.
        stores : mlstorlets.client.stores.registry.Stores, default=None
        storlet : str, default='estimator.py'
        objects_per_call : int, default=None
            Most objects one invocation reads (None: as many as the engine's
            limits allow; the result is the same).
        placement : {'auto', 'client', 'cluster'}, default='auto'
            Where the calls run: see
            :func:`mlstorlets.client.runners.runner_for`.

        Returns
        -------
        self : object
        """
        transport = calls_for(source, connection, stores, storlet, objects_per_call, placement)
        uris = transport.list_objects(source)
        weights = passes.object_weights(uris, sample_weight)
        first = not hasattr(state.final_of(self), "n_features_in_")
        if first:
            self._validate_remote()
        if is_classifier(self):
            if first and classes is None:
                raise UsageError("classes must be passed on the first call to remote_partial_fit")
            if (
                not first
                and classes is not None
                and not np.array_equal(self.classes_, np.unique(classes))
            ):
                raise UsageError(
                    f"classes={classes!r} is not the same as on the first call, {self.classes_!r}"
                )
            classes = np.unique(classes) if first else None
        blob = state.dumps(self, self._partial_fit_params(None))
        tasks = FitTasks(self, "remote_partial_fit")
        _, final, _, _ = passes.train_pass(
            state.kind_of(self),
            transport,
            uris,
            blob,
            passes.request_params("partial_fit", data_options),
            weights,
            classes,
        )
        self._apply(final)
        tasks.end(final)
        return self

    def _fit_settings(self, epochs, validation_fraction):
        final = state.final_of(self)
        max_iter = getattr(final, "max_iter", None)
        if epochs is None:
            # an estimator without max_iter (naive Bayes) learns in one pass:
            # a second would count every row twice
            epochs = max_iter if isinstance(max_iter, Integral) else 1
        tol = getattr(final, "tol", None)
        patience = getattr(final, "n_iter_no_change", getattr(final, "max_no_improvement", 5))
        early = bool(getattr(final, "early_stopping", False))
        fraction = (
            validation_fraction
            if validation_fraction is not None
            else getattr(final, "validation_fraction", 0.1)
        )
        return int(epochs), tol, patience, early, fraction

    @with_callbacks
    def remote_fit(
        self,
        source: Sources,
        classes: ArrayLike | None = None,
        sample_weight: Weights = None,
        *,
        epochs: int | None = None,
        validation_fraction: float | None = None,
        shuffle: bool | None = None,
        data_options: dict | None = None,
        connection: Connection | Swift | None = None,
        stores: Stores | None = None,
        storlet: str = STORLET_NAME,
        objects_per_call: int | None = None,
        progress: bool | None = None,
        placement: str = "auto",
    ) -> Self:
        """Fit from scratch: epochs of ``partial_fit`` over every object.

        As Dask-ML's ``Incremental``: each epoch visits the objects in an
        order shuffled by ``random_state`` (unless ``shuffle=False``), each
        object trained next to it with this estimator's own ``partial_fit``.
        Stopping follows the estimator's own parameters where it has them:

        * ``max_iter`` epochs at most (``epochs`` overrides; 1 for an
          estimator without ``max_iter``);
        * with ``tol`` not None, stop when the score has not improved by
          ``tol`` for ``n_iter_no_change`` (or ``max_no_improvement``)
          epochs: with ``early_stopping``, the score of ``validation_fraction``
          of the *objects*, held out; otherwise the score of each mini-batch
          taken just before training on it (no extra pass);
        * ``verbose`` prints one line per epoch; ``progress`` (default: with
          ``verbose``, on a terminal) shows progress bars per epoch and
          object.

        Parameters
        ----------
        source, classes, sample_weight, data_options, connection, stores, storlet, \
objects_per_call, placement
            As for :meth:`remote_partial_fit`; ``classes`` of a classifier
            default to the labels found in the objects (one extra call per
            group).
        epochs : int, default=None
        validation_fraction : float, default=None
            Of the objects, for ``early_stopping``; None: the estimator's.
        shuffle : bool, default=None
            Shuffle the object order each epoch; None: the estimator's
            ``shuffle``, or True when it has none.
        progress : bool, default=None

        Returns
        -------
        self : object
        """
        self._validate_remote()
        last = state.final_of(self)
        epochs, tol, patience, early, fraction = self._fit_settings(epochs, validation_fraction)
        shuffle = getattr(last, "shuffle", True) if shuffle is None else shuffle
        rng = check_random_state(getattr(last, "random_state", None))
        transport = calls_for(source, connection, stores, storlet, objects_per_call, placement)
        uris = transport.list_objects(source)
        weights = passes.object_weights(uris, sample_weight)
        held = []
        if early:
            if len(uris) < 2:
                raise UsageError("early_stopping holds out objects: it needs at least two")
            n_held = min(len(uris) - 1, max(1, int(round(fraction * len(uris)))))
            order = rng.permutation(len(uris))
            held = [uris[i] for i in sorted(order[:n_held])]
            uris = [u for u in uris if u not in held]
        params = passes.request_params("partial_fit", data_options)
        if is_classifier(self):
            if classes is None:
                classes = passes.discover_classes(
                    transport, uris + held, passes.request_params("labels", data_options)
                )
            classes = np.unique(classes)
        fresh = clone(self)
        blob = state.dumps(fresh, self._partial_fit_params(rng))
        verbose = int(getattr(last, "verbose", 0) or 0)
        tasks = FitTasks(self, "remote_fit", epochs)
        steps = state.parts_of(self)
        if len(steps) > 1:
            blob = passes.fit_transformers(
                state.kind_of(self), transport, uris, blob, params, weights, len(steps) - 1, verbose
            )
            params["step"] = str(len(steps) - 1)
        # a rule that cannot stop before the last epoch costs nothing
        stopping = tol is not None and patience is not None and patience < epochs
        if stopping and not early:
            params["progressive"] = "1"
        if progress is None:
            progress = bool(verbose) and sys.stderr.isatty()
        final, history = passes.fit_epochs(
            state.kind_of(self),
            transport,
            uris,
            held,
            blob,
            params,
            passes.request_params("score", data_options) if early else None,
            weights,
            classes,
            epochs=epochs,
            order=rng if shuffle else None,
            stop=(tol, patience) if stopping else None,
            verbose=verbose,
            progress=progress,
            tasks=tasks,
        )
        self._apply(final)
        tasks.end(final)
        self.remote_history_ = history
        self.remote_validation_objects_ = held
        return self

    def remote_score(
        self,
        source: Sources,
        sample_weight: Weights = None,
        *,
        data_options: dict | None = None,
        connection: Connection | Swift | None = None,
        stores: Stores | None = None,
        storlet: str = STORLET_NAME,
        objects_per_call: int | None = None,
        placement: str = "auto",
    ) -> float:
        """``score`` over the rows of every object, computed next to them.

        Each call returns sums that combine across objects, so the result
        equals ``score`` on the concatenated rows: accuracy for a
        classifier, R^2 for a regressor, the summed score of a clusterer.
        """
        check_is_fitted(self)
        transport = calls_for(source, connection, stores, storlet, objects_per_call, placement)
        uris = transport.list_objects(source)
        blob = state.dumps(self, self._partial_fit_params(None))
        return passes.score_pass(
            transport,
            uris,
            blob,
            passes.request_params("score", data_options),
            passes.object_weights(uris, sample_weight),
        )

    def remote_predict(
        self,
        source: Sources,
        dest: str,
        *,
        data_options: dict | None = None,
        concurrency: int = 4,
        resume: bool = True,
        progress: bool | None = None,
        dry_run: bool = False,
        connection: Connection | Swift | None = None,
        stores: Stores | None = None,
        storlet: str = STORLET_NAME,
        method: str = "predict",
        placement: str = "auto",
    ) -> BatchSummary:
        """Write ``predict``'s output over each object under ``dest``.

        One ``.npy`` object per source object, under the source's name
        relative to its prefix with ``.npy`` for its extension
        (``new/part0.csv`` gives ``pred/part0.npy``), made next to the data with copy semantics
        (``PUT`` with ``X-Copy-From`` and ``X-Run-Storlet``) when source and
        destination are in the cluster; by the same storlet module here
        otherwise.  It resumes: an output made from the same source content
        by the same model is skipped.  Objects hold no label by default
        (``data_options={'label_column': 'none'}``).

        Returns
        -------
        summary : mlstorlets.client.batch.BatchSummary
            What was done, skipped or failed, and where (``placement``).
        """
        check_is_fitted(self)
        if not hasattr(self, method):
            raise AttributeError(f"{type(self).__name__} has no {method}")
        options = dict({"label_column": "none"}, **(data_options or {}))
        params = passes.request_params(method, options)
        blob = state.pack(state.dumps(self, self._partial_fit_params(None)))
        runner = runner_for(source, dest, connection=connection, stores=stores, placement=placement)
        # Every call's datagram holds the parameters, each source's name
        # among them: the model rides there when all have room.
        with runner.staged(blob, params, runner.list_objects(source)) as (params, extra):
            summary = runner.run_storlet(
                storlet,
                source,
                dest,
                params,
                concurrency,
                resume,
                extra_resources=extra,
                progress=progress,
                dry_run=dry_run,
                output_type=PREDICTION_TYPE,
            )
        if int(getattr(state.final_of(self), "verbose", 0) or 0):
            print(summary.format(), flush=True)
        return summary

    @available_if(_has("predict_proba"))
    def remote_predict_proba(self, source: Sources, dest: str, **kwargs) -> BatchSummary:
        """:meth:`remote_predict` with ``predict_proba``."""
        return self.remote_predict(source, dest, method="predict_proba", **kwargs)

    @available_if(_has("decision_function"))
    def remote_decision_function(self, source: Sources, dest: str, **kwargs) -> BatchSummary:
        """:meth:`remote_predict` with ``decision_function``."""
        return self.remote_predict(source, dest, method="decision_function", **kwargs)

    @available_if(_has("transform"))
    def remote_transform(self, source: Sources, dest: str, **kwargs) -> BatchSummary:
        """:meth:`remote_predict` with ``transform``."""
        return self.remote_predict(source, dest, method="transform", **kwargs)
