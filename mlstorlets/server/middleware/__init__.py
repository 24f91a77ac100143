"""WSGI middleware that mlstorlets adds to Swift pipelines."""
