#!/bin/sh
# /usr/bin/keysweep: runs keysweep from its bundled environment in /opt/keysweep. Isolated mode (-I): no PYTHON*
# variables, no user site-packages, no working directory on the import path; -B: never writes bytecode (the
# package ships it precompiled).
exec /opt/keysweep/bin/python -I -B -m keysweep "$@"
