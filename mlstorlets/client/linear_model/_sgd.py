"""scikit-learn's SGD estimators, trainable by storlets next to the data."""

import json
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier as _SkSGDClassifier
from sklearn.linear_model import SGDRegressor as _SkSGDRegressor
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from mlstorlets.client.linear_model import remote
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.sgd import data, state, training

_MAX_SEED = np.iinfo(np.int32).max

_REMOTE_DOC = """
    Remote training
    ---------------
    ``remote_partial_fit``, ``remote_fit`` and ``remote_score`` take
    ``source``: an object URI ``swift://container/object``, a list of them, or
    a prefix ending in ``/`` (``swift://container/dir/``) listed through
    swiftclient. Each object is processed by the ``storlet`` on an object
    server holding it (see :mod:`mlstorlets.client.linear_model.remote`); the model
    state travels with the request and comes back updated. The local estimator
    is updated only once every object has answered with a valid state, so a
    failure leaves it exactly as it was.

    Sample weights: ``sample_weight`` of the ``remote_*`` methods is a dict
    mapping object URIs to a weight applied to all the object's rows (missing
    objects weigh 1); per-row weights come from a column of the data
    (``data_options={'weight_column': k}``, or ``X-Object-Meta-Weight-Column``)
    or from the ``sample_weight`` array of an ``.npz``. Both multiply.

    ``data_options`` (dict) overrides how objects are read: ``format``,
    ``num_features``, ``label_column``, ``weight_column``, ``header_rows``,
    ``batch_size`` (see :class:`mlstorlets.sandbox.sgd.data.DataOptions`).
    An object is trained as consecutive ``partial_fit`` calls on
    ``batch_size`` rows, exactly as locally.
    ``data_options`` also lowers or raises, within hard maxima, the bounds
    the storlet decodes with (``max_rows``, ``max_line_bytes``,
    ``max_features``, ``max_batch_bytes``, ``max_archive_bytes``,
    ``max_array_bytes``, ``max_members``: see
    :data:`mlstorlets.sandbox.sgd.data.LIMITS`); an object past one is
    refused with a 422 naming it and the limit.

    Random state: ``random_state`` must be None or an int to travel; with a
    ``RandomState`` instance an int seed is drawn from it for each request.
"""


_REMOTE_PARAMS_DOC = """
    connection : swiftclient.client.Connection, default=None
        Used by the ``remote_*`` methods; None builds one from the ``swift``
        CLI's environment (``ST_*`` or ``OS_*`` variables) at each call.
    storlet : str, default='sgd_estimator.py'
        Value of ``X-Run-Storlet``.
    objects_per_call : int, default=None
        Most objects one storlet invocation reads in the ``remote_*``
        methods.  None: as many as the engine's limits allow (a group runs
        on the proxy, see :mod:`mlstorlets.client.linear_model.remote`);
        1: one invocation per object, on an object server holding it.  The
        result is the same.
"""

_REMOTE_CONSTRAINTS = {
    "connection": "no_validation",
    "storlet": [str],
    "objects_per_call": [None, Interval(Integral, 1, None, closed="left")],
}


