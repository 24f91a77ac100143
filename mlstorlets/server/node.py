"""Configure a Swift proxy or object node to run storlets.

What an operator does on every node of an existing cluster, and what the
embedded cluster does to its own servers, is this same code: add the
upstream ``storlet_handler`` middleware to the server's pipeline, write the
storlet gateway configuration, and the internal client configuration the
middleware needs.  ``mlstorlets node-config`` is its command line.

The server's configuration is the operator's file: it is edited as text,
line by line, so that its comments, order and layout stay as they were.
Only the ``pipeline`` value of ``[pipeline:main]`` changes in place (the
project's names are inserted between the operator's, and only they are
taken out again), the proxy's ``node_timeout`` is set next to a comment that
records what it was, and the project's ``[filter:...]`` sections are
appended at the end.  So :func:`plan_remove` can give back the file as it
was, byte for byte, and a second :func:`plan_configure` with the same
arguments changes nothing.
"""

import configparser
import difflib
import io
import os
import re
import shutil

from mlstorlets.sandbox import protocol

ROLES = ("proxy", "object")
GATEWAYS = ("bubblewrap", "docker", "podman")
STORLET_CONTAINERS = {
    "storlet_container": "storlet",
    "storlet_dependency": "dependency",
    "storlet_logcontainer": "log",
}
# Under tempauth the storlet ACL code reads keystone's user name header;
# this filter provides it from REMOTE_USER (see mlstorlets.server.middleware).
USER_NAME_FILTER = "storlet_user_name"
# Performs copies through a storlet so that a failure writes nothing.
COPY_FILTER = "storlet_copy"
# Keeps a failing storlet from error-limiting its object server.
FAILURE_FILTER = "storlet_failure"
# Answers the storlet middleware's HEAD of the storlet object from memcache.
CACHE_FILTER = "storlet_cache"
# Fails an invocation whose extra resource cannot be read.
RESOURCES_FILTER = "storlet_extra_resources"
# Lets only a reseller admin enable storlets on an account.
ENABLE_FILTER = "storlet_enable"
# Marks the invocations a storlet proxy checked; object servers run no other.
ORIGIN_FILTER = "storlet_origin"
AUTH_FILTERS = ("tempauth", "keystoneauth")
GiB = 1024**3
# Limits every sandbox gets unless configured otherwise (0 lifts one).
# Upstream's names where upstream has the option; see
# mlstorlets.server.gateway.bubblewrap for how each is enforced there.
SANDBOX_LIMITS = {
    # Memory of the whole sandbox, its tmpfs included, where cgroups are
    # usable; and address space of each of its processes (a daemon with
    # numpy, OpenCV and scikit-learn loaded maps a large part of it).
    "container_mem_limit": str(4 * GiB),
    # Processes and threads of one sandbox (an idle daemon has about 10).
    "container_pids_limit": "256",
    # One core per sandbox (quota / period), in its cgroup.
    "container_cpu_period": "100000",
    "container_cpu_quota": "100000",
    # A cgroup per sandbox when the host has usable cgroups (v2, or v1 with
    # the memory, pids, cpu, cpuacct and cpuset hierarchies); 'off' leaves
    # the rlimits alone.  Their parent, below each hierarchy's root:
    "sandbox_cgroups": "auto",
    "cgroup_parent": "mlstorlets",
    # System calls no storlet needs refused (mlstorlets.server.gateway.seccomp).
    "sandbox_seccomp": "on",
    # CPU-seconds of one sandbox process over its life: a backstop behind
    # storlet_timeout, which bounds each request.
    "sandbox_cpu_time_limit": "3600",
    # Any file a storlet writes, and the whole of its private /tmp, in bytes
    # and in files.
    "sandbox_file_size_limit": str(GiB),
    "sandbox_tmp_size": str(GiB),
    "sandbox_tmp_inodes": "65536",
}
OUR_FILTERS = {
    USER_NAME_FILTER: "mlstorlets.server.middleware.user_name:filter_factory",
    COPY_FILTER: "mlstorlets.server.middleware.storlet_copy:filter_factory",
    FAILURE_FILTER: "mlstorlets.server.middleware.storlet_failure:filter_factory",
    CACHE_FILTER: "mlstorlets.server.middleware.storlet_cache:filter_factory",
    RESOURCES_FILTER: "mlstorlets.server.middleware.extra_resources:filter_factory",
    ENABLE_FILTER: "mlstorlets.server.middleware.storlet_enable:filter_factory",
    ORIGIN_FILTER: "mlstorlets.server.middleware.storlet_origin:filter_factory",
}
# Upstream's storlet_handler filter, which also takes a request body as a
# storlet input and runs extra resources where they are
# (mlstorlets.server.middleware.storlet_handler).
HANDLER_FACTORY = "mlstorlets.server.middleware.storlet_handler:filter_factory"
# Seconds a storlet object's metadata is kept in memcache (0: not at all).
STORLET_CACHE_TIME = "10"


