"""deploy/install-node.sh, run for real: what it refuses, and what it does
on an environment that has everything.

The environments refused are throwaway ones: a venv whose Swift is another
release (its ``dist-info`` says so), a venv with no Swift, and a
distribution's python (PEP 668's ``EXTERNALLY-MANAGED`` in its standard
library, outside any venv) that sees this project's venv, as a
distribution's python sees the distribution's Swift.
"""

import configparser
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "deploy", "install-node.sh")
SAMPLES = os.path.join(sys.prefix, "share", "swift-samples")


def pins():
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    found = {}
    for line in cfg["options.extras_require"]["cluster"].splitlines():
        name, _, version = line.strip().partition("==")
        if version:
            found[name] = version
    return found


def install(conf, role="proxy", **env):
    environ = dict(os.environ, HOST_ROOT=str(conf.parent / "storlets"), **env)
    for name in ("ENGINE_ENV", "DRY_RUN", "REMOVE"):
        if name not in env:
            environ.pop(name, None)
    return subprocess.run(
        ["bash", SCRIPT, role, str(conf)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def sample(tmp_path, role="proxy"):
    conf = tmp_path / ("%s-server.conf" % role)
    shutil.copy(os.path.join(SAMPLES, "%s-server.conf-sample" % role), conf)
    return conf


def venv(path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return python, site


def fake_dist(site, name, version):
    info = os.path.join(site, "%s-%s.dist-info" % (name, version))
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version))


@pytest.fixture(scope="module")
def distribution_python(tmp_path_factory):
    """A python installed as a distribution installs it: not a venv, its
    standard library marked externally managed, and its site-packages
    holding (through a .pth) this project's venv, Swift included."""
    prefix = tmp_path_factory.mktemp("distribution")
    stdlib = sysconfig.get_path("stdlib")
    lib = prefix / "lib" / os.path.basename(stdlib)
    (lib / "site-packages").mkdir(parents=True)
    for entry in os.listdir(stdlib):
        if entry != "site-packages":
            os.symlink(os.path.join(stdlib, entry), lib / entry)
    (prefix / "bin").mkdir()
    python = prefix / "bin" / os.path.basename(os.path.realpath(sys._base_executable))
    # A copy, not a link: the interpreter finds its prefix from where it is.
    shutil.copy(os.path.realpath(sys._base_executable), python)
    (lib / "EXTERNALLY-MANAGED").write_text(
        "[externally-managed]\nError=install with the distribution's package manager\n"
    )
    (lib / "site-packages" / "distribution-swift.pth").write_text(
        "import site; site.addsitedir(%r)\n" % sysconfig.get_path("purelib")
    )
    return python


def test_another_release_of_swift_is_refused(tmp_path):
    python, site = venv(tmp_path / "env")
    fake_dist(site, "swift", "2.30.0")
    conf = sample(tmp_path)
    done = install(conf, PYTHON=str(python))
    assert done.returncode != 0
    assert "Swift 2.30.0 is installed" in done.stderr
    assert "supports Swift %s" % pins()["swift"] in done.stderr
    assert "Nothing was changed" in done.stderr
    assert conf.read_bytes() == open(os.path.join(SAMPLES, "proxy-server.conf-sample"), "rb").read()
    assert set(os.listdir(tmp_path)) == {"env", "proxy-server.conf"}


def test_another_release_of_storlets_is_refused(tmp_path):
    python, site = venv(tmp_path / "env")
    fake_dist(site, "swift", pins()["swift"])
    fake_dist(site, "storlets", "17.0.0")
    done = install(sample(tmp_path), PYTHON=str(python))
    assert done.returncode != 0
    assert "storlets 17.0.0 is installed" in done.stderr
    assert "needs storlets %s" % pins()["storlets"] in done.stderr


def test_an_environment_without_swift_is_refused(tmp_path):
    python, _ = venv(tmp_path / "env")
    done = install(sample(tmp_path), PYTHON=str(python))
    assert done.returncode != 0
    assert "no Swift in the environment of %s" % python in done.stderr
    assert "set PYTHON" in done.stderr


def test_a_distribution_python_needs_an_engine_env(tmp_path, distribution_python):
    conf = sample(tmp_path)
    done = install(conf, PYTHON=str(distribution_python))
    assert done.returncode != 0, done.stdout
    assert "externally managed" in done.stderr
    assert "Set ENGINE_ENV" in done.stderr
    assert conf.read_bytes() == open(os.path.join(SAMPLES, "proxy-server.conf-sample"), "rb").read()
    assert "--break-system-packages" not in open(SCRIPT).read()


def test_the_engine_env_sees_the_distributions_swift(tmp_path, distribution_python):
    conf = sample(tmp_path, "object")
    engine = tmp_path / "engine"
    done = install(
        conf, "object", PYTHON=str(distribution_python), ENGINE_ENV=str(engine), DRY_RUN="1"
    )
    assert done.returncode == 0, done.stderr
    assert "would create the venv %s" % engine in done.stdout
    assert not engine.exists()
    # libsbus as if built there already: the build needs the network.
    native = engine / "lib" / "storlets"
    native.mkdir(parents=True)
    built = os.path.join(sys.prefix, "lib", "storlets")
    for name in ("libsbus.so", ".storlets-%s" % pins()["storlets"]):
        shutil.copy(os.path.join(built, name), native / name)
    done = install(conf, "object", PYTHON=str(distribution_python), ENGINE_ENV=str(engine))
    assert done.returncode == 0, done.stderr
    assert "created the venv %s" % engine in done.stdout
    assert "nothing to install" in done.stdout
    assert "ExecStart=%s/bin/python " % engine in done.stdout
    with open(engine / "pyvenv.cfg") as f:
        assert "include-system-site-packages = true" in f.read()
    server = configparser.RawConfigParser()
    server.read(conf)
    assert "storlet_handler" in server.get("pipeline:main", "pipeline").split()
    gateway = configparser.RawConfigParser()
    gateway.read(tmp_path / "storlet-gateway.conf")
    assert gateway.get("DEFAULT", "native_lib_dir") == str(native)


def test_an_environment_with_everything_installs_nothing(tmp_path):
    conf = sample(tmp_path)
    done = install(conf, PYTHON=sys.executable, DRY_RUN="1")
    assert done.returncode == 0, done.stderr
    assert "nothing to install" in done.stdout
    assert "is built" in done.stdout
    assert "+++ %s" % conf in done.stdout
    assert "+node_timeout = 45" in done.stdout
    assert "dry run: nothing written" in done.stdout
    assert conf.read_bytes() == open(os.path.join(SAMPLES, "proxy-server.conf-sample"), "rb").read()
    assert sorted(os.listdir(tmp_path)) == ["proxy-server.conf"]
