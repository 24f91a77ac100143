"""The sandbox's seccomp filter, tried from inside by a hostile storlet.

Each system call a sandbox escape starts with answers EPERM: a new user
namespace (root again inside it), ptrace, io_uring, bpf, perf_event_open,
the keyring, mount.  Ordinary storlets (OpenCV, numpy, dlib, threads) keep
working: the rest of the functional suite runs them under the same filter.
The hostile storlet uses x86_64's system call numbers.
"""

RESULT = "x-object-meta-hostile-result"


def test_escape_syscalls_are_refused(conn, container):
    conn.put_object(container, "x", b"x")
    headers, _ = conn.get_object(
        container,
        "x",
        headers={"X-Run-Storlet": "hostile.py", "X-Storlet-Parameter-1": "action:syscalls"},
    )
    report = headers[RESULT]
    print("from inside the sandbox: %s" % report)
    found = dict(item.split("=") for item in report.split()[1:])
    assert found == {
        name: "EPERM"
        for name in (
            "unshare-user",
            "ptrace",
            "io_uring_setup",
            "bpf",
            "perf_event_open",
            "keyctl",
            "mount",
            "pipe-resize",
        )
    }


def test_an_objects_file_shows_no_extended_attributes(conn, container):
    # On an object server the storlet reads the object's own file, whose
    # attributes hold the object's whole metadata (system metadata too).
    conn.put_object(
        container, "x", b"x", headers={"X-Object-Meta-Own": "shown as metadata, not as xattr"}
    )
    headers, body = conn.get_object(
        container,
        "x",
        headers={"X-Run-Storlet": "hostile.py", "X-Storlet-Parameter-1": "action:xattrs"},
    )
    assert body == b"x"
    assert headers[RESULT] == "listxattr=ENOTSUP getxattr=ENOTSUP listxattrat=ENOTSUP"
