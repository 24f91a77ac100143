"""What runs on the client: stores, the batch engine, pipelines, estimators
and the command line.

Client processes never import eventlet or the server code
(:mod:`mlstorlets.server`); they may import :mod:`mlstorlets.sandbox` to run a
storlet's computation locally.
"""
