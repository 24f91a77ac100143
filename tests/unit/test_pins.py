"""The client, the bubblewrap sandbox and the container image agree."""

import configparser
import importlib.metadata
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pins(lines):
    found = {}
    for line in lines:
        line = line.split("#")[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def sandbox_pins():
    with open(os.path.join(REPO, "deploy", "sandbox-requirements.txt")) as f:
        return pins(f)


def setup_pins():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(REPO, "setup.cfg"))
    lines = parser.get("options", "install_requires").splitlines()
    lines += parser.get("options.extras_require", "cluster").splitlines()
    return pins(lines)


def test_every_sandbox_package_is_pinned_the_same_for_the_client():
    sandbox, client = sandbox_pins(), setup_pins()
    assert {
        "numpy",
        "opencv-python-headless",
        "scikit-learn",
        "skops",
        "storlets",
        "dlib-bin",
        "face-recognition-models",
    } <= set(sandbox)
    for name, version in sandbox.items():
        assert client.get(name) == version, name


def test_the_running_environment_has_the_pinned_versions():
    # The bubblewrap sandbox runs this very environment.
    for name, version in sandbox_pins().items():
        assert importlib.metadata.version(name) == version, name


def test_the_image_installs_exactly_the_sandbox_requirements():
    with open(os.path.join(REPO, "docker", "Dockerfile")) as f:
        dockerfile = f.read()
    assert "COPY deploy/sandbox-requirements.txt" in dockerfile
    assert "-r /tmp/sandbox-requirements.txt" in dockerfile
    # Nothing installed beside the file, with versions of its own.
    assert not re.search(r"pip install[^\n]*==", dockerfile)
    # The daemon factory runs storlets with /usr/bin/python3.
    assert re.search(r"^FROM debian:", dockerfile, re.M)
    assert (
        "build-libsbus.sh /usr/local/lib/storlets %s" % (sandbox_pins()["storlets"]) in dockerfile
    )
