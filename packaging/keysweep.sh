#!/bin/sh
# /usr/bin/keysweep: runs keysweep with the host's Python 3 and the libraries bundled in /opt/keysweep/lib
# (packaging/launch.py picks the interpreter's directories, or a supported /usr/bin/python3.Y, or says in one line
# which versions it needs).
for python in /usr/bin/python3 /usr/bin/python3.14 /usr/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.11 \
    /usr/bin/python3.10 /usr/bin/python3.9; do
    if [ -x "$python" ]; then
        exec "$python" -I -S -B /opt/keysweep/launch.py "$@"
    fi
done
echo "keysweep: no Python 3 interpreter in /usr/bin (install python3, version 3.9 to 3.14)" >&2
exit 3
