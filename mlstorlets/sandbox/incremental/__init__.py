"""Incremental scikit-learn estimators over objects: data formats, model state,
training and prediction."""
