"""The storlet agent that runs inside the sandbox: persistent workers.

Upstream's storlet daemon (``storlets.agent.daemon``) forks a child per
request, and the child ends through an interpreter teardown: with numpy,
OpenCV and scikit-learn loaded that costs more than most invocations.  This
agent keeps the upstream SBus protocol with the host (the same commands,
the same file descriptors; the host sends ``EXECUTE`` to the door, where
there is one) and changes what happens inside the sandbox:

``factory`` (:mod:`.factory`)
    upstream's daemon factory, starting :mod:`.daemon` instead of the
    upstream daemon for Python storlets, and waiting for it by pinging
    rather than by a fixed sleep.
``daemon`` (:mod:`.daemon`), one per storlet
    the supervisor: it listens on the storlet's SBus socket (``CANCEL``,
    ``PING``, ``HALT``), binds the storlet's door
    (:func:`mlstorlets.sandbox.protocol.door_path`), keeps a pool of worker
    processes, kills the worker of a cancelled task (it reads which from
    the workers' records, :mod:`.slots`) and replaces any worker that
    dies.  It never imports the storlet, and no request passes through it.
``worker`` (:mod:`.worker`), several per storlet
    imports the storlet once and serves requests one after the other in
    the same process, so module-level state (a model loaded once) is
    reused.  The first worker takes the host's ``EXECUTE`` commands from
    the door and passes on to the others those that come while it is
    busy: back-to-back requests find it warm.  A worker answers the host
    itself (:mod:`.host_io`): the task id, then, once the storlet returned,
    the output metadata and the output.  When the storlet reads every
    input itself (an object server's own objects), the host names the task
    and waits for the output only: the task id tells it, if no output
    comes, whether a worker took the task (the storlet failed) or nobody
    did (the command was dropped: the request is sent again).  A task
    nobody took within the storlet timeout is answered ``504``, and
    cancelled by its id in case a worker takes it as the host gives up.

The storlet writes its output to a spool file in the sandbox's private
``/tmp``; only once the storlet returned does its worker send the output
metadata, with the exact length of the spool as ``Storlet-Output-Length``
(:data:`mlstorlets.sandbox.protocol.LENGTH_KEY`), then the spool (which
the host answers with that ``Content-Length``, and holds to it:
:mod:`mlstorlets.server.middleware.output_length`).  A storlet that raises
sends its failure, one that exits or is killed sends no metadata, or a
body short of the declared length: the host sees a failed storlet, and a
copy (``PUT`` with ``X-Copy-From``, ``COPY``) writes no object.  A hostile
storlet runs in the process that holds the host's descriptors and may
write to them itself: that gives it nothing its own output does not, since
the host checks the metadata and the length of whatever arrives.

Everything here is engine code, loaded from the read-only environment the
gateway mounts (never from the storlet and dependency directories, which
hold what tenants upload); a worker forgets the engine's ``mlstorlets``
package before it imports the storlet, so that a storlet imports the
library version it was deployed with.
"""
