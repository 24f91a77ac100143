"""A sandbox sees the runtime storlets import, not the host's Python.

Upstream's bubblewrap sandbox bound the whole environment and the base
installation read-only: a storlet could import Swift and Keystone (and read
how they are configured), run the environment's ``swift-*`` tools and list
everything the host installed.  The hostile storlet asks what it can find.
"""

from support import hostile

from mlstorlets.server.gateway.sandbox import SANDBOX_ENGINE_DIR

NEEDED = ("numpy", "cv2", "sklearn", "scipy", "skops", "PIL", "dlib", "storlets")
HIDDEN = (
    "swift",
    "keystone",
    "keystonemiddleware",
    "swiftclient",
    "pandas",
    "pytest",
    "pip",
    "mlstorlets.client",
    "mlstorlets.server.gateway",
    "mlstorlets.server.middleware",
)


def test_storlets_import_their_runtime_and_nothing_else(conn, container):
    conn.put_object(container, "x", b"x")
    seen = hostile(
        conn,
        container,
        "python-view",
        modules=",".join(NEEDED + HIDDEN),
        engine=SANDBOX_ENGINE_DIR + "/mlstorlets/server",
    )
    print("what a storlet finds of the host Python: %s" % seen)
    assert seen.startswith("allowed ")
    fields = dict(item.split("=", 1) for item in seen.split()[1:])
    importable = set(fields["importable"].split(","))
    assert set(NEEDED) - importable == set()
    assert set(HIDDEN) & importable == set()
    assert fields["tools"] == "0"
    assert fields["base"] == "0"
    # Of the engine's servers, only the agent the sandbox runs.
    assert set(fields["engine"].split(",")) == {"__init__.py", "agent"}
