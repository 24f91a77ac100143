"""``s3://``: a bucket of any S3 endpoint, through boto3.

Credentials, region and endpoint come from where boto3 reads them: the
``AWS_*`` variables (``AWS_ENDPOINT_URL`` included), a profile
(``AWS_PROFILE`` or ``profile=``), the shared files.  A ``PUT`` is one
request carrying ``Content-MD5``: S3 stores the whole object or none, and
refuses a body that arrived damaged.
"""

import base64
import hashlib

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from mlstorlets.client.stores.base import (Entry, NotFound, Store, StoreError,
                                    is_internal, normalize_metadata)

# A dropped connection is retried a few times, not the default's minutes.
DEFAULT_CONFIG = Config(retries={'mode': 'standard', 'max_attempts': 3},
                        connect_timeout=10, read_timeout=60)
_MISSING = ('404', 'NoSuchKey', 'NoSuchBucket', 'NotFound')


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
            'aws_access_key_id': environ.get('AWS_ACCESS_KEY_ID'),
            'aws_secret_access_key': environ.get('AWS_SECRET_ACCESS_KEY'),
            'aws_session_token': environ.get('AWS_SESSION_TOKEN'),
            'region_name': environ.get('AWS_DEFAULT_REGION')
            or environ.get('AWS_REGION')}
        profile = profile or environ.get('AWS_PROFILE')
        endpoint_url = endpoint_url or environ.get('AWS_ENDPOINT_URL_S3') \
            or environ.get('AWS_ENDPOINT_URL')
    session = boto3.session.Session(profile_name=profile, **{
        k: v for k, v in kwargs.items() if v})
    return session.client('s3', endpoint_url=endpoint_url,
                          config=DEFAULT_CONFIG.merge(config or Config()))


class S3Store(Store):
    """Objects of one bucket.

    Parameters
    ----------
    client : botocore S3 client
        Thread-safe; shared by every thread.
    bucket : str
    """

    scheme = 's3'

    def __init__(self, client, bucket):
        self.client = client
        self.location = bucket

    @property
    def endpoint_url(self):
        return self.client.meta.endpoint_url

    def _call(self, key, method, **kwargs):
        try:
            return getattr(self.client, method)(Bucket=self.location,
                                                **kwargs)
        except ClientError as err:
            error = err.response.get('Error', {})
            code = str(error.get('Code', ''))
            if code == 'NoSuchBucket':
                raise NotFound(self.uri(key), 'no such bucket %r at %s' % (
                    self.location, self.endpoint_url)) from None
            if code in _MISSING:
                raise NotFound(self.uri(key), 'not found') from None
            raise StoreError(self.uri(key), '%s %s' % (
                code, error.get('Message') or err)) from None
        except BotoCoreError as err:
            raise StoreError(self.uri(key), 'cannot reach %s: %s' % (
                self.endpoint_url, err)) from None

    def list(self, prefix=''):
        entries = []
        token = {}
        while True:
            page = self._call(prefix, 'list_objects_v2', Prefix=prefix,
                              **token)
            entries.extend(
                Entry(o['Key'], o['Size'], o['ETag'].strip('"'))
                for o in page.get('Contents', ())
                if not is_internal(o['Key']))
            if not page.get('IsTruncated'):
                return entries
            token = {'ContinuationToken': page['NextContinuationToken']}

    def head(self, key):
        try:
            answer = self._call(key, 'head_object', Key=key)
        except NotFound:
            return None
        return Entry(key, answer['ContentLength'],
                     answer['ETag'].strip('"'),
                     normalize_metadata(answer.get('Metadata')))

    def get(self, key):
        answer = self._call(key, 'get_object', Key=key)
        try:
            body = answer['Body'].read()
        except (BotoCoreError, OSError) as err:
            raise StoreError(self.uri(key), 'the download broke off: %s'
                             % err) from None
        # urllib3 checks the length; a body cut short raises above.
        return body, normalize_metadata(answer.get('Metadata'))

    def put(self, key, data, metadata=None):
        metadata = normalize_metadata(metadata)
        digest = hashlib.md5(data, usedforsecurity=False)
        answer = self._call(
            key, 'put_object', Key=key, Body=data,
            ContentMD5=base64.b64encode(digest.digest()).decode('ascii'),
            Metadata={k.lower(): v for k, v in metadata.items()})
        return Entry(key, len(data), answer['ETag'].strip('"'), metadata)

    def delete(self, key):
        self._call(key, 'delete_object', Key=key)

    def check(self):
        """Raise NotFound/StoreError unless the bucket can be reached."""
        try:
            self._call('', 'head_bucket')
        except NotFound:
            # HEAD has no body to say which: the bucket is what is missing.
            raise NotFound(self.uri(), 'no such bucket %r at %s' % (
                self.location, self.endpoint_url)) from None
