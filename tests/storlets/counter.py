"""A storlet that says which process served it, and how many times.

Its output is ``<host> <pid> <calls>``: the sandbox's host name, the pid
of the process that ran it and the number of requests that process has
served, counted in module state.  With
a persistent worker the same pid comes back with a growing count.
Its metadata ``Counter-Read`` is the number of input bytes it read.
Parameters: ``sleep`` (seconds to wait first, for timeouts).
"""

import os
import socket
import time

CALLS = 0


class CounterStorlet(object):
    def __init__(self, logger):
        self.logger = logger

    def __call__(self, in_files, out_files, params):
        global CALLS
        CALLS += 1
        time.sleep(float(params.get("sleep", 0)))
        read = sum(len(f.read()) for f in in_files)
        body = b"%s %d %d" % (socket.gethostname().encode(), os.getpid(), CALLS)
        out_files[0].set_metadata({"Counter-Pid": str(os.getpid()), "Counter-Read": str(read)})
        out_files[0].write(body)
        out_files[0].close()
