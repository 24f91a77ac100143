"""The sandbox's seccomp filter, in the spirit of Docker's default profile.

Inside the sandbox a storlet is an unprivileged process without
capabilities, but the kernel still offers it system calls that no storlet
needs and that are the usual way out of a sandbox or into another process:
new user namespaces (where it would be root again), ``ptrace`` and
``process_vm_*``, ``io_uring``, ``bpf``, ``perf_event_open``, the keyring,
mounts, module loading.  The filter answers those with ``EPERM`` and lets
everything else through.  ``clone3``, whose flags the filter cannot read
(they are behind a pointer), answers ``ENOSYS``, so the C library falls back
to ``clone``, whose ``CLONE_NEWUSER`` flag is refused.  ``fcntl`` may not
resize a pipe (``F_SETPIPE_SZ``): the gateway's pipes are charged to the
host's swift user, whose every pipe Linux cuts to two pages past its soft
limit (:mod:`mlstorlets.server.gateway.pipes`).  Extended attributes answer
``ENOTSUP``, as on a file system without them (which every library takes in
its stride): an object server hands a storlet its objects' own files, whose
attributes hold the object's whole metadata, system metadata included,
where the storlet is to see its user metadata only.

The program is built with libseccomp (``pyseccomp``) and handed to bwrap,
which loads it right before it starts the sandbox's first process
(``--seccomp FD``).
"""

import errno
import tempfile

from mlstorlets.server.gateway import pipes

CLONE_NEWUSER = 0x10000000
DENIED = (
    # Other processes' memory and execution.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    # Namespaces: a new user namespace gives back every capability inside.
    "unshare",
    "setns",
    # Kernel attack surface that no storlet needs.
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    # Mounts and the file system's roots.
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "open_tree",
    "move_mount",
    "mount_setattr",
    "open_by_handle_at",
    "name_to_handle_at",
    # The machine's.
    "reboot",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "syslog",
    "quotactl",
    "iopl",
    "ioperm",
    "lookup_dcookie",
    "fanotify_init",
    "vhangup",
    "uselib",
)

# Read and write alike.
XATTRS = (
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
)

# The same, on a path relative to a directory (Linux 6.13): setxattrat,
# getxattrat, listxattrat, removexattrat, by number (the same on every
# architecture), which older libseccomp does not know by name.
XATTRS_AT = (463, 464, 465, 466)

_program = []


def program():
    """The filter as a BPF program (bytes) for bwrap's ``--seccomp``."""
    if not _program:
        import pyseccomp as seccomp

        rules = seccomp.SyscallFilter(seccomp.ALLOW)
        for name in DENIED:
            try:
                rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
            except (ValueError, RuntimeError, OSError):
                pass  # not a system call of this architecture
        rules.add_rule(
            seccomp.ERRNO(errno.EPERM),
            "clone",
            seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER),
        )
        for name in XATTRS + XATTRS_AT:
            rules.add_rule(seccomp.ERRNO(errno.ENOTSUP), name)
        rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        rules.add_rule(
            seccomp.ERRNO(errno.EPERM),
            "fcntl",
            # The kernel reads the command's low 32 bits only.
            seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, pipes.F_SETPIPE_SZ),
        )
        with tempfile.TemporaryFile() as out:
            rules.export_bpf(out)
            out.seek(0)
            _program.append(out.read())
    return _program[0]
