"""Incremental SGD over objects: data formats, model state, training."""