class ConfigError(ValueError):
    """A node's Swift configuration that storlets cannot be added to, or an
    option out of its range: the operator's to fix, nothing was written."""


def insert_into_pipeline(pipeline, role):
    """Return ``pipeline`` with the storlet middleware in its place.

    In a proxy it goes after authentication and before ``copy`` (so that a
    COPY or a PUT with ``X-Copy-From`` runs the storlet on the GET of the
    source), preceded by :mod:`mlstorlets.server.middleware.storlet_copy`; in an
    object server, right before ``object-server``, preceded by
    :mod:`mlstorlets.server.middleware.storlet_origin` and
    :mod:`mlstorlets.server.middleware.storlet_failure`.

    >>> insert_into_pipeline('catch_errors tempauth copy proxy-server',
    ...                      'proxy')  # doctest: +NORMALIZE_WHITESPACE
    'catch_errors tempauth storlet_user_name storlet_enable storlet_copy
     storlet_handler storlet_origin storlet_extra_resources storlet_cache copy
     proxy-server'
    """
    names = [n for n in pipeline.split() if n != "storlet_handler" and n not in OUR_FILTERS]
    if role == "object":
        if names[-1] != "object-server":
            raise ConfigError("an object pipeline must end with object-server")
        return " ".join(
            names[:-1] + [ORIGIN_FILTER, FAILURE_FILTER, "storlet_handler", "object-server"]
        )
    if role != "proxy":
        raise ConfigError("role must be one of %s" % (ROLES,))
    if "copy" not in names:
        raise ConfigError(
            "the proxy pipeline has no copy middleware; storlets need it for copy semantics"
        )
    auth = [i for i, n in enumerate(names) if n in AUTH_FILTERS]
    if not auth:
        raise ConfigError("the proxy pipeline has no tempauth or keystoneauth")
    at = auth[-1] + 1
    if at > names.index("copy"):
        raise ConfigError("authentication must come before copy")
    added = [
        ENABLE_FILTER,
        COPY_FILTER,
        "storlet_handler",
        ORIGIN_FILTER,
        RESOURCES_FILTER,
        CACHE_FILTER,
    ]
    if names[auth[-1]] == "tempauth":
        added.insert(0, USER_NAME_FILTER)
    return " ".join(names[:at] + added + names[at:])


def datagram_limit(agent):
    """Bytes of an invocation's SBus datagram that ``agent`` receives:
    libsbus's buffer for upstream's daemon, more for the project's own."""
    if agent == "persistent":
        return protocol.AGENT_DATAGRAM_LIMIT
    return protocol.SBUS_DATAGRAM_LIMIT


