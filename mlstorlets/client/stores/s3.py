"""``s3://``: a bucket of any S3 endpoint, through boto3.

Credentials, region and endpoint come from where boto3 reads them: the
``AWS_*`` variables (``AWS_ENDPOINT_URL`` included), a profile
(``AWS_PROFILE`` or ``profile=``), the shared files.

Bodies stream both ways.  An upload goes through boto3's transfer manager
(``upload_fileobj``, ``upload_file`` for a local file): up to the part
size one ``PUT``, above it a multipart upload in parts of that size, a few
in flight (as many as ``aws s3 cp`` for a local file, whose parts are read
from it, none buffered ahead; fewer for a stream, whose parts are buffered),
which S3 commits only at its end (a failed one is aborted): the object
exists whole or not at all, and botocore checksums every request.  A local
file's bytes are counted as they are sent.  A download is read in chunks and,
unless it was a multipart upload (whose ETag is not its body's MD5),
checked against its MD5 at the end.

The ETag of an object is its identity: the MD5 of a single ``PUT``'s body,
or, for a multipart upload, the MD5 of its parts' binary MD5s and ``-N``
for N parts.  The part size :meth:`S3Store.write` picks is a function of
the object's size alone, so :meth:`S3Store.upload_etag` tells from a local
file, before any upload, the ETag its upload gets: a copy of a local file
is known up to date by comparing ETags, without the file's MD5 in the
metadata (which S3 takes only before the first part, and so would have the
whole file read before its first byte is sent).  Objects S3 encrypts with
KMS keys or customer keys have other ETags: they never compare equal, and
are copied again.
"""

import base64
import hashlib

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.utils import ChunksizeAdjuster

from mlstorlets.client.errors import NotFound, StoreError
from mlstorlets.client.stores.base import (
    CHUNK,
    Entry,
    FullReads,
    Reader,
    Store,
    Tally,
    content_headers,
    is_internal,
    local_path,
    normalize_metadata,
)

# A dropped connection is retried a few times, not the default's minutes.
DEFAULT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10, read_timeout=60
)
# An RFC 2047 encoded word of UTF-8 in base64: a non-ASCII metadata value.
_WORD = ("=?utf-8?b?", "?=")
_MISSING = ("404", "NoSuchKey", "NoSuchBucket", "NotFound")
# boto3's default part size, and S3's limits on parts.
DEFAULT_PART = 8 << 20
MAX_PARTS = 10000
# Parts in flight (and buffered, for a stream) at once.
PART_CONCURRENCY = 4
# Parts of a local file in flight at once, read from the file, none
# buffered ahead: boto3's default, as ``aws s3 cp`` uploads.
FILE_CONCURRENCY = 10
_EXTRA = {"Content-Type": "ContentType", "Content-Disposition": "ContentDisposition"}


def make_client(profile=None, endpoint_url=None, config=None, environ=None):
    """A boto3 S3 client configured the usual way.

    Parameters
    ----------
    profile : str, optional
        A profile of the shared AWS files.
    endpoint_url : str, optional
        Overrides ``AWS_ENDPOINT_URL`` (which boto3 honours by itself).
    config : botocore.config.Config, optional
    environ : mapping, optional
        Variables to read instead of ``os.environ`` (``AWS_ACCESS_KEY_ID``,
        ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
        ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ``AWS_PROFILE``).
    """
    kwargs = {}
    if environ is not None:
        kwargs = {
            "aws_access_key_id": environ.get("AWS_ACCESS_KEY_ID"),
            "aws_secret_access_key": environ.get("AWS_SECRET_ACCESS_KEY"),
            "aws_session_token": environ.get("AWS_SESSION_TOKEN"),
            "region_name": environ.get("AWS_DEFAULT_REGION") or environ.get("AWS_REGION"),
        }
        profile = profile or environ.get("AWS_PROFILE")
        endpoint_url = (
            endpoint_url or environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
        )
    session = boto3.session.Session(profile_name=profile, **{k: v for k, v in kwargs.items() if v})
    return session.client(
        "s3", endpoint_url=endpoint_url, config=DEFAULT_CONFIG.merge(config or Config())
    )


