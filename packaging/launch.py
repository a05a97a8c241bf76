"""/opt/keysweep/launch.py: runs keysweep on the host's own Python from the bundled, per-interpreter libraries.

/usr/bin/keysweep runs it as `python3 -I -S -B launch.py ARGS`: isolated (no PYTHON* variables, no user
site-packages, no working directory on the import path), without the system's site-packages (-S: only the
bundled libraries are imported) and without writing bytecode (the package compiles it when installed).
lib/common holds what is the same for every interpreter, lib/cpXY what was built for CPython X.Y alone (compiled
extensions), lib/cpXY-cpXY... what several share (the pure-Python packages of one dependency lock: cp39-cp310 for
3.9 and 3.10; packaging/split-sites.py). When the running interpreter has no cpXY directory, the newest supported
/usr/bin/python3.Y present is used instead; when there is none, one line says what is needed (exit 3). Kept to
Python 3.6 syntax (no newer feature) so that an old interpreter can say what is missing.
"""

import os
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
LIB = os.path.join(HERE, "lib")


def supported() -> "list[tuple[int, int]]":
    versions = []
    for name in os.listdir(LIB):
        if name.startswith("cp3") and name[3:].isdigit():
            versions.append((3, int(name[3:])))
    return sorted(versions, reverse=True)


def libs_for(version: "tuple[int, int]") -> "list[str]":
    """The interpreter's own directory, those it shares with others, then common."""
    tag = f"cp{version[0]}{version[1]}"
    shared = sorted(name for name in os.listdir(LIB) if "-" in name and tag in name.split("-"))
    return [os.path.join(LIB, name) for name in [tag, *shared, "common"]]


def main() -> None:
    current = (sys.version_info[0], sys.version_info[1])
    versions = supported()
    if current not in versions:
        for version in versions:
            candidate = f"/usr/bin/python{version[0]}.{version[1]}"
            if os.access(candidate, os.X_OK):
                os.execv(candidate, [candidate, "-I", "-S", "-B", os.path.realpath(__file__)] + sys.argv[1:])
        names = ", ".join(f"{major}.{minor}" for major, minor in sorted(versions))
        sys.stderr.write(
            f"keysweep: needs CPython {names} (/usr/bin/python3 or /usr/bin/python3.Y); this host has"
            f" {current[0]}.{current[1]} at {sys.executable}. Install one of them (for example the python3.11"
            " package) and run keysweep again.\n"
        )
        sys.exit(3)
    sys.path[0:0] = libs_for(current)
    import runpy

    runpy.run_module("keysweep", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