def gateway_options(host_root, gateway="bubblewrap", **extra):
    """The ``[DEFAULT]`` options of the storlet gateway configuration."""
    if gateway not in GATEWAYS:
        raise ConfigError("gateway must be one of %s" % (GATEWAYS,))
    options = {
        "host_root": host_root,
        "cache_dir": os.path.join(host_root, "cache", "scopes"),
        "log_dir": os.path.join(host_root, "logs", "scopes"),
        "storlets_dir": os.path.join(host_root, "storlets", "scopes"),
        "pipes_dir": os.path.join(host_root, "pipes", "scopes"),
        "restart_linux_container_timeout": "10",
        "storlet_timeout": "40",
        "storlet_daemon_factory_debug_level": "INFO",
        "storlet_daemon_debug_level": "INFO",
        "default_container_image_name": "mlstorlets-sandbox",
    }
    if gateway == "bubblewrap":
        options.update(SANDBOX_LIMITS)
    else:
        options.update((k, v) for k, v in SANDBOX_LIMITS.items() if k.startswith("container_"))
    options.update({k: str(v) for k, v in extra.items() if v is not None})
    return options


def internal_client_conf(swift_dir, memcache_servers):
    """The internal client pipeline the storlet middleware builds."""
    return {
        "DEFAULT": {"swift_dir": swift_dir},
        "pipeline:main": {"pipeline": "catch_errors proxy-logging cache proxy-server"},
        "app:proxy-server": {"use": "egg:swift#proxy"},
        "filter:cache": {"use": "egg:swift#memcache", "memcache_servers": memcache_servers},
        "filter:catch_errors": {"use": "egg:swift#catch_errors"},
        "filter:proxy-logging": {"use": "egg:swift#proxy_logging"},
    }


# The copy of a server's configuration kept before node-config first
# changes it; --remove deletes it once the file is back to it.
BACKUP_SUFFIX = ".mlstorlets-orig"
# Swift's own default (swift.proxy.server), when no configuration sets it.
SWIFT_NODE_TIMEOUT = "10"
# Written above the node_timeout node-config sets: what --remove puts back,
# and the value that tells it the option is still node-config's.
TIMEOUT_MARK = "# mlstorlets node-config set node_timeout = %s (storlet_timeout %s s + 5); it was%s"
_TIMEOUT_MARK = re.compile(
    r"# mlstorlets node-config set node_timeout = (?P<set>\S+) \([^)]*\); "
    r"it was(?:: (?P<was>.*)| unset)$"
)
# The gateway's and the internal client's files are node-config's own.
OWN_FILE_HEADER = (
    "# Written by mlstorlets node-config for %s:\n"
    "# each run writes it anew, --remove deletes it (deploy/README.md).\n"
)
_HEADER = re.compile(r"\[(?P<name>.+)\]")
# The separator's trailing blanks, not a newline: a value may start on the
# next line.
_OPTION = re.compile(r"(?P<key>[^=:\s][^=:]*?)[ \t]*[=:][ \t]*")
_TOKEN = re.compile(r"\S+")


class Change:
    """One file as it is and as node-config leaves it.

    Parameters
    ----------
    path : str
    old, new : str or None
        The file's text before and after; None where it does not exist
        (``new`` None: the file is deleted).
    notes : list of str
        What changes, in words.
    backup : bool
        The operator's file: a copy is kept before the first change.
    """

    def __init__(self, path, old, new, notes=(), backup=False):
        self.path = path
        self.old = old
        self.new = new
        self.notes = list(notes)
        self.backup = backup

    @property
    def changed(self):
        return self.old != self.new

    def diff(self):
        """The change as a unified diff (empty when there is none)."""
        lines = difflib.unified_diff(
            _diff_lines(self.old),
            _diff_lines(self.new),
            fromfile="/dev/null" if self.old is None else self.path,
            tofile="/dev/null" if self.new is None else self.path,
        )
        return "".join(lines)


