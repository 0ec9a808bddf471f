#!/bin/sh
# Build the unified-exec image with podman, from Debian packages only (no registry):
#   1. a bookworm rootfs by debootstrap, imported as localhost/unified-exec-base:bookworm
#   2. a wheelhouse of unified_exec and its runtime dependencies (pip, from PyPI)
#   3. podman build -f deploy/Containerfile -> localhost/unified-exec:VERSION
# Needs root (debootstrap), podman, debootstrap. RUN steps use chroot isolation: crun
# refuses hybrid cgroup hosts ("cgroups in hybrid mode not supported"), and the
# build needs no network (the wheels are in the context). Usage: deploy/build-image.sh [PYTHON]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
py=${1:-$root/.venv/bin/python}
version=$("$py" -c 'import unified_exec; print(unified_exec.__version__)' 2>/dev/null || echo 0.1.0)
work=${UE_IMAGE_WORK:-/tmp/unified-exec-image}
mkdir -p "$work"

if ! podman image exists localhost/unified-exec-base:bookworm; then
    if [ ! -x "$work/rootfs/usr/bin/tini" ]; then
        rm -rf "$work/rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,tini,ca-certificates \
            bookworm "$work/rootfs" http://deb.debian.org/debian
        rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    fi
    tar -C "$work/rootfs" -c . | podman import - localhost/unified-exec-base:bookworm
fi

ctx="$work/context"
rm -rf "$ctx" && mkdir -p "$ctx/wheels"
cp "$here/Containerfile" "$ctx/Containerfile"
"$py" -m pip wheel --quiet --wheel-dir "$ctx/wheels" "$root"
podman build --isolation=chroot -t "localhost/unified-exec:$version" -t localhost/unified-exec:latest "$ctx"
echo "built localhost/unified-exec:$version"
