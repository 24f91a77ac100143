"""Linear models trained by storlets inside Swift, next to the data."""

from mlstorlets.client.linear_model._sgd import SGDClassifier, SGDRegressor

__all__ = ["SGDClassifier", "SGDRegressor"]
