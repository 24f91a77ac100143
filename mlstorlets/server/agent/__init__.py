"""The storlet agent that runs inside the sandbox: persistent workers.

Upstream's storlet daemon (``storlets.agent.daemon``) forks a child per
request, and the child ends through an interpreter teardown: with numpy,
OpenCV and scikit-learn loaded that costs more than most invocations.  This
agent keeps the upstream SBus protocol with the host (the same commands,
the same file descriptors, the same host code) and changes what happens
inside the sandbox:

``factory`` (:mod:`.factory`)
    upstream's daemon factory, starting :mod:`.daemon` instead of the
    upstream daemon for Python storlets, and waiting for it by pinging
    rather than by a fixed sleep.
``daemon`` (:mod:`.daemon`), one per storlet
    the supervisor: it listens on the storlet's SBus socket, keeps a pool
    of worker processes, hands each request's input and logger descriptors
    to an idle worker (``socket.send_fds``), queues requests when all are
    busy, kills the worker of a cancelled task and replaces any worker that
    dies.  It never imports the storlet.
``worker`` (:mod:`.worker`), several per storlet
    imports the storlet once and serves requests one after the other in
    the same process, so module-level state (a model loaded once) is
    reused.  The storlet writes its output to a spool file in the
    sandbox's private ``/tmp``; the worker hands the spool back.

The supervisor, not the worker, answers the host: only once the storlet
returned does it send the output metadata, with the exact length of the
spooled output as ``Storlet-Output-Length``
(:data:`mlstorlets.sandbox.protocol.LENGTH_KEY`), then the output (which
the host answers with that ``Content-Length``,
:mod:`mlstorlets.server.middleware.output_length`).  A
storlet that raises, exits or is killed sends nothing: the host sees a
failed storlet, and a copy (``PUT`` with ``X-Copy-From``, ``COPY``) writes
no object.  Because the supervisor holds the output descriptors and the
worker never sees them, this holds for any storlet, hostile ones included.

Everything here is engine code, loaded from the read-only environment the
gateway mounts (never from the storlet and dependency directories, which
hold what tenants upload); a worker forgets the engine's ``mlstorlets``
package before it imports the storlet, so that a storlet imports the
library version it was deployed with.
"""
