#!/bin/sh
# deb postinst: configure most-recently-configured-version (empty on a first install)
#               | abort-upgrade new-version | abort-remove | abort-deconfigure ...
# rpm %post:    1 (install) | 2+ (upgrade)
set -e
# @COMMON@

own_state() {
    for dir in $STATE_DIRS; do
        mkdir -p "$ROOT$dir"
        chown "$USER_NAME:$USER_NAME" "$ROOT$dir"
        chmod 0700 "$ROOT$dir"
    done
}

first_install() {
    own_state
    compile_bytecode
    # the configuration may name a fingerprint key: readable by the service's group only
    chown "root:$USER_NAME" "$ROOT/etc/keysweep/agent.yaml"
    chmod 0640 "$ROOT/etc/keysweep/agent.yaml"
    reload_units
    echo "keysweep: review /etc/keysweep/agent.yaml, then start the agent: systemctl enable --now $UNIT"
}

upgraded() {
    own_state
    remove_bytecode
    compile_bytecode
    reload_units
    if systemd_running; then
        systemctl try-restart "$UNIT" || true
    fi
}

case "$1" in
    configure)
        if [ -z "${2:-}" ]; then first_install; else upgraded; fi ;;
    abort-upgrade | abort-remove | abort-deconfigure) reload_units ;;
    1) first_install ;;
    [2-9] | [1-9][0-9]*) upgraded ;;
    *) unknown_argument postinst "$1" ;;
esac
exit 0
