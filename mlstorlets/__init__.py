"""mlstorlets: machine learning inside an OpenStack Swift object store."""

__version__ = "0.1.0"