def _diff_lines(text):
    lines = (text or "").splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def configure_node(
    server_conf,
    role,
    conf_dir,
    host_root,
    gateway="bubblewrap",
    memcache_servers="127.0.0.1:11211",
    execute_on_proxy=False,
    name="",
    storlet_cache_time=STORLET_CACHE_TIME,
    **gateway_extra,
):
    """Add storlets to one Swift server's configuration file, in place.

    :func:`plan_configure` applied as it is, without a backup (the embedded
    cluster writes the server's configuration itself).

    Returns
    -------
    dict
        Paths of the files written.
    """
    changes = plan_configure(
        server_conf,
        role,
        conf_dir,
        host_root,
        gateway=gateway,
        memcache_servers=memcache_servers,
        execute_on_proxy=execute_on_proxy,
        name=name,
        storlet_cache_time=storlet_cache_time,
        **gateway_extra,
    )
    apply(changes)
    return dict(
        zip(("server_conf", "gateway_conf", "internal_client_conf"), (c.path for c in changes))
    )


def plan_configure(
    server_conf,
    role,
    conf_dir,
    host_root,
    gateway="bubblewrap",
    memcache_servers="127.0.0.1:11211",
    execute_on_proxy=False,
    name="",
    storlet_cache_time=STORLET_CACHE_TIME,
    **gateway_extra,
):
    """What adding storlets to one Swift server's configuration changes.

    Nothing is written: :func:`apply` does that.

    Parameters
    ----------
    server_conf : str
        Path of the server's paste configuration (``proxy-server.conf`` or
        ``object-server.conf``).
    role : {'proxy', 'object'}
    conf_dir : str
        Where to write ``storlet-gateway.conf`` and
        ``storlet-internal-client.conf`` for this server.
    host_root : str
        The gateway's state: storlet cache, pipes and logs of the sandboxes.
    gateway : {'bubblewrap', 'docker', 'podman'}
    memcache_servers : str
        For the internal client.
    execute_on_proxy : bool
        Run every storlet on the proxy (``storlet_execute_on_proxy``).
    name : str
        Suffix of the files written, where several servers share
        ``conf_dir`` (as in the embedded cluster).
    storlet_cache_time : str or float
        Seconds a proxy keeps a storlet object's metadata in memcache
        (:mod:`mlstorlets.server.middleware.storlet_cache`); 0 turns that off.
    **gateway_extra
        Further gateway options (see :mod:`mlstorlets.server.gateway.bubblewrap`).

    Returns
    -------
    list of Change
        The server configuration, the gateway configuration and the
        internal client configuration, in this order, changed or not.
    """
    if role not in ROLES:
        raise ConfigError("role must be one of %s" % (ROLES,))
    old = _read_text(server_conf)
    if old is None:
        raise ConfigError("no Swift server configuration at %s" % server_conf)
    conf = _Lines(old)
    swift_dir = conf.value("DEFAULT", "swift_dir") or "/etc/swift"
    gateway_conf, ic_conf = _own_files(conf_dir, name)
    options = gateway_options(host_root, gateway, **gateway_extra)
    options.update(STORLET_CONTAINERS)

    pipeline = _edit_pipeline(conf, server_conf, role).split()
    handler = {
        "paste.filter_factory": HANDLER_FACTORY,
        "execution_server": role,
        "storlet_gateway_module": gateway,
        "storlet_gateway_conf": gateway_conf,
        "internal_client_conf_path": ic_conf,
        "storlet_execute_on_proxy": str(bool(execute_on_proxy)).lower(),
    }
    handler.update(STORLET_CONTAINERS)
    sections = {"filter:storlet_handler": handler}
    for filter_name, factory in OUR_FILTERS.items():
        if filter_name not in pipeline:
            continue
        section = {"paste.filter_factory": factory}
        if filter_name == CACHE_FILTER:
            section.update(
                storlet_container=STORLET_CONTAINERS["storlet_container"],
                cache_time=str(storlet_cache_time),
            )
        if filter_name == COPY_FILTER:
            # Published in /info: what the sandboxes' agent receives.
            # Where a storlet's log goes when the request asks for it.
            section["storlet_logcontainer"] = STORLET_CONTAINERS["storlet_logcontainer"]
            section["sbus_datagram_limit"] = str(
                datagram_limit(gateway_extra.get("storlet_agent", "persistent"))
                if gateway == "bubblewrap"
                else protocol.SBUS_DATAGRAM_LIMIT
            )
        if filter_name == RESOURCES_FILTER:
            section.update(
                (k, v) for k, v in STORLET_CONTAINERS.items() if k != "storlet_logcontainer"
            )
        if filter_name == ORIGIN_FILTER:
            section["execution_server"] = role
        sections["filter:" + filter_name] = section
    # A filter of ours the pipeline no longer has (tempauth replaced by
    # keystone) goes with its name.
    for section in _own_sections():
        if section not in sections:
            conf.drop_section(section)
    for section, values in sections.items():
        conf.put_section(section, values)
    reason = None
    if role == "proxy":
        reason = _cover_storlet_timeout(conf, server_conf, gateway_extra.get("storlet_timeout"))

    new = conf.text
    notes = _describe(old, new, server_conf)
    if reason and _value(old, "app:proxy-server", "node_timeout") != _value(
        new, "app:proxy-server", "node_timeout"
    ):
        notes = [
            n + reason if n.startswith("[app:proxy-server] node_timeout") else n for n in notes
        ]
    if _value(new, "pipeline:main", "pipeline").split() != pipeline:
        raise ConfigError("%s: the pipeline could not be edited in place" % server_conf)
    return [
        Change(server_conf, old, new, notes, backup=True),
        Change(
            gateway_conf,
            _read_text(gateway_conf),
            OWN_FILE_HEADER % server_conf + _render({"DEFAULT": options}),
        ),
        Change(
            ic_conf,
            _read_text(ic_conf),
            OWN_FILE_HEADER % server_conf
            + _render(internal_client_conf(swift_dir, memcache_servers)),
        ),
    ]


