"""Names of objects and sets of objects, in any store mlstorlets reaches.

=====================================  ==================================
``swift://container/object``           an object of the default cluster
``s3://bucket/key``                    an object of an S3 endpoint
``file:///path``                       a local file (absolute path)
``dropbox://path``                     a file in a Dropbox account
``gdrive://path``                      a file in Google Drive
``/path``, ``path`` (no scheme)          a local file, as ``file://``
=====================================  ==================================

A name ending in ``/``, or naming a bare container, bucket or root, is a
prefix: the set of objects whose names start with it.  Names are taken
literally (no percent-decoding), as the ``swift`` command line does.

Every URI is validated as its store would validate the name, so that a name
the store would refuse is reported before any work, naming the URI.
"""

import dataclasses
import os
import posixpath
import re

from mlstorlets.client.errors import UsageError

SCHEME = "swift://"
SCHEMES = ("swift", "s3", "file", "dropbox", "gdrive")

# Swift's defaults (swift.common.constraints); a cluster may configure lower
# limits, which it then reports when a request exceeds them.
MAX_CONTAINER_NAME_LENGTH = 256
MAX_OBJECT_NAME_LENGTH = 1024
# S3: https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
MAX_KEY_LENGTH = 1024
S3_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


@dataclasses.dataclass(frozen=True)
class URI:
    """A parsed, validated URI.

    Attributes
    ----------
    scheme : str
        ``'swift'``, ``'s3'``, ``'file'``, ``'dropbox'`` or ``'gdrive'``.
    location : str
        The container or bucket; ``''`` for ``file``, ``dropbox`` and
        ``gdrive``, whose names start at the root.
    key : str
        The object's name inside ``location``, without a leading ``/`` for
        ``file``, ``dropbox`` and ``gdrive`` (``file:///a/b`` has key
        ``'a/b'``);
        ``''`` or a name ending in ``/`` is a prefix.
    """

    scheme: str
    location: str
    key: str

    @property
    def is_prefix(self):
        """True when the URI names a set of objects, not one."""
        return self.key == "" or self.key.endswith("/")

    def with_key(self, key):
        """The URI of ``key`` in the same store and location."""
        return dataclasses.replace(self, key=key)

    def __str__(self):
        if self.scheme == "file":
            return "file:///" + self.key
        if self.scheme in ("dropbox", "gdrive"):
            return self.scheme + "://" + self.key
        return "%s://%s/%s" % (self.scheme, self.location, self.key)


def parse(uri):
    """Parse and validate a URI of any supported store.

    Parameters
    ----------
    uri : str or URI

    Returns
    -------
    URI

    Raises
    ------
    ValueError
        An unknown scheme, an empty or invalid container or bucket, or a
        name the store would refuse; the message names ``uri``.
    """
    if isinstance(uri, URI):
        return uri
    if not isinstance(uri, str):
        raise UsageError("not a URI: %r" % (uri,))
    scheme, sep, rest = uri.partition("://")
    if not sep and uri:
        return parse(local_uri(uri))
    if not sep or scheme not in SCHEMES:
        raise UsageError(
            "%r: unknown scheme; expected swift://container/object, "
            "s3://bucket/key, file:///path, dropbox://path or gdrive://path" % uri
        )
    if "\x00" in uri:
        raise UsageError("%r: a name cannot contain NUL" % uri)
    try:
        uri.encode("utf-8")
    except UnicodeError:
        raise UsageError("%r: not valid UTF-8" % uri) from None
    if scheme == "file":
        if not rest.startswith("/"):
            raise UsageError("%r: a file URI names an absolute path, file:///path" % uri)
        key = rest.lstrip("/")
        if any(part in (".", "..") for part in key.split("/")):
            raise UsageError("%r: no . or .. in a file URI" % uri)
        return URI("file", "", key)
    if scheme == "dropbox":
        return URI("dropbox", "", rest.lstrip("/"))
    if scheme == "gdrive":
        key = rest.lstrip("/")
        # Each / is a Drive folder: an empty name has none.
        if "//" in key:
            raise UsageError("%r: an empty folder name (//)" % uri)
        return URI("gdrive", "", key)
    location, _, key = rest.partition("/")
    if scheme == "swift":
        _check_swift(uri, location, key)
    else:
        _check_s3(uri, location, key)
    return URI(scheme, location, key)


