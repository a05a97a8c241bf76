# Shared by the four maintainer scripts; packaging/build.sh puts it in place of their marker line.
# The same script serves deb and rpm: dpkg passes a word (configure, upgrade, remove, purge, ...) and maybe a
# version, rpm passes a count of installed instances (1 = install, 2+ = upgrade in %pre/%post; 0 = erase,
# 1+ = upgrade in %preun/%postun). DPKG_ROOT is dpkg's alternate root (empty on a normal install).
ROOT="${DPKG_ROOT:-}"
UNIT=keysweep.service
USER_NAME=keysweep
STATE_DIRS="/var/lib/keysweep /var/cache/keysweep"

# systemd is running in the root being installed to (never true for an alternate root, whose /run is not live)
systemd_running() {
    [ -d "$ROOT/run/systemd/system" ]
}

reload_units() {
    if systemd_running; then
        systemctl daemon-reload || true
    fi
}

unknown_argument() {
    echo "keysweep $1: called with unknown argument '$2'" >&2
    exit 1
}

# The bundled libraries' bytecode, compiled for every supported interpreter on the host (as Debian's py3compile
# does; the package ships none) and removed before the files go. Not for an alternate root: its interpreters are
# not the ones running here.
LIB=/opt/keysweep/lib

compile_bytecode() {
    [ -z "$ROOT" ] || return 0
    seen=
    for python in /usr/bin/python3 /usr/bin/python3.9 /usr/bin/python3.1[0-9]; do
        [ -x "$python" ] || continue
        tag=$("$python" -c 'import sys; print("cp%d%d" % sys.version_info[:2])' 2>/dev/null) || continue
        case " $seen " in *" $tag "*) continue ;; esac
        seen="$seen $tag"
        if [ -d "$LIB/$tag" ]; then
            # common, its own directory and those it shares with other interpreters (cp39-cp310, ...)
            dirs="$LIB/common $LIB/$tag"
            for shared in "$LIB"/*-*; do
                case "-${shared##*/}-" in *"-$tag-"*) dirs="$dirs $shared" ;; esac
            done
            # shellcheck disable=SC2086 # the directories' names hold no blanks
            "$python" -I -m compileall -q $dirs >/dev/null ||
                echo "keysweep: could not compile all bytecode with $python (keysweep still runs)" >&2
        fi
    done
}

remove_bytecode() {
    if [ -d "$ROOT$LIB" ]; then
        find "$ROOT$LIB" -depth -type d -name __pycache__ -exec rm -rf {} +
    fi
}
