"""The storlet protocol: the names that storlets, the servers' middleware
and the client use to talk about an invocation.

One module, importable everywhere (it depends on nothing), so that no layer
matches another's free text.

Inside the cluster a storlet speaks through its output metadata:

* ``Storlet-Error``: the storlet refused its input (bad object, bad
  parameter); the value is the reason.  No body follows.
* ``Storlet-Output-Length``: the exact length of the body that follows, so
  that an output cut short is never stored.

To the client, the proxy answers a storlet that did not produce its output
with a status and two headers:

==========  ==========  ====================================================
status      ``kind``    meaning
==========  ==========  ====================================================
422         refused     the storlet refused the object or a parameter
502         failed      the storlet raised, died or broke the protocol
504         timed-out   the storlet ran past the engine's storlet timeout
==========  ==========  ====================================================

``X-Mlstorlets-Error`` carries the kind and ``X-Mlstorlets-Reason`` the
reason (one line, UTF-8, percent-quoted where not ASCII).  The body repeats
them for a human.
"""

# Output metadata keys, as a storlet sets them (the engine prefixes them with
# X-Object-Meta- on the way out).  Never stored on an object.
ERROR_KEY = 'Storlet-Error'
LENGTH_KEY = 'Storlet-Output-Length'

# Swift stores metadata in xattrs and caps a header at 8 KiB: a reason is
# for a human to read, not a dump.
MAX_REASON = 1024

# The proxy's answer to the client when a storlet produced no output.
ERROR_HEADER = 'X-Mlstorlets-Error'
REASON_HEADER = 'X-Mlstorlets-Reason'
REFUSED, FAILED, TIMED_OUT = 'refused', 'failed', 'timed-out'
STATUS = {REFUSED: 422, FAILED: 502, TIMED_OUT: 504}
