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
"""

from sklearn import cluster, linear_model, naive_bayes, neural_network

from mlstorlets.client.incremental.mixin import REMOTE_DOC, RemoteIncrementalMixin

__all__ = [
    "RemoteIncrementalMixin",
    "SGDClassifier",
    "SGDRegressor",
    "MLPClassifier",
    "MLPRegressor",
    "MiniBatchKMeans",
    "MultinomialNB",
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
