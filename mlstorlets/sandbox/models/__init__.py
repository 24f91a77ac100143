"""Applying a user's own ONNX model next to the data.

:mod:`~mlstorlets.sandbox.models.graph` checks a model object and builds
its runtime session (bounded, cached per worker by content);
:mod:`~mlstorlets.sandbox.models.layout` says how images go in and come
out, from the model's metadata properties;
:mod:`~mlstorlets.sandbox.models.tasks` is what the ``apply_model``
storlet computes, over images and tables.
"""
