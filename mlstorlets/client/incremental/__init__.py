"""Incremental scikit-learn estimators trained and applied next to the data.

Each class here is scikit-learn's own, with the remote methods of
:class:`~mlstorlets.client.incremental.mixin.RemoteIncrementalMixin`:
``remote_partial_fit``, ``remote_fit``, ``remote_score``, ``remote_predict``
(and ``remote_predict_proba``, ``remote_decision_function``,
``remote_transform`` where the estimator has them), and ``to_sklearn``.
Any other estimator of :data:`mlstorlets.sandbox.incremental.state.KINDS`
gets them the same way::

    class RemotePerceptron(RemoteIncrementalMixin, sklearn.linear_model.Perceptron):
        pass

:class:`Pipeline` is scikit-learn's ``Pipeline`` of incremental
transformers (:data:`~mlstorlets.sandbox.incremental.state.STEPS`: scalers
with ``partial_fit``) then one of these estimators, with the same remote
methods.
"""

from sklearn import cluster, linear_model, naive_bayes, neural_network, pipeline

from mlstorlets.client.incremental.mixin import REMOTE_DOC, RemoteIncrementalMixin

__all__ = [
    "RemoteIncrementalMixin",
    "SGDClassifier",
    "SGDRegressor",
    "MLPClassifier",
    "MLPRegressor",
    "MiniBatchKMeans",
    "MultinomialNB",
    "Pipeline",
]


class SGDClassifier(RemoteIncrementalMixin, linear_model.SGDClassifier):
    __doc__ = (linear_model.SGDClassifier.__doc__ or "") + REMOTE_DOC


class SGDRegressor(RemoteIncrementalMixin, linear_model.SGDRegressor):
    __doc__ = (linear_model.SGDRegressor.__doc__ or "") + REMOTE_DOC


class MLPClassifier(RemoteIncrementalMixin, neural_network.MLPClassifier):
    __doc__ = (neural_network.MLPClassifier.__doc__ or "") + REMOTE_DOC


class MLPRegressor(RemoteIncrementalMixin, neural_network.MLPRegressor):
    __doc__ = (neural_network.MLPRegressor.__doc__ or "") + REMOTE_DOC


class MiniBatchKMeans(RemoteIncrementalMixin, cluster.MiniBatchKMeans):
    __doc__ = (cluster.MiniBatchKMeans.__doc__ or "") + REMOTE_DOC


class MultinomialNB(RemoteIncrementalMixin, naive_bayes.MultinomialNB):
    __doc__ = (naive_bayes.MultinomialNB.__doc__ or "") + REMOTE_DOC


class Pipeline(RemoteIncrementalMixin, pipeline.Pipeline):
    __doc__ = (
        (pipeline.Pipeline.__doc__ or "")
        + """
    Remote methods
    --------------
    The steps are incremental transformers (``StandardScaler``,
    ``MaxAbsScaler``, ``MinMaxScaler``) then one incremental estimator; the
    final estimator's parameters (``max_iter``, ``tol``, ``random_state``,
    ``verbose``...) rule the remote methods as they would for it alone.

    ``remote_fit`` trains each transformer in turn, one pass of its
    ``partial_fit`` over the objects in their order, each on what the steps
    before it output, then the estimator's epochs on what the last
    transformer outputs: locally, ``scaler.partial_fit`` over every
    mini-batch, then ``estimator.partial_fit(scaler.transform(batch))``.
    ``remote_partial_fit`` trains every step on each mini-batch in turn,
    each step's output feeding the next.  Sample weights go to each step
    whose ``partial_fit`` takes them.  ``remote_score`` and
    ``remote_predict`` apply the whole pipeline.
"""
    )