class _RemoteSGDMixin:
    """The remote_* methods shared by the classifier and the regressor."""

    def _transport(self):
        return remote.transport_for(self.connection, self.storlet, self.objects_per_call)

    def _sk_params(self):
        names = state.sklearn_param_names(state._kind_of(self))
        return {name: getattr(self, name) for name in names}

    def _seed(self, rng):
        if self.random_state is None or isinstance(self.random_state, (int, np.integer)):
            return self.random_state
        return int(rng.randint(_MAX_SEED))

    def _request_params(self, op, data_options, holdout=None):
        """Storlet parameters common to every object of a pass."""
        params = {"op": op}
        for key, value in (data_options or {}).items():
            if key not in data._OPTIONS:
                raise ValueError(f"unknown data option {key!r}; expected one of "
                                 f"{sorted(data._OPTIONS)}")
            if value is not None:
                params[key] = str(value)
        if holdout is not None:
            params["holdout_fraction"] = repr(float(holdout[0]))
            params["holdout_seed"] = str(int(holdout[1]))
        return params

    @staticmethod
    def _object_weight(uri, sample_weight):
        weight = 1.0 if sample_weight is None else sample_weight.get(uri, 1.0)
        weight = float(weight)
        if not np.isfinite(weight) or weight < 0:
            raise ValueError(f"sample weight of {uri} must be finite and >= 0")
        return weight

    def _calls(self, transport, uris, op, data_options, sample_weight, holdout=None):
        """(what to name in errors, parameters, [(uri, weight)]) of each invocation."""
        params = self._request_params(op, data_options, holdout)
        entries = [(uri, self._object_weight(uri, sample_weight)) for uri in uris]
        position = 0
        for group in transport.plan(uris, params):
            calls = entries[position:position + len(group)]
            position += len(group)
            where = group[0] if len(group) == 1 else f"{group[0]} (and {len(group) - 1} more)"
            yield where, params, calls

    def _order(self, uris, rng):
        if not self.shuffle:
            return list(uris)
        return [uris[i] for i in rng.permutation(len(uris))]

    def _check_answer(self, blob, uri, sent, with_objective=True):
        """Decode the storlet's new state and check it continues ``sent``."""
        new = state.loads(blob, name=uri)
        if new.kind != sent.kind or new.params != sent.params:
            raise ObjectError(uri, "the storlet returned a state for other hyper-parameters")
        if not new.fitted:
            raise ObjectError(uri, "the storlet returned an unfitted state")
        if new.kind == "SGDClassifier":
            expected = sent.classes if sent.classes is not None else None
            if expected is not None and not np.array_equal(new.classes, expected):
                raise ObjectError(uri, "the storlet returned other classes")
        if sent.fitted and new.attrs["n_features_in_"] != sent.attrs["n_features_in_"]:
            raise ObjectError(uri, "the storlet changed the number of features")
        report = new.report or {}
        n = report.get("n_samples")
        objective = report.get("objective")
        if with_objective:
            valid = isinstance(objective, list) and all(
                isinstance(v, (int, float)) and np.isfinite(v) for v in objective)
        else:
            valid = objective is None
        if not isinstance(n, int) or n < 1 or not valid:
            raise ObjectError(uri, f"the storlet's report is malformed: {report!r}")
        if sent.fitted and new.attrs["t_"] != sent.attrs["t_"] + n:
            raise ObjectError(uri, "the storlet's t_ does not match its sample count")
        return new

    def _train_pass(self, transport, uris, blob, data_options, sample_weight, holdout=None,
                    with_objective=True):
        """partial_fit over the objects, in the given order; returns the final
        state blob, decoded state, summed objective (None if not asked for)
        and sample count."""
        objective, n_samples, current = None, 0, state.loads(blob, name="local state")
        for where, params, entries in self._calls(transport, uris, "partial_fit",
                                                  data_options, sample_weight, holdout):
            if not with_objective:
                params = dict(params, objective="0")
            blob = transport.run_group(entries, params, blob)
            current = self._check_answer(blob, where, current, with_objective)
            if with_objective:
                sums = current.report["objective"]
                objective = sums if objective is None else [a + b for a, b in
                                                            zip(objective, sums)]
            n_samples += current.report["n_samples"]
        return blob, current, objective, n_samples

    def _score_pass(self, transport, uris, blob, data_options, sample_weight, holdout=None):
        classifier = is_classifier(self)
        total = {"n": 0, "weight_sum": 0.0, "correct": 0.0, "sse": 0.0, "mean": 0.0, "m2": 0.0}
        for uri, params, entries in self._calls(transport, uris, "score", data_options,
                                                sample_weight, holdout):
            body = transport.run_group(entries, params, blob)
            try:
                sums = json.loads(body)
                if sums.get("format") != training.SCORE_FORMAT:
                    raise ValueError("not a score")
                keys = ("correct",) if classifier else ("sse", "mean", "m2")
                values = [float(sums[k]) for k in keys + ("weight_sum",)]
                if not all(np.isfinite(values)) or int(sums["n"]) < 0:
                    raise ValueError("non-finite sums")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ObjectError(uri, f"the storlet's score is malformed ({exc})") from None
            total["n"] += int(sums["n"])
            if classifier:
                total["correct"] += float(sums["correct"])
                total["weight_sum"] += float(sums["weight_sum"])
            else:
                total["sse"] += float(sums["sse"])
                training.combine_moments(total, float(sums["weight_sum"]),
                                         float(sums["mean"]), float(sums["m2"]))
        if total["weight_sum"] <= 0:
            raise ValueError(f"nothing to score in {uris!r} (no rows or zero weights)")
        if classifier:
            return total["correct"] / total["weight_sum"]
        if total["m2"] > 0:
            return 1.0 - total["sse"] / total["m2"]
        # scikit-learn's r2_score convention for a constant target
        return 1.0 if total["sse"] == 0 else 0.0

    def remote_partial_fit(self, source, classes=None, sample_weight=None,
                           data_options=None):
        """One pass of partial_fit over the objects named by ``source``.

        The objects are visited in an order shuffled by ``random_state``
        (unless ``shuffle=False``); each is trained by the storlet next to it,
        starting from the state left by the previous one.

        Parameters
        ----------
        source : str or list of str
            Object URI(s) or a ``swift://container/prefix/``.
        classes : array-like of shape (n_classes,), default=None
            Required on the first call of a classifier (as for
            ``partial_fit``); ignored by the regressor.
        sample_weight : dict of str to float, default=None
            Weight of each object's rows, keyed by object URI.
        data_options : dict, default=None
            How to read the objects.

        Returns
        -------
        self : object
        """
        first = getattr(self, "coef_", None) is None
        if first:
            self._validate_params()
            self._more_validate_params(for_partial_fit=True)
            if is_classifier(self) and self.class_weight == "balanced":
                raise ValueError("class_weight 'balanced' is not supported for "
                                 "remote_partial_fit; use remote_fit or a dict")
        pending = None
        if is_classifier(self):
            if first:
                if classes is None:
                    raise ValueError("classes must be passed on the first call to "
                                     "remote_partial_fit")
                pending = state.decode_classes(state.encode_classes(np.unique(classes)))
            elif classes is not None and not np.array_equal(self.classes_, np.unique(classes)):
                raise ValueError(f"classes={classes!r} is not the same as on the first "
                                 f"call, {self.classes_!r}")
        rng = check_random_state(self.random_state)
        transport = self._transport()
        uris = self._order(transport.list_objects(source), rng)
        blob = state.dumps(self, pending_classes=pending,
                           params={"random_state": self._seed(rng)})
        _, final, _, _ = self._train_pass(transport, uris, blob, data_options, sample_weight,
                                          with_objective=False)
        final.apply(self, params=False)
        return self

    def _discover(self, transport, uris, data_options):
        """Classes and their counts over all objects (one 'labels' GET each)."""
        counts = {}
        for uri, params, entries in self._calls(transport, uris, "labels", data_options, None):
            body = transport.run_group(entries, params)
            try:
                answer = json.loads(body)
                if answer.get("format") != training.LABELS_FORMAT:
                    raise ValueError("not a labels answer")
                pairs = list(zip(answer["labels"], answer["counts"], strict=True))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ObjectError(uri, f"the storlet's labels are malformed ({exc})") from None
            for label, count in pairs:
                counts[label] = counts.get(label, 0) + int(count)
        labels = sorted(counts)
        classes = np.array(labels)
        if classes.dtype.kind == "f" and np.all(classes == np.round(classes)):
            # text objects carry no type; integral labels become ints, as
            # the labels a user would have written
            classes = classes.astype(np.int64)
        return classes, np.array([counts[v] for v in labels])

    def remote_fit(self, source, classes=None, coef_init=None, intercept_init=None,
                   sample_weight=None, data_options=None):
        """Fit from scratch on the objects named by ``source``.

        Up to ``max_iter`` passes over all the objects, reshuffled for each
        pass, each object trained by its storlet with partial_fit semantics.
        Stopping follows scikit-learn's ``fit`` with these differences:

        * The objective (mean loss plus ``alpha`` times the penalty) is
          computed in the storlet for each mini-batch with the weights
          current before training on it, not before each sample.
        * For a multi-class classifier, scikit-learn stops each one-vs-rest
          problem on its own; here the mean of their objectives decides for
          all of them.
        * ``early_stopping=True`` holds out a ``validation_fraction`` of the
          rows of every object (a fixed pseudo-random draw per row, not a
          stratified split) and scores them with one extra GET per object
          after each pass.
        * ``learning_rate='adaptive'`` divides ``eta0`` by 5 between passes
          (scikit-learn does it within its loop, at the same moments).
        * The within-object shuffle seed changes with each pass.

        Parameters
        ----------
        source : str or list of str
        classes : array-like, default=None
            The classifier's classes; None finds them with one extra GET per
            object (numeric labels that are all integral become ints), which
            is also what ``class_weight='balanced'`` needs.
        coef_init : ndarray of shape (n_classes, n_features), default=None
        intercept_init : ndarray of shape (n_classes,), default=None
        sample_weight : dict of str to float, default=None
            Weight of each object's rows, keyed by object URI.
        data_options : dict, default=None

        Returns
        -------
        self : object
        """
        self._validate_params()
        self._more_validate_params()
        rng = check_random_state(self.random_state)
        transport = self._transport()
        uris = transport.list_objects(source)
        params = self._sk_params()
        if is_classifier(self):
            counts = None
            if classes is None or self.class_weight == "balanced":
                found, counts = self._discover(transport, uris, data_options)
                if classes is None:
                    classes = found
            classes = np.unique(classes)
            if self.class_weight == "balanced":
                seen = dict(zip(found.tolist(), counts.tolist()))
                missing = [c for c in classes.tolist() if not seen.get(c)]
                if missing:
                    raise ValueError(f"classes {missing} have no samples; "
                                     "'balanced' weights are undefined")
                total = sum(seen[c] for c in classes.tolist())
                params["class_weight"] = {c: total / (len(classes) * seen[c])
                                          for c in classes.tolist()}
            n_classes = len(classes)
        else:
            n_classes = 1
        init = state.KINDS[state._kind_of(self)](**params)
        if self.warm_start and getattr(self, "coef_", None) is not None:
            coef_init = self.coef_ if coef_init is None else coef_init
            intercept_init = self.intercept_ if intercept_init is None else intercept_init
        if coef_init is not None or intercept_init is not None:
            if coef_init is None:
                raise ValueError("intercept_init needs coef_init (to know n_features)")
            coef_init = np.asarray(coef_init, dtype=np.float64)
            n_features = coef_init.shape[-1]
            if is_classifier(self):
                init.classes_ = classes
            init.n_features_in_ = n_features
            init._allocate_parameter_mem(n_classes=n_classes, n_features=n_features,
                                         input_dtype=np.float64, coef_init=coef_init,
                                         intercept_init=intercept_init)
            if is_classifier(self) and n_classes == 2:
                # a fitted binary classifier's coef_ is (1, n_features), still
                # a view of _standard_coef when averaging
                init.coef_ = init.coef_.reshape(1, -1)
            init.t_ = 1.0
        pending = classes if is_classifier(self) else None

        holdout = None
        if self.early_stopping:
            holdout = (self.validation_fraction, int(rng.randint(_MAX_SEED)))
        eta = self.eta0
        best_loss, best_score, no_improvement = np.inf, -np.inf, 0
        blob = state.dumps(init, pending_classes=pending,
                           params={"random_state": self._seed(rng)})
        final = None
        n_iter = 0
        for epoch in range(self.max_iter):
            seed = int(rng.randint(_MAX_SEED)) if self.shuffle else self._seed(rng)
            blob = self._reparam(blob, {"random_state": seed, "eta0": eta})
            order = self._order(uris, rng)
            blob, final, objective, n = self._train_pass(
                transport, order, blob, data_options, sample_weight, holdout,
                with_objective=self.tol is not None and not self.early_stopping)
            n_iter = epoch + 1
            if self.early_stopping:
                score = self._score_pass(transport, uris, blob, data_options,
                                         sample_weight, holdout)
                if self.tol is not None and score < best_score + self.tol:
                    no_improvement += 1
                else:
                    no_improvement = 0
                best_score = max(best_score, score)
            elif self.tol is not None:
                loss = sum(objective) / (len(objective) * n)
                if self.tol is not None and loss > best_loss - self.tol:
                    no_improvement += 1
                else:
                    no_improvement = 0
                best_loss = min(best_loss, loss)
            if no_improvement >= self.n_iter_no_change:
                if self.learning_rate == "adaptive" and eta > 1e-6:
                    eta /= 5
                    no_improvement = 0
                else:
                    break
        final.attrs["n_iter_"] = n_iter
        final.apply(self, params=False)
        if self.tol is not None and n_iter == self.max_iter:
            warnings.warn("Maximum number of iteration reached before convergence. "
                          "Consider increasing max_iter to improve the fit.",
                          ConvergenceWarning)
        return self

    @staticmethod
    def _reparam(blob, params):
        current = state.loads(blob, name="local state")
        estimator = current.build()
        estimator.set_params(**params)
        return state.dumps(estimator, pending_classes=current.classes)

    def remote_score(self, source, sample_weight=None, data_options=None):
        """Mean accuracy (classifier) or R^2 (regressor) over the objects.

        Computed in the cluster: each storlet returns sums (weighted correct
        count and weight sum; or weighted SSE, weight sum, mean and sum of
        squared deviations of ``y``) that are combined here, so the result
        equals ``score`` on the concatenated data.

        Parameters
        ----------
        source : str or list of str
        sample_weight : dict of str to float, default=None
        data_options : dict, default=None

        Returns
        -------
        score : float
        """
        check_is_fitted(self)
        rng = check_random_state(self.random_state)
        transport = self._transport()
        uris = transport.list_objects(source)
        blob = state.dumps(self, params={"random_state": self._seed(rng)})
        return self._score_pass(transport, uris, blob, data_options, sample_weight)


