"""Which of the host's Python files a sandbox is given."""

import os
import sys

import pytest
from test_pins import sandbox_pins

from mlstorlets.server.gateway import runtime_view

SITE = runtime_view.layout(sys.executable)["site"]


def binds(args):
    """The host paths ``args`` bind, by destination."""
    return {args[i + 2]: args[i + 1] for i, a in enumerate(args) if a == "--ro-bind"}


def no_parents(path):
    return []


def test_the_distributions_are_the_pinned_sandbox_requirements():
    assert set(runtime_view.SANDBOX_DISTRIBUTIONS) == set(sandbox_pins())


def test_requirements_are_followed_as_installed():
    found = runtime_view.distributions(("scikit-learn",), SITE)
    assert {"scikit-learn", "numpy", "scipy", "joblib", "threadpoolctl"} <= set(found)
    assert "pandas" not in found


def test_a_root_not_installed_is_named():
    with pytest.raises(LookupError, match="no-such-distribution"):
        runtime_view.distributions(("no-such-distribution",), SITE)


def test_only_the_runtime_of_the_environment_is_bound():
    args = runtime_view.bind_args(sys.executable, "/pkg/mlstorlets", "/opt/engine", no_parents)
    bound = binds(args)
    names = {os.path.basename(p) for p in bound if os.path.dirname(p) in SITE}
    assert {"numpy", "cv2", "sklearn", "storlets"} <= names
    assert not names & {"swift", "keystone", "pandas", "pip", "__pycache__"}
    # Never a whole environment, nor anything of its bin but the interpreter.
    prefix = runtime_view.layout(sys.executable)["prefix"]
    assert prefix not in bound and os.path.join(prefix, "lib") not in bound
    assert [p for p in bound if p.startswith(os.path.join(prefix, "bin"))] in (
        [],
        [os.path.realpath(sys.executable)],
    )
    engine = sorted(p for p in bound if p.startswith("/opt/engine"))
    assert engine == sorted("/opt/engine/mlstorlets/" + e for e in runtime_view.ENGINE_ENTRIES)
    assert bound["/opt/engine/mlstorlets/sandbox"] == "/pkg/mlstorlets/sandbox"


def test_the_base_installation_packages_are_hidden():
    where = runtime_view.layout(sys.executable)
    args = runtime_view.bind_args(sys.executable, "/pkg", "/opt/engine", no_parents)
    masked = [args[i + 1] for i, a in enumerate(args) if a == "--tmpfs"]
    for site in where["base_site"]:
        if os.path.isdir(site) and site not in where["site"]:
            assert site in masked
