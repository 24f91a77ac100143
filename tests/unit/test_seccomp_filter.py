"""The sandbox's seccomp program, loaded for real in a child process (no
cluster); tests/functional/test_seccomp.py tries it from a sandbox."""

import subprocess
import sys
import textwrap

from mlstorlets.server.gateway import seccomp

CHILD = textwrap.dedent("""
    import ctypes, errno, os, struct, threading
    from mlstorlets.server.gateway import seccomp
    program = seccomp.program()
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(program)
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;}
    fprog = struct.pack('HL', len(program) // 8, ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog)
    assert libc.prctl(38, 1, 0, 0, 0) == 0          # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.c_void_p(ctypes.addressof(fbuf)), 0,
                      0) == 0                       # PR_SET_SECCOMP, FILTER
    def code(result):
        return 'ok' if result >= 0 else errno.errorcode[ctypes.get_errno()]
    found = {'ptrace': code(libc.ptrace(0, 0, None, None)),
             'unshare-user': code(libc.unshare(0x10000000)),
             'getpid': code(libc.getpid())}
    read, write = os.pipe()
    found['pipe-resize'] = code(libc.fcntl(write, 1031, 1 << 20))   # F_SETPIPE_SZ
    found['pipe-size'] = code(libc.fcntl(write, 1032))              # F_GETPIPE_SZ
    import shutil, tempfile
    with tempfile.NamedTemporaryFile() as f:
        for name, call in (('listxattr', lambda: os.listxattr(f.fileno())),
                           ('setxattr', lambda: os.setxattr(f.fileno(), 'user.x', b'1'))):
            try:
                call()
                found[name] = 'ok'
            except OSError as err:
                found[name] = errno.errorcode[err.errno]
        # listxattrat (Linux 6.13), on the file itself (AT_EMPTY_PATH).
        names = ctypes.create_string_buffer(256)
        found['listxattrat'] = code(libc.syscall(465, f.fileno(), b'', 0x1000, names, 256))
        # What copies attributes takes "none here" in its stride.
        shutil.copy2(f.name, f.name + '.copy')
        os.unlink(f.name + '.copy')
        found['copy2'] = 'ok'
    libc.syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_ulong, ctypes.c_long]
    found['pipe-resize-high'] = code(libc.syscall(72, write, (1 << 32) | 1031, 1 << 20))
    # Threads still start (the C library falls back from clone3 to clone).
    box = []
    thread = threading.Thread(target=box.append, args=(1,))
    thread.start(); thread.join()
    found['thread'] = 'ok' if box == [1] else 'failed'
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    found['fork'] = 'ok' if os.waitpid(pid, 0)[1] >> 8 == 7 else 'failed'
    print(sorted(found.items()))
""")


def test_the_program_is_bpf():
    program = seccomp.program()
    assert program and len(program) % 8 == 0


def test_the_filter_refuses_escapes_and_keeps_the_rest():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(
        sorted(
            {
                "ptrace": "EPERM",
                "unshare-user": "EPERM",
                "getpid": "ok",
                "pipe-resize": "EPERM",
                "pipe-resize-high": "EPERM",
                "pipe-size": "ok",
                "listxattr": "ENOTSUP",
                "setxattr": "ENOTSUP",
                "listxattrat": "ENOTSUP",
                "copy2": "ok",
                "thread": "ok",
                "fork": "ok",
            }.items()
        )
    )