def plan_remove(server_conf, conf_dir=None, name=""):
    """What taking storlets out of one Swift server's configuration changes.

    The project's names leave the pipeline and their sections the file;
    ``node_timeout`` is put back as it was if it still has the value
    node-config gave it; the gateway and internal client files the
    ``storlet_handler`` section names are deleted.  What node-config added
    to a file goes, so a file that no one else edited since is again as it
    was before, byte for byte.

    Parameters
    ----------
    server_conf : str
    conf_dir, name : str
        Where :func:`plan_configure` wrote the gateway and internal client
        files, for a server configuration that no longer names them
        (``conf_dir`` defaults to the server configuration's directory).

    Returns
    -------
    list of Change
        The server configuration first, then each file to delete.
    """
    old = _read_text(server_conf)
    if old is None:
        raise ConfigError("no Swift server configuration at %s" % server_conf)
    conf = _Lines(old)
    paths = _own_files(conf_dir or os.path.dirname(server_conf), name)
    named = (
        conf.value("filter:storlet_handler", "storlet_gateway_conf"),
        conf.value("filter:storlet_handler", "internal_client_conf_path"),
    )
    if any(named):
        paths = [p for p in named if p]
    if conf.option("pipeline:main", "pipeline"):
        _edit_pipeline(conf, server_conf, None)
    for section in _own_sections():
        conf.drop_section(section)
    kept = _restore_node_timeout(conf)
    new = conf.text
    notes = _describe(old, new, server_conf)
    if kept:
        notes.append(kept)
    changes = [Change(server_conf, old, new, notes, backup=True)]
    for path in paths:
        text = _read_text(path)
        if text is not None:
            changes.append(Change(path, text, None))
    return changes


