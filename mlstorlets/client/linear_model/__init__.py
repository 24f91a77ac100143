"""scikit-learn's SGD estimators with remote methods (see
:mod:`mlstorlets.client.incremental`, where they live with the others)."""

from mlstorlets.client.incremental import SGDClassifier, SGDRegressor

__all__ = ["SGDClassifier", "SGDRegressor"]
