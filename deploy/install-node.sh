#!/usr/bin/env bash
# Put mlstorlets' storlet engine on one node of an existing Swift cluster.
# Run on every proxy and every object node, as root, in the environment
# (venv) the Swift servers run from:
#
#   deploy/install-node.sh proxy  /etc/swift/proxy-server.conf
#   deploy/install-node.sh object /etc/swift/object-server.conf
#
# Environment: GATEWAY (bubblewrap | docker | podman, default bubblewrap),
# HOST_ROOT (default /var/lib/storlets), MEMCACHE (default 127.0.0.1:11211),
# PYTHON (the Swift environment's python, default python3), and the sandbox
# limits MEM_LIMIT (bytes per process), PIDS_LIMIT, CPU_TIME_LIMIT (seconds;
# bubblewrap only), each defaulting to node-config's.
# Restart the Swift server afterwards; then, once per account, run
# `mlstorlets deploy` with that account's ST_* or OS_* variables.
set -euo pipefail
role=${1:?usage: install-node.sh proxy|object SERVER_CONF}
conf=${2:?usage: install-node.sh proxy|object SERVER_CONF}
gateway=${GATEWAY:-bubblewrap}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)

if [ "$gateway" = bubblewrap ] && ! command -v bwrap >/dev/null; then
    apt-get install -y bubblewrap
fi
"$python" -m pip install --quiet "$here/..[cluster]"
native=$("$python" -c 'import sys, os; print(os.path.join(sys.prefix, "lib", "storlets"))')
PYTHON=$python "$here/build-libsbus.sh" "$native"
"$python" -m mlstorlets.client.cli node-config --role "$role" --server-conf "$conf" \
    --conf-dir "$(dirname "$conf")" --host-root "${HOST_ROOT:-/var/lib/storlets}" \
    --gateway "$gateway" --memcache-servers "${MEMCACHE:-127.0.0.1:11211}" \
    --native-lib-dir "$native" \
    ${MEM_LIMIT:+--mem-limit "$MEM_LIMIT"} ${PIDS_LIMIT:+--pids-limit "$PIDS_LIMIT"} \
    ${CPU_TIME_LIMIT:+--cpu-time-limit "$CPU_TIME_LIMIT"}
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
echo "configured $conf for storlets ($gateway); restart the server"