class S3Store(Store):
    """Objects of one bucket.

    Parameters
    ----------
    client : botocore S3 client
        Thread-safe; shared by every thread.
    bucket : str
    part_size : int, optional
        Objects bigger than this are multipart uploads in parts of this
        size (at least 5 MiB, S3's minimum); default 8 MiB, more for an
        object that would need over 10 000 parts.
    """

    scheme = "s3"

    def __init__(self, client, bucket, part_size=None):
        self.client = client
        self.location = bucket
        self.part_size = part_size

    @property
    def endpoint_url(self):
        return self.client.meta.endpoint_url

    def _call(self, key, method, **kwargs):
        try:
            return getattr(self.client, method)(Bucket=self.location, **kwargs)
        except ClientError as err:
            error = err.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code == "NoSuchBucket":
                raise NotFound(
                    self.uri(key), "no such bucket %r at %s" % (self.location, self.endpoint_url)
                ) from None
            if code in _MISSING:
                raise NotFound(self.uri(key), "not found") from None
            raise StoreError(self.uri(key), "%s %s" % (code, error.get("Message") or err)) from None
        except BotoCoreError as err:
            raise StoreError(
                self.uri(key), "cannot reach %s: %s" % (self.endpoint_url, err)
            ) from None

    def list(self, prefix=""):
        entries = []
        token = {}
        while True:
            page = self._call(prefix, "list_objects_v2", Prefix=prefix, **token)
            entries.extend(
                Entry(o["Key"], o["Size"], o["ETag"].strip('"'))
                for o in page.get("Contents", ())
                if not is_internal(o["Key"])
            )
            if not page.get("IsTruncated"):
                return entries
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def head(self, key):
        try:
            answer = self._call(key, "head_object", Key=key)
        except NotFound:
            return None
        return _entry(key, answer)

    def reader(self, key):
        answer = self._call(key, "get_object", Key=key)
        entry = _entry(key, answer)
        check = None
        if "-" not in entry.etag:
            check = (hashlib.md5(usedforsecurity=False), entry.etag)
        body = answer["Body"]
        return Reader(self.uri(key), body.iter_chunks(CHUNK), entry, check, close=body.close)

    def write(self, key, body, metadata=None, headers=None, size=None):
        metadata = normalize_metadata(metadata)
        extra = {_EXTRA[k]: v for k, v in content_headers(headers).items()}
        extra["Metadata"] = {k.lower(): _ascii(v) for k, v in metadata.items()}
        part = self._part(size)
        path, count = local_path(body)
        config = TransferConfig(
            multipart_threshold=part,
            multipart_chunksize=part,
            max_concurrency=PART_CONCURRENCY if path is None else FILE_CONCURRENCY,
            # The CRT client, which boto3 picks on some EC2 instances,
            # chooses its own part size: ETags upload_etag could not tell.
            preferred_transfer_client="classic",
        )
        # What bounds the memory of a stream's upload (s3transfer's option,
        # which boto3's constructor does not take).
        config.max_in_memory_upload_chunks = PART_CONCURRENCY
        try:
            if path is not None:
                # Parts read from the file, none buffered ahead; the bytes
                # counted as they are sent (a part sent again counts
                # again), so that progress shows and Ctrl-C stops the
                # upload at its next MiB.
                tally = Tally(count)
                self.client.upload_file(
                    path,
                    self.location,
                    key,
                    ExtraArgs=extra,
                    Config=config,
                    Callback=lambda n: n > 0 and tally.add(n),
                )
                tally.finish()
            else:
                self.client.upload_fileobj(
                    FullReads(body), self.location, key, ExtraArgs=extra, Config=config
                )
        except ClientError as err:
            error = err.response.get("Error", {})
            raise StoreError(
                self.uri(key), "%s %s" % (error.get("Code", ""), error.get("Message") or err)
            ) from None
        except (BotoCoreError, S3UploadFailedError) as err:
            raise StoreError(self.uri(key), "the upload failed: %s" % (err,)) from None
        entry = self.head(key)
        if entry is None:
            raise StoreError(self.uri(key), "missing after its upload")
        return entry

    def _part(self, size):
        """The part size of an upload of ``size`` bytes, which is also the
        size from which it is a multipart upload."""
        return max(self.part_size or DEFAULT_PART, -(-(size or 0) // MAX_PARTS))

    def etag_is_upload_of(self, size):
        # The part size is a function of the size alone (_part).
        return True

    def upload_etag(self, entry):
        """The ETag :meth:`write` gives the local file of ``entry``, read
        from the file (unless it is one ``PUT`` whose MD5 ``entry`` knows).

        The part size is that of ``write``, as s3transfer adjusts it to
        S3's limits (5 MiB at least, 10 000 parts at most).  Compared with
        the ETag of an existing object, it tells whether the object holds
        the file, whoever uploaded it with the same parts (``aws s3 cp``
        with its default 8 MiB does).

        Parameters
        ----------
        entry : Entry
            A local file's (with its ``path``) of ``entry.size`` bytes.

        Returns
        -------
        str or None
            None for an entry that is not a local file, or a file whose
            size changed since ``entry`` was taken.
        """
        if entry.path is None:
            return None
        part = self._part(entry.size)
        if entry.size < part:
            return entry.etag
        try:
            with open(entry.path, "rb") as f:
                return multipart_etag(
                    f, ChunksizeAdjuster().adjust_chunksize(part, entry.size), entry.size
                )
        except OSError as err:
            raise StoreError("file://" + entry.path, err.strerror or str(err)) from None

    def delete(self, key):
        self._call(key, "delete_object", Key=key)

    def check(self):
        """Raise NotFound/StoreError unless the bucket can be reached."""
        try:
            self._call("", "head_bucket")
        except NotFound:
            # HEAD has no body to say which: the bucket is what is missing.
            raise NotFound(
                self.uri(), "no such bucket %r at %s" % (self.location, self.endpoint_url)
            ) from None


def multipart_etag(f, part_size, size=None):
    """The ETag of a multipart upload of what ``f`` reads, in parts of
    ``part_size`` bytes: the MD5 of the parts' binary MD5s, then ``-N``.

    Parameters
    ----------
    f : binary file object
        Read to its end.
    part_size : int
    size : int, optional
        The bytes ``f`` must hold.

    Returns
    -------
    str or None
        None when ``f`` does not hold ``size`` bytes.
    """
    digests, total = [], 0
    while True:
        part, left = hashlib.md5(usedforsecurity=False), part_size
        while left:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                break
            part.update(chunk)
            left -= len(chunk)
        if left == part_size:
            break
        digests.append(part.digest())
        total += part_size - left
        if left:
            break
    if size is not None and total != size:
        return None
    whole = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
    return "%s-%d" % (whole, len(digests))


def _entry(key, answer):
    return Entry(
        key,
        answer["ContentLength"],
        answer["ETag"].strip('"'),
        normalize_metadata({k: _unicode(v) for k, v in (answer.get("Metadata") or {}).items()}),
        {k: answer[v] for k, v in _EXTRA.items() if answer.get(v)},
    )


def _ascii(value):
    """``value`` as S3 accepts metadata (ASCII only): a value with other
    characters (a person named José) as one RFC 2047 encoded word, as mail
    headers carry them."""
    if value.isascii():
        return value
    return "%s%s%s" % (_WORD[0], base64.b64encode(value.encode("utf-8")).decode("ascii"), _WORD[1])


def _unicode(value):
    """The value :func:`_ascii` encoded; any other as it is."""
    if not (value.startswith(_WORD[0]) and value.endswith(_WORD[1])):
        return value
    try:
        return base64.b64decode(value[len(_WORD[0]) : -len(_WORD[1])], validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return value
