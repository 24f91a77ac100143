"""A hostile storlet: the attacks the sandbox tests make from inside.

Every action copies its input to its output and reports what happened in
the output's ``Hostile-Result`` metadata (``allowed ...`` or ``denied:
<error>``), so that a test can tell what a tenant could do.  Parameter
``action``:

``whoami``
    The uid and gid inside, and the entries of ``/mnt/channels`` and
    ``/etc``.
``read``
    Read ``path``; reports its first bytes.
``plant-pid``
    Write ``pid`` into ``/mnt/channels/sandbox.pid``, where the host once
    read the pid it would SIGKILL at the next sandbox start.
``plant-wrapper``
    Spoil the interpreter wrapper the host once wrote in the channel
    directory, and plant ``python3.tmp``, which the host wrote the new one
    to, as a symlink to the host path ``target``.
``block-factory``
    Replace the daemon factory's socket, ``/mnt/channels/factory_pipe``,
    by a directory that is not empty, where the sandbox's next factory
    binds its socket.
``redirect``
    Replace this account's socket of storlet ``storlet`` by a symlink to
    the host path ``target`` (another account's socket).
``mmap``
    Map ``gb`` GB of anonymous memory.
``fork``
    Fork ``n`` processes that wait, then release them; reports how many
    were made.
``hog``
    Allocate ``gb`` GB and touch it (fails with MemoryError).
``leave``
    Start two processes that detach (a double fork and ``setsid``), one
    sleeping and one spinning, and return while they run; reports their
    pids.
``threads``
    Start a thread that waits, one through ``threading`` and one through
    ``_thread`` running a builtin, and return while they run; reports this
    process's pid.
``native-spin``
    Start a thread of native code only (``pthread_create`` through
    ``ctypes``) that spins on a held lock, and return while it runs;
    reports this process's pid.
``alive``
    Which of ``pids`` (comma-separated) still run (a zombie does not).
``hog-procs``
    Fork ``n`` processes that each allocate and touch ``gb`` GB, and wait
    until all have (or died).
``spin-procs``
    Fork ``n`` processes that spin for ``seconds``, and wait for them.
``cgroup``
    This process's cgroup of the ``cpuacct`` (v1) or unified (v2)
    hierarchy, from ``/proc/self/cgroup``.
``syscalls``
    Try system calls a sandbox escape starts with (a new user namespace,
    ``ptrace``, ``io_uring``, ``bpf``, ``perf_event_open``, the keyring,
    ``mount``); reports ``name=ok`` or the errno's name for each (x86_64
    numbers).
``fill``
    Write up to ``mb`` MB into the file ``path``; reports how many bytes
    went in and why it stopped.
``files``
    Create up to ``n`` empty files in the directory ``path``; reports how
    many were made and why it stopped.
``flood``
    ``n`` processes send ``lines`` syslog lines each to ``/dev/log`` as fast
    as they can, written as another service's (``proxy-server: ... DELETE
    ...`` with the marker ``mark``); reports how many were sent.
``plant-tmp``, ``find-tmp``
    Leave a file named after ``mark`` in ``/tmp``; say whether it is there.
``plant-module``, ``find-module``
    Leave ``mark`` in this module's state (what a worker keeps across
    requests); say whether it is there.
``forge-metadata``
    Write ``depth`` nested JSON arrays (default 2000) into every pipe this
    process may write, the engine's metadata pipe among them, before the
    worker writes the output's metadata there.
``tar``
    Output a tar (for an extraction) whose members are named ``ok.txt``,
    ``../../escaped.txt`` and ``a/../b.txt``.
``xattrs``
    List and read the extended attributes of its input's file (on an
    object server, the object's own file, whose attributes hold its whole
    metadata); reports ``name=ok`` or the errno's name for each.
``headers``
    Set output metadata of kind ``kind`` meant to become response headers
    that are not its own: ``value-crlf`` (a ``Set-Cookie`` after a CR/LF
    in a value), ``key-crlf`` (the same in a key), ``smuggle`` (a whole
    second response), ``nul``, ``many`` (200 keys), ``long`` (a 1000-byte
    value), ``surrogate`` (a lone surrogate, which no UTF-8 encodes).
"""

import io
import json
import mmap
import os
import select
import stat
import sys
import tarfile
import time