def local_uri(path):
    """The ``file://`` URI of a local path, as ``aws s3`` and rclone take
    plain paths: relative to the working directory, and a prefix when it
    ends in ``/`` or is a directory."""
    absolute = os.path.abspath(os.path.expanduser(path))
    if path.endswith("/") or os.path.isdir(absolute):
        absolute = absolute.rstrip("/") + "/"
    return "file://" + absolute


def _check_swift(uri, container, obj):
    if not container:
        raise UsageError("%r: no container" % uri)
    if len(container.encode("utf-8")) > MAX_CONTAINER_NAME_LENGTH:
        raise UsageError(
            "%r: a container name is at most %d bytes" % (uri, MAX_CONTAINER_NAME_LENGTH)
        )
    if len(obj.encode("utf-8")) > MAX_OBJECT_NAME_LENGTH:
        raise UsageError("%r: an object name is at most %d bytes" % (uri, MAX_OBJECT_NAME_LENGTH))


def _check_s3(uri, bucket, key):
    if not bucket:
        raise UsageError("%r: no bucket" % uri)
    if (
        not S3_BUCKET_NAME.match(bucket)
        or ".." in bucket
        or ".-" in bucket
        or "-." in bucket
        or _IPV4.match(bucket)
    ):
        raise UsageError(
            "%r: %r is not a valid bucket name (3-63 characters: lower case "
            "letters, digits, '.' and '-', starting and ending with a letter "
            "or digit, not an IP address)" % (uri, bucket)
        )
    if len(key.encode("utf-8")) > MAX_KEY_LENGTH:
        raise UsageError("%r: a key is at most %d bytes" % (uri, MAX_KEY_LENGTH))


def parse_uri(uri):
    """``swift://container/object`` -> (container, object).

    The object may be a prefix (empty, or ending in ``/``).
    """
    parsed = parse(uri)
    if parsed.scheme != "swift":
        raise UsageError(f"not a swift:// URI: {uri!r}")
    return parsed.location, parsed.key


def format_uri(container, obj):
    """The ``swift://`` URI of ``obj`` in ``container``."""
    return f"{SCHEME}{container}/{obj}"


def output_type_for(output_type, name):
    """``(suffix, content type)`` of the output made from the source key
    ``name``, or ``(None, None)`` to keep the source's.

    ``output_type`` is a pair, None, or a callable of the source key giving
    either (a storlet whose output type depends on its input's: an
    annotated video is AVI, a tagged photo stays what it was).
    """
    if callable(output_type):
        output_type = output_type(name)
    return output_type or (None, None)


def dest_key(src, dest, name, suffix=None):
    """The key in ``dest`` that receives the source object ``name``.

    A prefix ``dest`` receives each source under its name relative to the
    ``src`` prefix (or, when ``src`` names one object, under its base name);
    a ``dest`` naming one object receives it as is.

    Parameters
    ----------
    src, dest : URI
    name : str
        A key listed under ``src``.
    suffix : str or callable, optional
        Replaces the extension of a key made under a prefix (``.png`` for a
        storlet whose output is a PNG whatever its input); a callable gives
        it (or None) for each source key.
    """
    if callable(suffix):
        suffix = suffix(name)
    if not dest.is_prefix:
        return dest.key
    relative = name.rsplit("/", 1)[-1] if not src.is_prefix else name[len(src.key) :]
    if suffix:
        relative = posixpath.splitext(relative)[0] + suffix
    return dest.key + relative


def plan_keys(src, dest, names, suffix=None):
    """[(source key, destination key)] for the listed ``names`` of ``src``
    (``suffix``: see :func:`dest_key`).

    Raises
    ------
    ValueError
        ``dest`` names one object for several sources, or an output would
        overwrite its own source.
    """
    src, dest = parse(src), parse(dest)
    if not dest.is_prefix and len(names) != 1:
        raise UsageError(
            "%s names one object, but %s names %d; end it with "
            "/ to make it a prefix" % (dest, src, len(names))
        )
    pairs = []
    for name in names:
        key = dest_key(src, dest, name, suffix)
        if (dest.scheme, dest.location, key) == (src.scheme, src.location, name):
            raise UsageError("%s would overwrite its own source" % dest.with_key(key))
        pairs.append((name, key))
    return pairs
