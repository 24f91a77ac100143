"""What of the host's Python a sandbox sees: the runtime storlets import.

A sandbox gets the interpreter, its standard library, the distributions
storlets import (:data:`SANDBOX_DISTRIBUTIONS` and what they require) and
the sandbox half of the engine's own package.  Everything else installed
beside them stays outside: Swift, Keystone and their configuration
readers, the ``swift-*`` tools of the environment's ``bin``, the client
half of ``mlstorlets``, and every site-packages directory of the base
installation (pip, the host's own packages).
"""

import functools
import json
import os
import subprocess
from importlib import metadata

from packaging.requirements import Requirement

# What storlets import: deploy/sandbox-requirements.txt pins exactly these
# (tests/unit/test_pins.py), and the container image installs that file.
SANDBOX_DISTRIBUTIONS = (
    "numpy",
    "opencv-python-headless",
    "scikit-learn",
    "scipy",
    "skops",
    "onnxruntime",
    "onnx",
    "pillow",
    "dlib-bin",
    "face-recognition-models",
    "storlets",
)
# The engine's own files a sandbox runs (the agent and the code storlets
# call), relative to the ``mlstorlets`` package; never the client or the
# servers' middleware and gateway.
ENGINE_ENTRIES = ("__init__.py", "sandbox", "server/__init__.py", "server/agent")
# Shared by every module at the top of site-packages: not one
# distribution's, so not bound (Python compiles what it lacks in memory).
_SHARED = {"__pycache__"}

_LAYOUT_SCRIPT = """
import json, site, sys, sysconfig
paths = sysconfig.get_paths()
# In a virtual environment "platstdlib" names the environment's lib: the
# standard library is the base installation's.
base = sysconfig.get_paths(vars={"base": sys.base_prefix,
                                 "platbase": sys.base_exec_prefix})
print(json.dumps({
    "prefix": sys.prefix,
    "stdlib": base["stdlib"],
    "platstdlib": base["platstdlib"],
    "site": sorted({paths["purelib"], paths["platlib"]}),
    "base_site": site.getsitepackages([sys.base_prefix, sys.base_exec_prefix]),
    "libdir": sysconfig.get_config_var("LIBDIR") or "",
    "ldlibrary": sysconfig.get_config_var("LDLIBRARY") or "",
}))
"""


@functools.lru_cache(maxsize=8)
def layout(python):
    """Where ``python`` keeps its interpreter, standard library and packages.

    Asked of the interpreter itself, isolated from the environment: the
    sandbox's Python may be another installation than the server's.
    """
    out = subprocess.run(
        [python, "-I", "-c", _LAYOUT_SCRIPT], capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(out.stdout)


def distributions(roots, site_dirs):
    """The distributions in ``site_dirs`` that ``roots`` need, by name.

    Requirements are followed as installed (markers evaluated, no extras);
    a root that is not installed is an error naming it.
    """
    found = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        key = _normal(name)
        if key in found:
            continue
        try:
            dist = next(iter(metadata.distributions(name=name, path=list(site_dirs))))
        except StopIteration:
            if name in roots:
                raise LookupError(
                    "%s, which storlets import, is not installed in %s" % (name, site_dirs)
                )
            # An optional requirement left uninstalled.
            found[key] = None
            continue
        found[key] = dist
        for text in dist.requires or ():
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                pending.append(req.name)
    return {k: d for k, d in found.items() if d is not None}


def site_entries(dists):
    """The top-level names of site-packages that ``dists`` installed."""
    names = set()
    for dist in dists.values():
        for path in dist.files or ():
            if path.parts and path.parts[0] != "..":
                names.add(path.parts[0])
    return sorted(names - _SHARED)


def bind_args(python, engine_package, engine_dir, parents, roots=SANDBOX_DISTRIBUTIONS):
    """bwrap arguments showing the sandbox only the runtime storlets import.

    ``python`` is the sandbox's interpreter (its path, as configured);
    ``engine_package`` the host directory of ``mlstorlets``, shown at
    ``engine_dir/mlstorlets``; ``parents(path)`` gives the arguments that
    make the directories leading to ``path``; ``roots`` the distributions
    shown with what they require.
    """
    where = layout(python)
    args = []
    # The interpreter's path as configured, through each link to the
    # binary, so that Python finds its environment (pyvenv.cfg) as outside.
    path = os.path.abspath(python)
    for _ in range(40):
        if not os.path.islink(path):
            break
        target = os.readlink(path)
        args += parents(path) + ["--symlink", target, path]
        path = os.path.normpath(os.path.join(os.path.dirname(path), target))
    args += _ro(path, parents)
    cfg = os.path.join(where["prefix"], "pyvenv.cfg")
    if os.path.exists(cfg):
        args += _ro(cfg, parents)
    # A shared libpython (the file and its versioned names), where the
    # interpreter links to one.
    ldlibrary = where["ldlibrary"]
    if ".so" in ldlibrary:
        for name in sorted(os.listdir(where["libdir"])):
            if name.startswith(ldlibrary):
                args += _ro(os.path.join(where["libdir"], name), parents)
    for stdlib in sorted({where["stdlib"], where["platstdlib"]}):
        args += _ro(stdlib, parents)
    # The base installation's packages (pip, whatever the host installed)
    # are hidden under an empty, read-only directory.
    for site in where["base_site"]:
        if os.path.isdir(site) and site not in where["site"]:
            args += ["--perms", "0555", "--size", "4096", "--tmpfs", site]
    dists = distributions(roots, where["site"])
    wanted = site_entries(dists)
    for site in where["site"]:
        args += parents(os.path.join(site, "x"))
        for name in wanted:
            entry = os.path.join(site, name)
            if os.path.lexists(entry):
                args += ["--ro-bind", entry, entry]
    for name in ENGINE_ENTRIES:
        dest = os.path.join(engine_dir, "mlstorlets", name)
        args += parents(dest) + ["--ro-bind", os.path.join(engine_package, name), dest]
    return args


def _ro(path, parents):
    return parents(path) + ["--ro-bind", path, path]


def _normal(name):
    return name.lower().replace("_", "-").replace(".", "-")
