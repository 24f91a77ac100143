"""Which sandbox serves an account: its scope.

Upstream's storlet middleware names the scope after the account's first 13
characters (after the reseller prefix), so accounts sharing them, such as
``acmecorporation1`` and ``acmecorporation2``, shared one sandbox: one uid,
one ``/tmp``, one set of storlet workers.  The bubblewrap gateway takes the
scope of the request's whole account instead: the first characters of the
name, for people reading the host's directories, and a digest of all of
it.  The scope names the sandbox's directories (storlets, pipes, logs,
cache), its uid, its lock and its record.

Scopes of an earlier version (13 characters) are caches of what Swift
holds: the storlets are fetched again into the new scope on its first
request, and the old directories may be removed once no server runs them.
"""

import functools
import hashlib
import re

READABLE = 8
DIGEST = 16


# Asked on every invocation, for a few accounts at a time.
@functools.lru_cache(maxsize=4096)
def account_scope(account):
    """The sandbox scope of ``account`` (``AUTH_x``, reseller prefix kept).

    >>> account_scope('AUTH_acmecorporation1')
    'acmecorp-089a1e70f0b7ed91'
    >>> account_scope('AUTH_acmecorporation2')
    'acmecorp-3e9771d404143963'
    """
    readable = re.sub(r"[^A-Za-z0-9]", "", account.partition("_")[2] or account)[:READABLE]
    digest = hashlib.sha256(account.encode("utf-8")).hexdigest()[:DIGEST]
    return "%s-%s" % (readable, digest)
