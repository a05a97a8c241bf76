#!/bin/sh
# deb postrm:  remove | purge | upgrade new-version | failed-upgrade old-version | abort-install [old-version]
#              | abort-upgrade old-version | disappear overwriter overwriter-version
# rpm %postun: 0 (erase: rpm keeps a changed configuration as .rpmsave; state and user stay, as rpm packages do)
#              | 1+ (upgrade)
set -e
# @COMMON@

purge() {
    for dir in $STATE_DIRS /var/log/keysweep /etc/keysweep; do
        rm -rf "$ROOT$dir"
    done
    if getent passwd "$USER_NAME" >/dev/null; then
        userdel "$USER_NAME" || true
    fi
    if getent group "$USER_NAME" >/dev/null; then
        groupdel "$USER_NAME" || true
    fi
}

case "$1" in
    remove | 0) reload_units ;;
    purge) purge; reload_units ;;
    upgrade | failed-upgrade | abort-install | abort-upgrade | disappear | [1-9] | [1-9][0-9]*) ;;
    *) unknown_argument postrm "$1" ;;
esac
exit 0
