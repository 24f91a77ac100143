"""Code arranged by where it runs: what each part may import.

Each check runs in a fresh interpreter, because the test process itself
imports the servers (the embedded cluster) and with them eventlet.
"""

import os
import subprocess
import sys
import textwrap

import mlstorlets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(mlstorlets.__file__)))

# Makes the named top-level packages unimportable, as in the sandbox image.
BLOCKER = textwrap.dedent("""
    import sys
    BLOCKED = set(sys.argv[1].split(','))

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + '.') for b in BLOCKED):
                raise ImportError('%s is not available here' % name)
            return None

    sys.meta_path.insert(0, Blocker())
""")

IMPORT_ALL = textwrap.dedent("""
    import importlib, pkgutil, runpy
    def import_all(package):
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, package + '.'):
            importlib.import_module(info.name)
""")


def run(code, *args):
    done = subprocess.run(
        [sys.executable, "-c", code] + list(args),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_sandbox_part_imports_without_swift_boto3_or_eventlet():
    """The deployed library and every storlet module import where there is
    no swiftclient, boto3, botocore, eventlet nor swift (the sandbox
    image), and import nothing of the client or the servers."""
    out = run(
        BLOCKER
        + IMPORT_ALL
        + textwrap.dedent("""
        import glob, importlib.util, os
        import_all('mlstorlets.sandbox')
        for path in sorted(glob.glob(os.path.join('storlets', '*.py'))):
            spec = importlib.util.spec_from_file_location(
                'storlet_' + os.path.basename(path)[:-3], path)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        outside = sorted(m for m in sys.modules if m.startswith(
            ('mlstorlets.client', 'mlstorlets.server')))
        assert not outside, outside
        print(len([m for m in sys.modules if m.startswith('mlstorlets.')]))
    """),
        "swiftclient,boto3,botocore,eventlet,swift,storlets,dropbox,"
        # google.protobuf is the sandbox's (ONNX models are protobufs);
        # Google's Drive client and its auth are not.
        "googleapiclient,google.auth,google.oauth2,httplib2",
    )
    assert int(out) > 10


def test_the_blocker_blocks():
    """The check above means something: swiftclient is unimportable under
    it."""
    out = run(
        BLOCKER
        + textwrap.dedent("""
        try:
            import swiftclient
        except ImportError as err:
            print('blocked: %s' % err)
    """),
        "swiftclient",
    )
    assert out.startswith("blocked")


def test_the_client_never_imports_eventlet_or_the_servers():
    """Every client module (CLI, batch engine, placement, stores,
    pipelines, estimators) imports without eventlet and the servers; so
    does parsing any command line, and running a command that needs no
    server."""
    out = run(
        BLOCKER
        + IMPORT_ALL
        + textwrap.dedent("""
        import tempfile
        import_all('mlstorlets.client')
        from mlstorlets.client.cli import main, parser
        for argv in (['run', 'x.py', 'file:///a/', 'file:///b/'],
                     ['cp', 's3://a/b/', 'file:///c/'],
                     ['faces', 'extract', 'swift://a/', 'swift://b/'],
                     ['aio', 'up'], ['node-config', '--role', 'proxy',
                                     '--server-conf', 'x']):
            parser().parse_args(argv)
        src, dest = tempfile.mkdtemp(), tempfile.mkdtemp()
        open(os.path.join(src, 'a.txt'), 'w').write('a')
        assert main(['cp', 'file://%s/' % src, 'file://%s/' % dest]) == 0
        assert open(os.path.join(dest, 'a.txt')).read() == 'a'
        print('ok')
    """).replace("import tempfile", "import os, tempfile"),
        "eventlet,mlstorlets.server,storlets,swift",
    )
    assert out.strip().endswith("ok")


def test_the_server_commands_still_run_their_code_when_asked():
    """``aio`` imports the servers lazily: asking for its status works."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlstorlets.client.cli",
            "aio",
            "status",
            "--state-dir",
            "/nonexistent/mls",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode in (2, 3)


def test_version():
    done = subprocess.run(
        [sys.executable, "-m", "mlstorlets.client.cli", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0
    assert done.stdout.strip() == "mlstorlets %s" % mlstorlets.__version__


# The one client Swift gateway: the only modules that may open a way to Swift
# (a swiftclient Connection, SwiftService, a raw request).  Others may name
# swiftclient's exception types, which open nothing.
GATEWAYS = {
    "mlstorlets/client/swift.py",
    "mlstorlets/client/connection.py",
    "mlstorlets/client/stores/swift.py",
    "mlstorlets/client/stores/swiftfs.py",
}


def _python_files(*tops):
    for top in tops:
        for folder, _, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    yield os.path.relpath(path, REPO), open(path).read()


def test_only_the_gateway_talks_to_swift():
    """No client module but the gateway imports swiftclient beyond its
    exceptions; the estimators not even those."""
    import re

    talking = re.compile(
        r"^\s*(from swiftclient(\.(client|service|shell|multithreading))?"
        r" import (?!.*Exception\b)|import swiftclient)",
        re.M,
    )
    offenders = sorted(
        path
        for path, text in _python_files("mlstorlets/client", "storlets")
        if path not in GATEWAYS and talking.search(text)
    )
    assert offenders == []
    estimators = sorted(
        path
        for path, text in _python_files("mlstorlets/client/incremental")
        if re.search(r"^\s*(from|import) swiftclient", text, re.M)
    )
    assert estimators == []


def test_only_the_protocol_module_quotes_parameters_and_encodes_state():
    """Storlet parameters are quoted, and a state is encoded, in one place."""
    found = sorted(
        path
        for path, text in _python_files("mlstorlets", "storlets")
        if "Storlet-Parameter-" in text or "b64encode" in text
    )
    # The report inlines its thumbnails as data: URIs, and the S3 store
    # gives a non-ASCII metadata value as an RFC 2047 encoded word: no state.
    assert found == [
        "mlstorlets/client/report.py",
        "mlstorlets/client/stores/s3.py",
        "mlstorlets/sandbox/protocol.py",
    ]
