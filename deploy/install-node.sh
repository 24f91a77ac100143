#!/usr/bin/env bash
# Put mlstorlets' storlet engine on one node of an existing Swift cluster.
# Run on every proxy and every object node, as root:
#
#   deploy/install-node.sh proxy  /etc/swift/proxy-server.conf
#   deploy/install-node.sh object /etc/swift/object-server.conf
#
# It never changes Swift: it refuses, saying what to do, when the Swift or
# storlets installed differ from the versions setup.cfg pins, or when
# installing mlstorlets' requirements would change the version of anything
# already installed; otherwise it installs only what is missing (pip's own
# dry run says what), builds libsbus, and runs `mlstorlets node-config`,
# which edits the server's configuration in place and keeps a copy of it.
#
# Environment:
#   PYTHON      the python the Swift servers run from (default python3)
#   ENGINE_ENV  a directory: install mlstorlets' parts into a venv there
#               (created with --system-site-packages, so that it sees the
#               installed Swift) instead of into PYTHON's environment; needed
#               where PYTHON is a distribution's (PEP 668 externally managed)
#   DRY_RUN=1   say what would be installed, print node-config's diff, and
#               change nothing
#   REMOVE=1    take storlets out of SERVER_CONF (node-config --remove) and
#               say how to uninstall the rest; installs nothing
#   GATEWAY (bubblewrap | docker | podman, default bubblewrap), HOST_ROOT
#   (default /var/lib/storlets), MEMCACHE (default 127.0.0.1:11211), and the
#   sandbox limits MEM_LIMIT (bytes per process), PIDS_LIMIT, CPU_TIME_LIMIT
#   (seconds; bubblewrap only), each defaulting to node-config's.
#   GATEWAY_OPTIONS  further storlet-gateway.conf options, KEY=VALUE
#               separated by blanks (e.g. "container_cpuset_cpus=2-3"):
#               node-config rewrites that file on every run, so options set
#               by hand there are lost; set them here instead.
# Restart the Swift server afterwards (deploy/README.md gives the order);
# then, once per account, run `mlstorlets deploy` with that account's ST_*
# or OS_* variables.
set -euo pipefail
usage="usage: install-node.sh proxy|object SERVER_CONF"
role=${1:?$usage}
conf=${2:?$usage}
case "$role" in proxy | object) ;; *) echo "$usage" >&2 && exit 2 ;; esac
gateway=${GATEWAY:-bubblewrap}
python=${PYTHON:-python3}
engine_env=${ENGINE_ENV:-}
dry_run=${DRY_RUN:-0}
here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/.." && pwd)
# The first pip with `install --dry-run --report`.
pip_min=22.2

die() {
    echo "install-node.sh: $*" >&2
    exit 1
}

