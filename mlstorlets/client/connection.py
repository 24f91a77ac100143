"""The Swift connection a client of mlstorlets uses.

Credentials are read exactly as the ``swift`` command line reads them, by
swiftclient's own option code rather than a copy of it: ``ST_AUTH``,
``ST_USER`` and ``ST_KEY`` (v1), or Keystone's ``OS_*`` variables, with the
authentication version from ``ST_AUTH_VERSION``, ``OS_AUTH_VERSION`` or
``OS_IDENTITY_API_VERSION`` (or guessed from the domain variables, as
``swift`` guesses it).
"""

import argparse
import os
import re
import threading

from mlstorlets.client.errors import UsageError

# swiftclient's option code reads its module's ``environ``; a caller's own
# environment is swapped in for the time of one parse.
_ENVIRON_LOCK = threading.Lock()


def swift_options(environ=None):
    """The ``swift`` command line's options for ``environ``.

    Parameters
    ----------
    environ : mapping, optional
        Default ``os.environ``.

    Returns
    -------
    dict
        The options swiftclient's ``get_conn`` takes (``auth``,
        ``auth_version``, ``os_options``...).

    Raises
    ------
    ValueError
        When the environment does not configure a complete authentication;
        the message is the one ``swift`` prints.
    """
    from swiftclient import shell

    parser = argparse.ArgumentParser(add_help=False)
    with _ENVIRON_LOCK:
        saved = shell.environ
        shell.environ = os.environ if environ is None else environ
        try:
            shell.add_default_args(parser)
        finally:
            shell.environ = saved
    try:
        # With no command, swift's parse_args looks at '-h' (its own
        # default); a parser without help ignores it.
        options, _ = shell.parse_args(parser, ["-h"])
    except SystemExit as exc:
        raise UsageError(
            "no usable Swift credentials: %s" % _without_flags(str(exc.code))
        ) from None
    return options


def _without_flags(message):
    """swiftclient's complaint without the ``swift`` command's flags
    (``-A``, ``--os-password``...), which ``mlstorlets`` does not take."""
    message = " ".join(message.split())
    message = re.sub(r" to be set or overridden with[^.]*(\.|$)", ".", message)
    message = message.replace(' Note: adding "-V 2" is necessary for this.', "")
    return message + ' For the embedded cluster: eval "$(mlstorlets aio env)".'


def connection_from_environment(environ=None):
    """A swiftclient Connection configured like the ``swift`` command line.

    Parameters
    ----------
    environ : mapping, optional
        Default ``os.environ``.

    Raises
    ------
    ValueError
        When the environment configures no complete authentication.
    """
    from swiftclient import service

    return service.get_conn(swift_options(environ))
