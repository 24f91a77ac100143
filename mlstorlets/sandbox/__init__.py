"""What runs inside the storlet sandbox.

Computations, file formats and the storlet protocol.  This package imports
numpy, OpenCV, scikit-learn and skops, and nothing of Swift, boto3 or
eventlet: it is exactly the library that ``mlstorlets deploy`` uploads for
the storlets, and the client runs the same functions when a job cannot run
in the store.
"""