def apply(changes, backup=False):
    """Write (or delete) every file of ``changes`` that changes.

    Parameters
    ----------
    changes : list of Change
    backup : bool
        Before the first change to a server configuration, keep a copy of
        it beside it (:data:`BACKUP_SUFFIX`); a copy already there is the
        file as it was before node-config, and is kept, unless the file is
        back to it.

    Returns
    -------
    list of str
        What was done, a line each.
    """
    done = []
    for change in changes:
        if not change.changed:
            continue
        copy = change.path + BACKUP_SUFFIX
        if backup and change.backup and not os.path.exists(copy):
            shutil.copy2(change.path, copy)
            _own_like(copy, change.path)
            done.append("%s: copied to %s" % (change.path, copy))
        done.extend("%s: %s" % (change.path, note) for note in change.notes)
        if change.new is None:
            os.unlink(change.path)
            done.append("deleted %s" % change.path)
            continue
        _write_text(change.path, change.new)
        done.append("%s %s" % ("created" if change.old is None else "wrote", change.path))
        if backup and change.backup and _read_text(copy) == change.new:
            os.unlink(copy)
            done.append("%s is again as in %s: deleted the copy" % (change.path, copy))
    return done


class _Lines:
    """A configuration file's lines, edited in place.

    Sections and options as :mod:`configparser` reads them: a header or an
    option starts at the first column; a line that starts with blanks
    continues the option above it; ``#`` and ``;`` start a comment.
    """

    def __init__(self, text):
        self.lines = text.splitlines(keepends=True)

    @property
    def text(self):
        return "".join(self.lines)

    def section(self, name):
        """The index of ``[name]`` and the index after its last option line,
        or None.

        The comments and blank lines after the last option are left out:
        they are as likely to belong to what follows.
        """
        header = end = None
        for i, line in enumerate(self.lines):
            kind = _kind(line)
            if kind == "header":
                if header is not None:
                    break
                if _HEADER.match(line.strip()).group("name") == name:
                    header, end = i, i + 1
            elif header is not None and kind in ("option", "continuation"):
                end = i + 1
        return None if header is None else (header, end)

    def option(self, section, key):
        """The index of ``key``'s line in ``section`` and the index after its
        continuation lines, or None."""
        found = self.section(section)
        if found is None:
            return None
        for i in range(found[0] + 1, found[1]):
            line = self.lines[i]
            if _kind(line) == "option" and _key(line) == key.lower():
                end = i + 1
                while end < found[1] and _kind(self.lines[end]) == "continuation":
                    end += 1
                return i, end
        return None

    def value(self, section, key):
        at = self.option(section, key)
        if at is None:
            return None
        text = "".join(self.lines[at[0] : at[1]])
        return " ".join(text[_OPTION.match(text).end() :].split())

    def set(self, section, key, value, comment=None):
        """Set ``key``: its line replaced where it is, or added after the
        section's last option."""
        new = ([comment + "\n"] if comment else []) + ["%s = %s\n" % (key, value)]
        at = self.option(section, key)
        if at is not None:
            self.lines[at[0] : at[1]] = new
        else:
            end = self.section(section)[1]
            self.lines[end:end] = new

    def put_section(self, name, values):
        """Set ``values`` in ``[name]``, appended at the end of the file
        (after a blank line) where there is none."""
        if self.section(name) is None:
            if self.lines and not self.lines[-1].endswith("\n"):
                self.lines[-1] += "\n"
            self.lines.extend(["\n", "[%s]\n" % name])
        for key, value in values.items():
            if self.value(name, key) != value:
                self.set(name, key, value)

    def drop_section(self, name):
        """Delete ``[name]``, its options and the blank line before it."""
        found = self.section(name)
        if found is None:
            return
        start, end = found
        if start and not self.lines[start - 1].strip():
            start -= 1
        del self.lines[start:end]


def _kind(line):
    stripped = line.strip()
    if not stripped:
        return "blank"
    if stripped[0] in "#;":
        return "comment"
    if line[0].isspace():
        return "continuation"
    if _HEADER.match(stripped):
        return "header"
    return "option"


def _key(line):
    found = _OPTION.match(line)
    return found.group("key").lower() if found else None


