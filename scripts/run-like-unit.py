#!/usr/bin/python3
"""Run a command with the confinement a systemd unit declares, where no systemd manager runs (CI in a container).

    run-like-unit.py UNIT -- COMMAND [ARG...]        (as root)

Read from the unit file itself: User=/Group=, AmbientCapabilities= (also the bounding set), NoNewPrivileges=,
Environment=, Nice=, MemoryDenyWriteExecute= (as prctl(PR_SET_MDWE), Linux 6.3+), SystemCallFilter= with
SystemCallErrorNumber= (group names expanded by `systemd-analyze syscall-filter`, applied with libseccomp: Debian's
python3-seccomp) and ProtectProc=/ProcSubset= (a private mount namespace with its own /proc mounted with hidepid=
and subset=). Not emulated: the other mount settings (ProtectSystem=, ProtectHome=, ...) and cgroup limits.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pwd
import subprocess
import sys

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 0x40000


def service_settings(unit: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    section = ""
    with open(unit, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
            elif line and not line.startswith(("#", ";")) and section == "Service" and "=" in line:
                key, _, value = line.partition("=")
                settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def expand(name: str, seen: set[str] | None = None) -> set[str]:
    """A syscall group (@name) as syscall names, nested groups expanded."""
    if not name.startswith("@"):
        return {name}
    seen = set() if seen is None else seen
    if name in seen:
        return set()
    seen.add(name)
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True)
    calls: set[str] = set()
    for line in out.stdout.splitlines()[1:]:
        item = line.strip()
        if item and not item.startswith("#"):
            calls |= expand(item, seen)
    return calls


def allowed_syscalls(filters: list[str]) -> set[str]:
    """systemd's semantics: the first line without "~" is an allow list; "~" lines take names away from it."""
    allowed: set[str] = set()
    for value in filters:
        deny = value.startswith("~")
        names = set().union(*(expand(n) for n in value.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
    return allowed


def private_proc(settings: dict[str, list[str]]) -> None:
    """ProtectProc=/ProcSubset=: this process gets its own mount namespace and a /proc mounted with those options."""
    options = []
    if settings.get("ProtectProc", ["default"])[-1] != "default":
        options.append(f"hidepid={settings['ProtectProc'][-1]}")
    if settings.get("ProcSubset", ["all"])[-1] == "pid":
        options.append("subset=pid")
    if not options:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if (libc.unshare(CLONE_NEWNS) != 0
            or libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0
            or libc.mount(b"proc", b"/proc", b"proc", 0, ",".join(options).encode()) != 0):
        raise OSError(ctypes.get_errno(), f"cannot mount /proc with {','.join(options)}")


def confine(settings: dict[str, list[str]], argv: list[str]) -> None:
    import seccomp  # Debian: python3-seccomp

    for assignment in settings.get("Environment", []):
        key, _, value = assignment.partition("=")
        os.environ[key] = value
    os.environ["HOME"] = pwd.getpwuid(os.getuid()).pw_dir
    if settings.get("Nice"):
        os.nice(int(settings["Nice"][-1]) - os.nice(0))
    if settings.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes":
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
            print("run-like-unit: this kernel has no PR_SET_MDWE; MemoryDenyWriteExecute not applied", file=sys.stderr)
    filters = settings.get("SystemCallFilter", [])
    if filters:
        err = getattr(errno, settings.get("SystemCallErrorNumber", ["EPERM"])[-1])
        flt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(err))
        for name in sorted(allowed_syscalls(filters)):
            try:
                flt.add_rule(seccomp.ALLOW, name)
            except (RuntimeError, ValueError):
                pass  # not a syscall on this architecture
        flt.load()
    os.execv(argv[0], argv)


def main() -> int:
    args = sys.argv[1:]
    confined = args[:1] == ["--confined"]
    if confined:
        args = args[1:]
    if len(args) < 3 or args[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    unit, argv = args[0], args[2:]
    settings = service_settings(unit)
    if confined:
        confine(settings, argv)
    private_proc(settings)
    user = settings.get("User", ["root"])[-1]
    group = settings.get("Group", [user])[-1]
    caps = ",".join("+" + c.lower().removeprefix("cap_") for v in settings.get("AmbientCapabilities", [])
                    for c in v.split())
    setpriv = ["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups"]
    if caps:
        setpriv += [f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set=-all,{caps}"]
    else:
        setpriv += ["--inh-caps=-all", "--bounding-set=-all"]
    if settings.get("NoNewPrivileges", ["no"])[-1] == "yes" or settings.get("SystemCallFilter"):
        setpriv.append("--no-new-privs")
    os.execvp("setpriv", [*setpriv, sys.executable, "-I", os.path.abspath(__file__), "--confined", unit, "--", *argv])
    return 1


if __name__ == "__main__":
    sys.exit(main())
