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