def _own_sections():
    return ["filter:storlet_handler"] + ["filter:" + name for name in OUR_FILTERS]


def _own_files(conf_dir, name):
    suffix = "-" + name if name else ""
    return [
        os.path.join(conf_dir, "storlet-gateway%s.conf" % suffix),
        os.path.join(conf_dir, "storlet-internal-client%s.conf" % suffix),
    ]


def _edit_pipeline(conf, server_conf, role):
    """Put the project's names in place in the pipeline's text (``role``
    None: take them out), the operator's names and spacing untouched.

    Returns the new pipeline.
    """
    at = conf.option("pipeline:main", "pipeline")
    if at is None:
        raise ConfigError("%s has no pipeline in [pipeline:main]" % server_conf)
    text = "".join(conf.lines[at[0] : at[1]])
    head = _OPTION.match(text).end()
    value = _take_out(text[head:])
    if role is not None:
        names = insert_into_pipeline(value, role).split()
        tokens = list(_TOKEN.finditer(value))
        first = next(i for i, n in enumerate(names) if n == "storlet_handler" or n in OUR_FILTERS)
        block = " ".join(names[first : first + len(names) - len(tokens)])
        if first:
            end = tokens[first - 1].end()
            value = value[:end] + " " + block + value[end:]
        else:
            start = tokens[0].start()
            value = value[:start] + block + " " + value[start:]
    conf.lines[at[0] : at[1]] = (text[:head] + value).splitlines(keepends=True)
    return " ".join(value.split())


def _take_out(value):
    """``value`` without the project's names, each with the blanks that
    :func:`_edit_pipeline` put beside it (a name alone on its line with its
    line)."""
    ours = set(OUR_FILTERS) | {"storlet_handler"}
    for token in reversed(list(_TOKEN.finditer(value))):
        if token.group() not in ours:
            continue
        start, end = token.span()
        line_start = value.rfind("\n", 0, start) + 1
        line_end = value.find("\n", end)
        line_end = len(value) if line_end < 0 else line_end
        before, after = value[line_start:start], value[end:line_end]
        if line_start and not before.strip() and not after.strip():
            start, end = line_start, min(line_end + 1, len(value))
        elif before.strip():
            start -= len(before) - len(before.rstrip())
        else:
            end += len(after) - len(after.lstrip())
        value = value[:start] + value[end:]
    return value


def _cover_storlet_timeout(conf, server_conf, storlet_timeout=None):
    """Let the proxy wait for a storlet as long as the storlet may run.

    A storlet on an object server sends its first byte only when it has its
    output; with Swift's default ``node_timeout`` (10 s) the proxy gives up
    on the node before, and retries the storlet on the next one.  The value
    is raised only, in ``[app:proxy-server]``, below a comment recording
    the line it replaces.

    Returns
    -------
    str
        Why, to follow the note of the change.
    """
    storlet_timeout = float(storlet_timeout or gateway_options("")["storlet_timeout"])
    needed = storlet_timeout + 5
    section = "app:proxy-server"
    if conf.section(section) is None:
        raise ConfigError("%s has no [%s]" % (server_conf, section))
    # The operator's value, not one node-config set before, is the base.
    _restore_node_timeout(conf)
    current = (
        conf.value(section, "node_timeout")
        or conf.value("DEFAULT", "node_timeout")
        or SWIFT_NODE_TIMEOUT
    )
    try:
        if float(current) >= needed:
            return None
    except ValueError:
        raise ConfigError("%s: node_timeout %r is not a number" % (server_conf, current))
    at = conf.option(section, "node_timeout")
    was = ": " + conf.lines[at[0]].rstrip("\n") if at else " unset"
    conf.set(
        section,
        "node_timeout",
        "%g" % needed,
        comment=TIMEOUT_MARK % ("%g" % needed, "%g" % storlet_timeout, was),
    )
    return (
        ": a storlet on an object server sends its first byte only when its output "
        "is ready, and the proxy must wait that long (storlet_timeout %g s + 5)" % storlet_timeout
    )


