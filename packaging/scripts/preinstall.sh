#!/bin/sh
# deb preinst: install [old-version] | upgrade old-version | abort-upgrade new-version
# rpm %pre:    1 (install) | 2+ (upgrade)
set -e
# @COMMON@

create_user() {
    if ! getent group "$USER_NAME" >/dev/null; then
        groupadd --system "$USER_NAME"
    fi
    if ! getent passwd "$USER_NAME" >/dev/null; then
        useradd --system --gid "$USER_NAME" --home-dir /var/lib/keysweep --no-create-home \
            --shell /usr/sbin/nologin --comment "keysweep agent" "$USER_NAME"
    fi
}

case "$1" in
    install | upgrade | [1-9] | [1-9][0-9]*) create_user ;;
    abort-upgrade) ;;
    *) unknown_argument preinst "$1" ;;
esac
exit 0