class SGDClassifier(_RemoteSGDMixin, _SkSGDClassifier):
    __doc__ = (_SkSGDClassifier.__doc__ or "") + _REMOTE_DOC + _REMOTE_PARAMS_DOC

    _parameter_constraints = {
        **_SkSGDClassifier._parameter_constraints,
        **_REMOTE_CONSTRAINTS,
    }

    def __init__(self, loss="hinge", *, penalty="l2", alpha=0.0001, l1_ratio=0.15,
                 fit_intercept=True, max_iter=1000, tol=0.001, shuffle=True, verbose=0,
                 epsilon=0.1, n_jobs=None, random_state=None, learning_rate="optimal",
                 eta0=0.01, power_t=0.5, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=5, class_weight=None, warm_start=False, average=False,
                 connection=None, storlet=remote.STORLET_NAME, objects_per_call=None):
        super().__init__(
            loss=loss, penalty=penalty, alpha=alpha, l1_ratio=l1_ratio,
            fit_intercept=fit_intercept, max_iter=max_iter, tol=tol, shuffle=shuffle,
            verbose=verbose, epsilon=epsilon, n_jobs=n_jobs, random_state=random_state,
            learning_rate=learning_rate, eta0=eta0, power_t=power_t,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change, class_weight=class_weight,
            warm_start=warm_start, average=average)
        self.connection = connection
        self.storlet = storlet
        self.objects_per_call = objects_per_call