def _restore_node_timeout(conf):
    """Put back the ``node_timeout`` line node-config replaced, if the value
    is still the one it set.

    Returns
    -------
    str or None
        Why the value was left, when it was.
    """
    section = "app:proxy-server"
    found = conf.section(section)
    if found is None:
        return None
    for i in range(found[0] + 1, found[1]):
        mark = _TIMEOUT_MARK.match(conf.lines[i].rstrip("\n"))
        if mark is None:
            continue
        at = conf.option(section, "node_timeout")
        if at is None or at[0] != i + 1:
            del conf.lines[i]
            return None
        if conf.value(section, "node_timeout") != mark.group("set"):
            # Changed since: the operator's value now.
            del conf.lines[i]
            return "node_timeout was changed after node-config set it: kept"
        was = mark.group("was")
        conf.lines[i : at[1]] = [] if was is None else [was + "\n"]
        return None
    return None


def _describe(old, new, path):
    """What changes between two texts of a configuration, in words."""
    if old == new:
        return []
    before, after = _parse(old, path), _parse(new, path)
    notes = []
    for section in after.sections():
        if not before.has_section(section):
            notes.append("added [%s]" % section)
            continue
        was = dict(before.items(section))
        for key, value in after.items(section):
            if key not in was:
                notes.append("[%s] %s = %s (was unset)" % (section, key, value))
            elif key == "pipeline" and was[key] != value:
                names, old_names = value.split(), was[key].split()
                added = [n for n in names if n not in old_names]
                gone = [n for n in old_names if n not in names]
                how = ["added " + " ".join(added)] if added else []
                how += ["took out " + " ".join(gone)] if gone else []
                notes.append(
                    "[%s] pipeline = %s (%s)" % (section, value, ", ".join(how) or "reordered")
                )
            elif was[key] != value:
                notes.append("[%s] %s: %s -> %s" % (section, key, was[key], value))
        for key in was:
            if not after.has_option(section, key):
                notes.append("[%s] %s = %s removed" % (section, key, was[key]))
    notes.extend("removed [%s]" % s for s in before.sections() if not after.has_section(s))
    return notes


def _value(text, section, key):
    return _Lines(text).value(section, key)


def _parse(text, path):
    # [DEFAULT] as a section like any other: what is in it, not what the
    # others inherit from it.
    parser = configparser.RawConfigParser(default_section="\0", strict=False)
    parser.optionxform = str
    try:
        parser.read_string(text, path)
    except configparser.Error as err:
        raise ConfigError("%s cannot be read: %s" % (path, err))
    return parser


def _parser(sections=None):
    # Swift's confs are case-sensitive and use %-free values: RawConfigParser
    # with optionxform=str round-trips them.
    parser = configparser.RawConfigParser()
    parser.optionxform = str
    for name, values in (sections or {}).items():
        if name != "DEFAULT" and not parser.has_section(name):
            parser.add_section(name)
        for key, value in values.items():
            parser.set(name, key, value)
    return parser


def _render(sections):
    out = io.StringIO()
    _parser(sections).write(out)
    return out.getvalue()


def write_conf(path, sections):
    """Write a Swift-style configuration file from a dict of sections."""
    _write_text(path, _render(sections))


def _read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write_text(path, text):
    # Through a symlink to the file, and with its mode and owner: a proxy's
    # configuration holds tempauth's keys.
    path = os.path.realpath(path)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    if os.path.exists(path):
        _own_like(tmp, path)
    os.replace(tmp, path)


def _own_like(path, model):
    st = os.stat(model)
    os.chmod(path, st.st_mode & 0o7777)
    try:
        os.chown(path, st.st_uid, st.st_gid)
    except PermissionError:
        # Not root: the file is the caller's, as the model must be.
        pass