# What a python's environment holds, as shell assignments: the pins and
# requirements of the project's setup.cfg (the one place they are written),
# the Swift and storlets installed, whether the environment is a
# distribution's (PEP 668), and its pip.  Refuses a Swift it cannot run with.
inspect() {
    "$1" - "$project/setup.cfg" "$tmp/requirements.txt" "$pip_min" <<'PY'
import configparser
import importlib.metadata
import os
import re
import shlex
import sys
import sysconfig

setup_cfg, requirements, pip_min = sys.argv[1:4]
cfg = configparser.ConfigParser(interpolation=None)
if not cfg.read(setup_cfg):
    sys.exit("install-node.sh: no %s: run the script from a checkout of mlstorlets" % setup_cfg)
wanted = [
    line.strip()
    for line in (cfg["options"]["install_requires"] + "\n"
                 + cfg["options.extras_require"]["cluster"]).splitlines()
    if line.strip() and not line.strip().startswith("#")
]
with open(requirements, "w") as f:
    f.write("\n".join(wanted) + "\n")
pins = {}
for line in wanted:
    found = re.match(r"([A-Za-z0-9._-]+)\s*==\s*([^\s;]+)", line)
    if found:
        pins[found.group(1).lower()] = found.group(2)


def installed(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


where = "%s (%s)" % (sys.executable, sys.prefix)
swift, storlets = installed("swift"), installed("storlets")
if swift is None:
    sys.exit(
        "install-node.sh: no Swift in the environment of %s: this script adds storlets "
        "to an existing Swift; set PYTHON to the python the Swift servers run from" % where
    )
if swift != pins["swift"]:
    sys.exit(
        "install-node.sh: Swift %s is installed in %s; this mlstorlets supports Swift %s "
        "only (setup.cfg): upgrade Swift to %s first, or use the mlstorlets release made "
        "for Swift %s. Nothing was changed." % (swift, where, pins["swift"], pins["swift"], swift)
    )
if storlets is not None and storlets != pins["storlets"]:
    sys.exit(
        "install-node.sh: storlets %s is installed in %s; mlstorlets needs storlets %s "
        "(setup.cfg): uninstall it or install storlets==%s yourself, then run this again. "
        "Nothing was changed." % (storlets, where, pins["storlets"], pins["storlets"])
    )
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
# PEP 668: the marker is the base interpreter's, and a venv is exempt.
managed = sys.prefix == sys.base_prefix and os.path.exists(marker)
pip = installed("pip")
try:
    pip_ok = tuple(map(int, pip.split(".")[:2])) >= tuple(map(int, pip_min.split(".")))
except (AttributeError, ValueError):
    pip_ok = False
found = {
    "swift": swift,
    "storlets_version": pins["storlets"],
    "version": cfg["metadata"]["version"],
    "installed": installed("mlstorlets") or "",
    "managed": str(int(managed)),
    "pip": pip or "",
    "pip_ok": str(int(pip_ok)),
    "prefix": sys.prefix,
}
for name, value in found.items():
    print("%s=%s" % (name, shlex.quote(value)))
PY
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The python that runs mlstorlets: ENGINE_ENV's, or the Swift servers' own.
py=$python
[ -z "$engine_env" ] || py=$engine_env/bin/python

if [ "${REMOVE:-0}" = 1 ]; then
    "$py" -m mlstorlets.client.cli node-config --remove --server-conf "$conf" \
        --conf-dir "$(dirname "$conf")" $([ "$dry_run" = 1 ] && echo --dry-run)
    [ "$dry_run" = 1 ] ||
        echo "restart the server; then uninstall the rest as deploy/README.md says (Uninstall)"
    exit 0
fi

"$python" -c 'import sys' 2>/dev/null || die "no python at $python: set PYTHON"
info=$(inspect "$python") || exit 1
eval "$info"

if [ "$managed" = 1 ] && [ -z "$engine_env" ]; then
    die "$python is a distribution's python (PEP 668: externally managed): its packages" \
        "are the distribution's to install. Set ENGINE_ENV=/some/dir (e.g. /opt/mlstorlets)" \
        "to install mlstorlets' parts into a venv there that sees the installed Swift, and" \
        "run the Swift servers with that venv's python. Nothing was changed."
fi
if [ -n "$engine_env" ]; then
    if [ ! -x "$py" ]; then
        if [ "$dry_run" = 1 ]; then
            echo "would create the venv $engine_env (--system-site-packages, from $python)" \
                "and install into it what it lacks; run without DRY_RUN to see what"
            exit 0
        fi
        "$python" -m venv --system-site-packages "$engine_env" ||
            die "could not create a venv at $engine_env (Debian and Ubuntu: apt-get install python3-venv)"
        echo "created the venv $engine_env, which sees the Swift of $python"
    fi
    # The venv's own view: the Swift it sees, its pip.
    info=$(inspect "$py") || exit 1
    eval "$info"
fi

[ -n "$pip" ] || die "no pip in the environment of $py: install it (Debian and Ubuntu:" \
    "apt-get install python3-pip), or set ENGINE_ENV"
if [ "$pip_ok" != 1 ]; then
    die "pip $pip in the environment of $py is older than $pip_min, which this script needs" \
        "to ask pip what it would install (install --dry-run --report): upgrade pip there" \
        "($py -m pip install 'pip>=$pip_min'), or set ENGINE_ENV. Nothing was changed."
fi

# What pip would do; only what is missing is installed, and nothing the
# environment already has may change version (the Swift servers run with it).
if ! err=$("$py" -m pip install --dry-run --report "$tmp/report.json" --quiet \
    --root-user-action=ignore -r "$tmp/requirements.txt" 2>&1); then
    if grep -q externally-managed-environment <<<"$err"; then
        die "pip refuses to install into the environment of $py (externally managed):" \
            "set ENGINE_ENV=/some/dir to install mlstorlets' parts into a venv there." \
            "Nothing was changed."
    fi
    printf '%s\n' "$err" >&2
    die "pip cannot resolve mlstorlets' requirements in the environment of $py. Nothing was changed."
fi
plan=$("$py" - "$tmp/report.json" "$engine_env" <<'PY'
import importlib.metadata
import json
import os
import sys

report, own = sys.argv[1], sys.argv[2]
own = os.path.realpath(own) + os.sep if own else None
changes, install = [], []
for item in json.load(open(report))["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    install.append("%s==%s" % (name, version))
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        continue
    # What ENGINE_ENV holds is mlstorlets' own; anything else is Swift's.
    path = os.path.realpath(str(dist.locate_file("")))
    if own is None or not (path + os.sep).startswith(own):
        changes.append("%s %s -> %s" % (name, dist.version, version))
if changes:
    print("\n".join("  " + c for c in changes), file=sys.stderr)
    sys.exit(3)
print(" ".join(install))
PY
) || {
    die "installing mlstorlets' requirements would change the packages above, which the" \
        "Swift servers' environment already has. Upgrade them yourself if your Swift" \
        "supports those versions, or set ENGINE_ENV=/some/dir to install mlstorlets' parts" \
        "into a venv of their own. Nothing was changed."
}
if [ -z "$plan" ]; then
    echo "nothing to install: $py has every requirement of mlstorlets[cluster]"
elif [ "$dry_run" = 1 ]; then
    echo "would install into $prefix: $plan"
else
    # shellcheck disable=SC2086 # one argument per requirement
    "$py" -m pip install --quiet --root-user-action=ignore --no-deps $plan
    echo "installed into $prefix: $plan"
fi
if [ "$installed" = "$version" ]; then
    echo "mlstorlets $version is installed"
elif [ "$dry_run" = 1 ]; then
    echo "would install mlstorlets $version from $project${installed:+ (replacing $installed)}"
else
    "$py" -m pip install --quiet --root-user-action=ignore --no-deps "$project"
    echo "installed mlstorlets $version${installed:+ (was $installed)}"
fi

if [ "$gateway" = bubblewrap ] && ! command -v bwrap >/dev/null; then
    if [ "$dry_run" = 1 ]; then
        echo "would install bubblewrap"
    elif command -v apt-get >/dev/null; then
        apt-get install -y bubblewrap
    elif command -v dnf >/dev/null; then
        dnf install -y bubblewrap
    elif command -v yum >/dev/null; then
        yum install -y bubblewrap
    elif command -v zypper >/dev/null; then
        zypper --non-interactive install bubblewrap
    elif command -v apk >/dev/null; then
        apk add bubblewrap
    else
        die "no bwrap, and no apt-get, dnf, yum, zypper or apk to install it: install" \
            "the bubblewrap package, then run this again"
    fi
fi

native=$prefix/lib/storlets
# Built already, for this storlets, by this build script: nothing to do.
if [ -f "$native/libsbus.so" ] && [ -f "$native/.storlets-$storlets_version" ] &&
    [ "$native/libsbus.so" -nt "$here/build-libsbus.sh" ]; then
    echo "libsbus.so is built ($native)"
elif [ "$dry_run" = 1 ]; then
    echo "would build $native/libsbus.so (storlets $storlets_version)"
else
    rm -f "$native/.storlets-$storlets_version"
    PYTHON=$py "$here/build-libsbus.sh" "$native" "$storlets_version"
fi

if [ "$dry_run" = 1 ] && [ "$installed" != "$version" ]; then
    echo "node-config's diff needs mlstorlets installed: run without DRY_RUN"
    exit 0
fi
"$py" -m mlstorlets.client.cli node-config --role "$role" --server-conf "$conf" \
    --conf-dir "$(dirname "$conf")" --host-root "${HOST_ROOT:-/var/lib/storlets}" \
    --gateway "$gateway" --memcache-servers "${MEMCACHE:-127.0.0.1:11211}" \
    --native-lib-dir "$native" \
    ${MEM_LIMIT:+--mem-limit "$MEM_LIMIT"} ${PIDS_LIMIT:+--pids-limit "$PIDS_LIMIT"} \
    ${CPU_TIME_LIMIT:+--cpu-time-limit "$CPU_TIME_LIMIT"} \
    $(for option in ${GATEWAY_OPTIONS:-}; do printf -- '--gateway-option %s ' "$option"; done) \
    $([ "$dry_run" = 1 ] && echo --dry-run)
[ "$dry_run" = 1 ] && exit 0
# The container engines' own share of the sandbox's guarantees (read-only
# root, no capabilities, no new privileges, limits): see deploy/README.md.
case "$gateway" in
podman)
    dropin=/etc/containers/containers.conf.d/mlstorlets.conf
    mkdir -p "$(dirname "$dropin")"
    install -m 0644 "$here/podman-containers.conf" "$dropin"
    echo "installed $dropin"
    ;;
docker)
    if [ ! -e /etc/docker/daemon.json ]; then
        mkdir -p /etc/docker
        install -m 0644 "$here/docker-daemon.json" /etc/docker/daemon.json
        echo "installed /etc/docker/daemon.json; restart dockerd"
    elif ! cmp -s "$here/docker-daemon.json" /etc/docker/daemon.json; then
        echo "WARNING: /etc/docker/daemon.json exists: merge $here/docker-daemon.json into it by hand" >&2
    fi
    ;;
esac
if [ -n "$engine_env" ]; then
    server=$(command -v "swift-$role-server" || echo "/usr/bin/swift-$role-server")
    cat <<EOF
The Swift $role server must now run with $py, which sees both the
installed Swift and mlstorlets. With systemd, a drop-in for its unit, e.g.
/etc/systemd/system/<unit>.service.d/mlstorlets.conf:
  [Service]
  ExecStart=
  ExecStart=$py $server $conf
EOF
fi
echo "configured $conf for storlets ($gateway); restart the server if node-config changed it"