class SGDRegressor(_RemoteSGDMixin, _SkSGDRegressor):
    __doc__ = (_SkSGDRegressor.__doc__ or "") + _REMOTE_DOC + _REMOTE_PARAMS_DOC

    _parameter_constraints = {
        **_SkSGDRegressor._parameter_constraints,
        **_REMOTE_CONSTRAINTS,
    }

    def __init__(self, loss="squared_error", *, penalty="l2", alpha=0.0001,
                 l1_ratio=0.15, fit_intercept=True, max_iter=1000, tol=0.001,
                 shuffle=True, verbose=0, epsilon=0.1, random_state=None,
                 learning_rate="invscaling", eta0=0.01, power_t=0.25,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=5,
                 warm_start=False, average=False, connection=None,
                 storlet=remote.STORLET_NAME, objects_per_call=None):
        super().__init__(
            loss=loss, penalty=penalty, alpha=alpha, l1_ratio=l1_ratio,
            fit_intercept=fit_intercept, max_iter=max_iter, tol=tol, shuffle=shuffle,
            verbose=verbose, epsilon=epsilon, random_state=random_state,
            learning_rate=learning_rate, eta0=eta0, power_t=power_t,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change, warm_start=warm_start, average=average)
        self.connection = connection
        self.storlet = storlet
        self.objects_per_call = objects_per_call
