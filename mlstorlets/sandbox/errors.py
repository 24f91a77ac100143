"""Exceptions shared by the library, the storlets and the client."""


class ObjectError(Exception):
    """An object that cannot be processed.

    Not a ``ValueError``: a caller's ``except ValueError`` around a call
    (an argument it passed) must not swallow a bad object, nor the client's
    store and storlet failures built on this class.

    Carries the object's name and the reason, so that every layer (a storlet
    in the cluster, the batch runner, the CLI) can report precisely which
    object failed and why.

    Parameters
    ----------
    name : str
        The object's name (``container/object`` or a URI); may be empty when
        the caller does not know it, in which case ``reason`` stands alone.
    reason : str
        What is wrong with it, in words a user can act on.
    """

    def __init__(self, name, reason):
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}" if name else reason)


class ParameterError(ObjectError):
    """A storlet parameter's value that the storlet cannot use: the
    caller's mistake, the same for every object, so a batch stops at the
    first (the protocol carries ``parameter``).

    Parameters
    ----------
    name : str
        The object the call was over.
    parameter : str
        The parameter's name.
    reason : str
    """

    def __init__(self, name, parameter, reason):
        super().__init__(name, reason)
        self.parameter = parameter