# What the ``headers`` action sets, by kind.
HEADERS = {
    "value-crlf": {"Hostile-Result": "x\r\nSet-Cookie: stolen=1"},
    "key-crlf": {"X\r\nSet-Cookie": "stolen=1"},
    "smuggle": {
        "Hostile-Result": "x\r\nContent-Length: 0\r\n\r\n"
        "HTTP/1.1 200 OK\r\nSet-Cookie: stolen=1\r\n"
        "Content-Length: 0\r\n\r\n"
    },
    "nul": {"Hostile-Result": "a\x00b"},
    "many": {"Hostile-%d" % i: "x" for i in range(200)},
    "long": {"Hostile-Result": "x" * 1000},
    "surrogate": {"Hostile-Result": "x\udc80"},
}


def errno_name(err):
    import errno

    return errno.errorcode.get(err.errno, str(err.errno))


# Module state, which a worker keeps from one request to the next.
MARKS = set()
# Locks a native thread spins on, kept alive with the module.
HELD = []


class HostileStorlet(object):
    def __init__(self, logger):
        self.logger = logger

    def __call__(self, in_files, out_files, params):
        body = in_files[0].read()
        action = params.get("action", "whoami")
        if action == "headers":
            metadata = dict(HEADERS[params["kind"]])
            metadata["Storlet-Output-Length"] = str(len(body))
            out_files[0].set_metadata(metadata)
            out_files[0].write(body)
            in_files[0].close()
            out_files[0].close()
            return
        if action in ("tar", "report"):
            if action == "tar":
                members = [(n, body) for n in ("ok.txt", "../../escaped.txt", "a/../b.txt")]
            else:
                # A many-object answer whose report names what it likes.
                report = json.dumps({"refused": [[params["refuse"], params.get("why", "x")]]})
                members = [("ok.txt", body), (".mlstorlets-report.json", report.encode())]
            out = io.BytesIO()
            with tarfile.open(fileobj=out, mode="w") as tar:
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            data = out.getvalue()
            out_files[0].set_metadata({"Storlet-Output-Length": str(len(data))})
            out_files[0].write(data)
            in_files[0].close()
            out_files[0].close()
            return
        if action == "xattrs":
            import ctypes
            import errno

            libc = ctypes.CDLL(None, use_errno=True)
            fd, found = in_files[0].fileno(), []
            names = ctypes.create_string_buffer(256)

            def listxattrat():
                # Linux 6.13's, on the file itself (AT_EMPTY_PATH).
                ctypes.set_errno(0)
                if libc.syscall(465, fd, b"", 0x1000, names, 256) < 0:
                    raise OSError(ctypes.get_errno(), "listxattrat")

            for name, call in (
                ("listxattr", lambda: os.listxattr(fd)),
                ("getxattr", lambda: os.getxattr(fd, "user.swift.metadata")),
                ("listxattrat", listxattrat),
            ):
                try:
                    call()
                    found.append("%s=ok" % name)
                except OSError as err:
                    found.append("%s=%s" % (name, errno.errorcode.get(err.errno, err.errno)))
            out_files[0].set_metadata(
                {"Hostile-Result": " ".join(found), "Storlet-Output-Length": str(len(body))}
            )
            out_files[0].write(body)
            in_files[0].close()
            out_files[0].close()
            return
        if action == "hog":
            # No catching: the storlet fails, as a real one out of memory.
            hog = b"x" * int(float(params["gb"]) * 2**30)
            del hog
        try:
            result = "allowed " + getattr(self, action.replace("-", "_"))(params)
        except Exception as err:
            result = "denied: %s %s" % (type(err).__name__, err)
        out_files[0].set_metadata(
            {"Hostile-Result": result[:250], "Storlet-Output-Length": str(len(body))}
        )
        out_files[0].write(body)
        in_files[0].close()
        out_files[0].close()

    @staticmethod
    def forge_metadata(params):
        depth = int(params.get("depth", 2000))
        forged = b"[" * depth + b"]" * depth
        written = 0
        for name in os.listdir("/proc/self/fd"):
            try:
                if stat.S_ISFIFO(os.fstat(int(name)).st_mode):
                    os.write(int(name), forged)
                    written += 1
            except OSError:
                pass
        return "into %d pipes" % written

    @staticmethod
    def whoami(params):
        # etc first: the channel list grows with every storlet that ran.
        return "uid=%d gid=%d etc=%s channels=%s" % (
            os.getuid(),
            os.getgid(),
            ",".join(sorted(os.listdir("/etc"))),
            ",".join(sorted(os.listdir("/mnt/channels"))),
        )

    @staticmethod
    def leave(params):
        read, write = os.pipe()
        for spin in (False, True):
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.write(write, b"%d," % os.getpid())
                    while spin:
                        pass
                    time.sleep(600)
                os._exit(0)
        os.close(write)
        pids = b""
        while pids.count(b",") < 2:
            pids += os.read(read, 100)
        os.close(read)
        return pids.decode().strip(",")

    @staticmethod
    def threads(params):
        import _thread
        import threading

        threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
        _thread.start_new_thread(time.sleep, (600,))
        return str(os.getpid())

    @staticmethod
    def native_spin(params):
        import ctypes

        libc = ctypes.CDLL(None)
        lock = ctypes.c_int(0)
        HELD.append(lock)
        libc.pthread_spin_init(ctypes.byref(lock), 0)
        libc.pthread_spin_lock(ctypes.byref(lock))
        start = ctypes.cast(libc.pthread_spin_lock, ctypes.c_void_p)
        libc.pthread_create(ctypes.byref(ctypes.c_ulong()), None, start, ctypes.byref(lock))
        return str(os.getpid())

    @staticmethod
    def alive(params):
        def runs(pid):
            try:
                with open("/proc/%s/stat" % pid) as f:
                    return f.read().rsplit(")", 1)[1].split()[0] != "Z"
            except OSError:
                return False

        found = [pid for pid in params["pids"].split(",") if runs(pid)]
        return ",".join(found) or "none"

    @staticmethod
    def hog_procs(params):
        size = int(float(params["gb"]) * 2**30)
        read, write = os.pipe()
        children = []
        for _ in range(int(params["n"])):
            pid = os.fork()
            if pid == 0:
                hog = bytearray(size)
                for i in range(0, size, 4096):
                    hog[i] = 1
                os.write(write, b"+")
                time.sleep(600)
            children.append(pid)
        os.close(write)
        pending, ready, died = set(children), 0, 0
        while pending and ready + died < len(children):
            if select.select([read], [], [], 0.1)[0]:
                ready += len(os.read(read, 64))
            for pid in list(pending):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    pending.discard(pid)
                    died += 1
        os.close(read)
        for pid in children:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        return "ready %d, died %d" % (ready, died)

    @staticmethod
    def spin_procs(params):
        end = time.time() + float(params["seconds"])
        children = []
        for _ in range(int(params["n"])):
            pid = os.fork()
            if pid == 0:
                while time.time() < end:
                    pass
                os._exit(0)
            children.append(pid)
        for pid in children:
            os.waitpid(pid, 0)
        return "spun"

    @staticmethod
    def cgroup(params):
        found = {}
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.strip().split(":", 2)
                for name in controllers.split(",") if controllers else [""]:
                    found[name] = path
        # cgroup v1's cpuacct where the host has it, else v2's one tree.
        return found.get("cpuacct", found.get(""))

    @staticmethod
    def syscalls(params):
        import ctypes
        import errno

        libc = ctypes.CDLL(None, use_errno=True)
        tried = {
            "unshare-user": lambda: libc.unshare(0x10000000),
            "ptrace": lambda: libc.ptrace(0, 0, None, None),
            "io_uring_setup": lambda: libc.syscall(425, 1, None),
            "bpf": lambda: libc.syscall(321, 0, None, 0),
            "perf_event_open": lambda: libc.syscall(298, None, 0, -1, -1, 0),
            "keyctl": lambda: libc.syscall(250, 0, -1, 0),
            "mount": lambda: libc.syscall(165, b"none", b"/tmp", b"tmpfs", 0, None),
            # F_SETPIPE_SZ, as on its inputs: pipes the host's user pays for.
            "pipe-resize": lambda: libc.fcntl(os.pipe()[1], 1031, 1 << 20),
        }
        found = []
        for name, call in tried.items():
            ctypes.set_errno(0)
            code = call()
            err = ctypes.get_errno()
            found.append(
                "%s=%s" % (name, "ok" if code >= 0 else errno.errorcode.get(err, str(err)))
            )
        return " ".join(found)

    @staticmethod
    def fill(params):
        written, chunk = 0, b"x" * 65536
        try:
            with open(params["path"], "wb") as f:
                while written < float(params["mb"]) * 2**20:
                    written += f.write(chunk)
                    f.flush()
            why = "done"
        except OSError as err:
            why = errno_name(err)
        finally:
            try:
                os.unlink(params["path"])
            except OSError:
                pass
        return "%d bytes, %s" % (written, why)

    @staticmethod
    def files(params):
        made, why = 0, "done"
        directory = params["path"]
        try:
            for made in range(int(params["n"])):
                open(os.path.join(directory, "f%d" % made), "w").close()
            made += 1
        except OSError as err:
            why = errno_name(err)
        for name in os.listdir(directory):
            if name.startswith("f") and name[1:].isdigit():
                os.unlink(os.path.join(directory, name))
        return "%d files, %s" % (made, why)

    @staticmethod
    def flood(params):
        import socket

        line = (
            '<134>proxy-server: 127.0.0.1 "DELETE /v1/AUTH_victim/c/o" 204 %s\n' % params["mark"]
        ).encode()
        children = []
        for _ in range(int(params["n"])):
            pid = os.fork()
            if pid == 0:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                for _ in range(int(params["lines"])):
                    try:
                        sock.sendto(line, "/dev/log")
                    except OSError:
                        pass
                os._exit(0)
            children.append(pid)
        for pid in children:
            os.waitpid(pid, 0)
        return "sent %d" % (int(params["n"]) * int(params["lines"]))

    @staticmethod
    def plant_tmp(params):
        with open("/tmp/mark-%s" % params["mark"], "w") as f:
            f.write("planted")
        return "planted"

    @staticmethod
    def find_tmp(params):
        found = os.path.exists("/tmp/mark-%s" % params["mark"])
        return "found" if found else "not found"

    @staticmethod
    def plant_module(params):
        MARKS.add(params["mark"])
        return "planted"

    @staticmethod
    def find_module(params):
        return "found" if params["mark"] in MARKS else "not found"

    @staticmethod
    def python_view(params):
        # What of the host's Python an attacker could import or run: each
        # module asked for, the environment's swift-* tools, and what the
        # base installation's site-packages holds.
        import importlib.util
        import site

        def importable(name):
            try:
                return importlib.util.find_spec(name) is not None
            except ImportError:
                return False

        found = [name for name in params["modules"].split(",") if importable(name)]
        bin_dir = os.path.join(sys.prefix, "bin")
        tools = (
            [n for n in os.listdir(bin_dir) if n.startswith("swift")]
            if os.path.isdir(bin_dir)
            else []
        )
        base = sum(
            len(os.listdir(d)) for d in site.getsitepackages([sys.base_prefix]) if os.path.isdir(d)
        )
        engine = params.get("engine", "")
        shown = ",".join(sorted(os.listdir(engine))) if os.path.isdir(engine) else "none"
        return "importable=%s tools=%d base=%d engine=%s" % (
            ",".join(found),
            len(tools),
            base,
            shown,
        )

    @staticmethod
    def read(params):
        with open(params["path"], "rb") as f:
            return repr(f.read(100))

    @staticmethod
    def plant_pid(params):
        with open("/mnt/channels/sandbox.pid", "w") as f:
            f.write("%s\n" % params["pid"])
        return "pid"

    @staticmethod
    def block_factory(params):
        path = "/mnt/channels/factory_pipe"
        os.unlink(path)
        os.mkdir(path)
        with open(os.path.join(path, "kept"), "w"):
            pass
        return "blocked"

    @staticmethod
    def plant_wrapper(params):
        try:
            os.unlink("/mnt/channels/python3.tmp")
        except FileNotFoundError:
            pass
        try:
            # The wrapper, while mounted over /usr/bin/python3, cannot be
            # removed but can be changed, so the host writes it anew.
            with open("/mnt/channels/python3", "r+") as f:
                f.write("spoilt")
        except FileNotFoundError:
            pass
        os.symlink(params["target"], "/mnt/channels/python3.tmp")
        return "symlink"

    @staticmethod
    def redirect(params):
        path = os.path.join("/mnt/channels", params["storlet"])
        os.unlink(path)
        os.symlink(params["target"], path)
        return "symlink"

    @staticmethod
    def mmap(params):
        size = int(float(params["gb"]) * 10**9)
        mmap.mmap(
            -1,
            size,
            flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
        ).close()
        return "mapped %d" % size

    @staticmethod
    def fork(params):
        wanted = int(params["n"])
        release_r, release_w = os.pipe()
        children = []
        try:
            for _ in range(wanted):
                pid = os.fork()
                if pid == 0:  # the child waits for the release, then exits
                    os.close(release_w)
                    os.read(release_r, 1)
                    os._exit(0)
                children.append(pid)
        except OSError as err:
            raise OSError("forked %d, then %s" % (len(children), err))
        finally:
            os.close(release_w)
            os.close(release_r)
            for pid in children:
                os.waitpid(pid, 0)
        return "forked %d" % len(children)
