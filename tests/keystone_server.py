"""A real Keystone for the tests: PyPI's ``keystone`` on sqlite.

:class:`Keystone` bootstraps it with ``keystone-manage`` (fernet keys,
``db_sync``, ``bootstrap``: an ``admin`` user with the ``admin`` role on the
``admin`` project of the ``Default`` domain) and serves its WSGI application
from a threaded stdlib server, started as ``python keystone_server.py CONF
PORT [HOST]``.  Every step has a time limit, and :meth:`Keystone.stop` ends
the one process it started.
"""

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request

SETUP_TIMEOUT = 120.0
START_TIMEOUT = 60.0
REGION = "RegionOne"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Keystone:
    """One Keystone in ``directory`` (config, sqlite database, keys, log).

    Parameters
    ----------
    directory : str
        Created if missing; the caller removes it.
    host : str
        The address it serves on (127.0.0.1: on a free port; any other: on
        Keystone's own port, 5000).
    launch : callable, optional
        Takes the server's command line, gives the one to start (to start
        it in a network namespace of its own).
    reach : callable, optional
        A context manager within which this process reaches ``host``.
    """

    def __init__(self, directory, host="127.0.0.1", launch=None, reach=None):
        self.directory = directory
        self.host = host
        self.launch = launch or (lambda argv: argv)
        self.reach = reach or contextlib.nullcontext
        self.port = None
        self.password = secrets.token_urlsafe(12)
        self.process = None
        self._admin = None

    @property
    def url(self):
        return "http://%s:%d/v3" % (self.host, self.port)

    @property
    def conf(self):
        return os.path.join(self.directory, "keystone.conf")

    @property
    def log(self):
        return os.path.join(self.directory, "keystone.log")

    def env(self, user="admin", password=None, project="admin"):
        """The ``OS_*`` variables of a user, as for the ``swift`` CLI."""
        return {
            "OS_AUTH_URL": self.url,
            "OS_USERNAME": user,
            "OS_PASSWORD": password or self.password,
            "OS_PROJECT_NAME": project,
            "OS_USER_DOMAIN_NAME": "Default",
            "OS_PROJECT_DOMAIN_NAME": "Default",
            "OS_IDENTITY_API_VERSION": "3",
        }

    # -- life cycle ----------------------------------------------------
    def start(self):
        os.makedirs(os.path.join(self.directory, "fernet"), exist_ok=True)
        self.port = _free_port() if self.host == "127.0.0.1" else 5000
        self._write_conf()
        user = _user_and_group()
        self._manage("fernet_setup", "--keystone-user", user[0], "--keystone-group", user[1])
        self._manage("db_sync")
        self._manage(
            "bootstrap",
            "--bootstrap-password",
            self.password,
            "--bootstrap-region-id",
            REGION,
            *[
                "--bootstrap-%s-url=%s" % (kind, self.url)
                for kind in ("public", "internal", "admin")
            ],
        )
        with open(os.path.join(self.directory, "server.log"), "ab") as out:
            self.process = subprocess.Popen(
                self.launch(
                    [sys.executable, os.path.abspath(__file__), self.conf, str(self.port)]
                    + [self.host]
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with self.reach():
                    urllib.request.urlopen(self.url, timeout=2).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        "keystone did not come up on port %d; see %s" % (self.port, self.directory)
                    )
                time.sleep(0.1)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _write_conf(self):
        d = self.directory
        with open(self.conf, "w") as f:
            f.write(
                "[DEFAULT]\nlog_file = %s\n"
                "[database]\nconnection = sqlite:///%s\n"
                "[token]\nprovider = fernet\n"
                # bcrypt's fewest rounds: every user made and every token
                # issued hashes a password, and these are throwaway ones.
                "[identity]\npassword_hash_rounds = 4\n"
                "[fernet_tokens]\nkey_repository = %s\n"
                "[fernet_receipts]\nkey_repository = %s\n"
                % (
                    self.log,
                    os.path.join(d, "keystone.db"),
                    os.path.join(d, "fernet"),
                    os.path.join(d, "fernet"),
                )
            )

    def _manage(self, *args):
        manage = os.path.join(os.path.dirname(sys.executable), "keystone-manage")
        result = subprocess.run(
            [manage, "--config-file", self.conf] + list(args),
            capture_output=True,
            text=True,
            timeout=SETUP_TIMEOUT,
        )
        if result.returncode:
            raise RuntimeError("keystone-manage %s failed: %s" % (args[0], result.stderr[-2000:]))

    # -- administration ------------------------------------------------
    def admin(self):
        """A keystoneclient v3 client of the admin user (one token for
        every call)."""
        if self._admin is None:
            self._admin = self._admin_client()
        return self._admin

    def _admin_client(self):
        from keystoneauth1 import session
        from keystoneauth1.identity import v3
        from keystoneclient.v3 import client

        auth = v3.Password(
            auth_url=self.url,
            username="admin",
            password=self.password,
            project_name="admin",
            user_domain_name="Default",
            project_domain_name="Default",
        )
        return client.Client(session=session.Session(auth=auth), interface="public")

    def add_object_store(self, proxy_port, proxy_host="127.0.0.1"):
        """List a Swift proxy as the ``object-store`` endpoint."""
        ks = self.admin()
        service = ks.services.create(name="swift", type="object-store")
        url = "http://%s:%d/v1/AUTH_$(project_id)s" % (proxy_host, proxy_port)
        for interface in ("public", "internal", "admin"):
            ks.endpoints.create(service, url, interface=interface, region=REGION)

    def grant_reseller_admin(self, user="admin", project="admin"):
        """Give ``user`` Swift's reseller admin role (``ResellerAdmin``) on
        ``project``: enabling storlets on an account needs it."""
        ks = self.admin()
        ks.roles.grant(
            self.add_role("ResellerAdmin"),
            user=ks.users.find(name=user),
            project=ks.projects.find(name=project).id,
        )

    def add_project(self, name):
        """A new project of the ``Default`` domain; returns its id."""
        return self.admin().projects.create(name, domain="default").id

    def add_role(self, name):
        """A role of that name (made if missing)."""
        ks = self.admin()
        try:
            return ks.roles.find(name=name)
        except Exception:
            return ks.roles.create(name)

    def add_user(self, name, role, project="admin"):
        """A new user with ``role`` on ``project``; returns its ``OS_*``."""
        ks = self.admin()
        password = secrets.token_urlsafe(12)
        user = ks.users.create(name, domain="default", password=password)
        project_id = ks.projects.find(name=project).id
        ks.roles.grant(ks.roles.find(name=role), user=user, project=project_id)
        return self.env(name, password, project)


def _user_and_group():
    import grp
    import pwd

    return (pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name)


def serve(conf, port, host="127.0.0.1"):
    """Serve Keystone's public WSGI application on ``host:port``."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    os.environ["OS_KEYSTONE_CONFIG_FILES"] = conf
    # oslo.config parses the command line when the application loads.
    del sys.argv[1:]
    from keystone.wsgi.api import application

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    make_server(host, port, application, Server, Quiet).serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
