#!/bin/sh
# deb prerm:  remove | upgrade new-version | deconfigure in-favour ... | failed-upgrade old-version
# rpm %preun: 0 (erase) | 1+ (upgrade: the new version's %post has already compiled the bytecode and restarts
#             the service)
set -e
# @COMMON@

stop_and_disable() {
    if command -v systemctl >/dev/null 2>&1; then
        systemctl ${ROOT:+"--root=$ROOT"} --no-reload disable "$UNIT" >/dev/null 2>&1 || true
    fi
    if systemd_running; then
        systemctl stop "$UNIT" || true
    fi
}

case "$1" in
    remove | deconfigure | 0) stop_and_disable; remove_bytecode ;;
    upgrade | failed-upgrade | [1-9] | [1-9][0-9]*) ;;
    *) unknown_argument prerm "$1" ;;
esac
exit 0
