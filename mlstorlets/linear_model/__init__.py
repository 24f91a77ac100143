"""Linear models trained by storlets inside Swift, next to the data."""

from mlstorlets.linear_model._sgd import SGDClassifier, SGDRegressor

__all__ = ["SGDClassifier", "SGDRegressor"]
