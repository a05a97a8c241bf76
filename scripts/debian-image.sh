#!/usr/bin/env bash
# Makes the Docker image keysweep-debian:SUITE from Debian packages (no image registry needed): a minbase root file
# system built by mmdebstrap with python3, python3-venv and passwd, imported with `docker import`. It is the local
# base of the keysweep image (bookworm) and the clean host of the distribution tests (bullseye, bookworm, trixie).
# Cached twice: the tarball under $KEYSWEEP_CACHE_DIR (default ~/.cache/keysweep/rootfs, kept across clones and CI
# runs on one machine) and the imported image (skipped when its label matches the recipe).
#   scripts/debian-image.sh SUITE    prints the image name on stdout
# Needs root, a Docker engine (scripts/docker-engine.sh) and Debian's apt mirror; installs mmdebstrap when missing.
set -euo pipefail
suite=${1:?usage: debian-image.sh SUITE (bullseye, bookworm, trixie)}
include=python3,python3-venv,passwd
recipe="mmdebstrap --variant=minbase --include=$include $suite"
image=keysweep-debian:$suite
cache=${KEYSWEEP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/keysweep}/rootfs
tarball=$cache/$suite-minbase-$(printf '%s' "$recipe" | sha256sum | cut -c1-12).tar

if [ "$(docker image inspect --format '{{ index .Config.Labels "org.keysweep.recipe" }}' "$image" 2>/dev/null)" = "$recipe" ]; then
    echo "$image"
    exit 0
fi
if [ ! -s "$tarball" ]; then
    if ! command -v mmdebstrap >/dev/null; then
        echo "debian-image: installing Debian's mmdebstrap (builds the test images' root file systems)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null; }
    fi
    mkdir -p "$cache"
    echo "debian-image: $recipe -> $tarball" >&2
    start=$(date +%s)
    # mmdebstrap picks the output format from the name: it must end in .tar
    mmdebstrap --quiet --variant=minbase --include="$include" "$suite" "${tarball%.tar}.part.tar" >&2
    mv "${tarball%.tar}.part.tar" "$tarball"
    echo "debian-image: root file system built in $(( $(date +%s) - start ))s" >&2
fi
docker import --change "LABEL org.keysweep.recipe=\"$recipe\"" --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tarball" "$image" >/dev/null
echo "$image"
