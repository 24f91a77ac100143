#!/usr/bin/env bash
# Build libsbus.so, the SBus transport of the storlets engine, from the
# storlets source distribution (the wheel does not ship it).
#   usage: build-libsbus.sh DESTDIR [STORLETS_VERSION]
# Both the storage servers (host side) and the sandbox load it from DESTDIR.
set -euo pipefail
dest=${1:?usage: build-libsbus.sh DESTDIR [STORLETS_VERSION]}
version=${2:-18.0.0}
python=${PYTHON:-python3}
if [ -f "$dest/libsbus.so" ] && [ -f "$dest/.storlets-$version" ]; then
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m pip download --quiet --no-binary :all: --no-deps \
    "storlets==$version" -d "$work"
tar -xzf "$work/storlets-$version.tar.gz" -C "$work"
make -s -C "$work/storlets-$version/src/c/sbus" libsbus.so
mkdir -p "$dest/python"
install -m 0755 "$work/storlets-$version/src/c/sbus/libsbus.so" "$dest/libsbus.so"
touch "$dest/.storlets-$version"
echo "built $dest/libsbus.so (storlets $version)"
