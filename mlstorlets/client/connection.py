"""The Swift connection a client of mlstorlets uses."""


def connection_from_environment(environ=None):
    """A swiftclient Connection configured like the ``swift`` command line.

    Reads ``ST_AUTH``/``ST_USER``/``ST_KEY`` (v1 auth) or the ``OS_*``
    keystone variables, as swiftclient's own CLI does.

    Raises
    ------
    ValueError
        When the environment configures no authentication.
    """
    from swiftclient import service

    saved = service.environ
    try:
        if environ is not None:
            service.environ = environ
        options = service._build_default_global_options()
    finally:
        service.environ = saved
    if not (options.get("auth") or options.get("os_auth_url")
            or (options.get("os_storage_url") and options.get("os_auth_token"))):
        raise ValueError("no Swift credentials: set ST_AUTH, ST_USER and ST_KEY, or the "
                         "OS_* variables, or pass connection=")
    service.process_options(options)
    return service.get_conn(options)
