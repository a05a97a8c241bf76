#!/usr/bin/python3
"""Run a command with the confinement a systemd unit declares, where no systemd manager runs (CI in a container).

    run-like-unit.py UNIT -- COMMAND [ARG...]        (as root)

Read from the unit file itself: User=/Group=, AmbientCapabilities= (also the bounding set), NoNewPrivileges=,
Environment=, Nice=, MemoryDenyWriteExecute= (as prctl(PR_SET_MDWE), Linux 6.3+), SystemCallFilter= with
SystemCallErrorNumber= (group names expanded by `systemd-analyze syscall-filter`, applied with libseccomp: Debian's
python3-seccomp), and in a private mount namespace ProtectSystem=strict (everything read-only except the API file
systems and the State/Cache/LogsDirectory= directories; this also covers ProtectHome=read-only) and
ProtectProc=/ProcSubset= (a /proc mounted with hidepid=/subset=). Not emulated: the Private*=, ProtectKernel*=
and other mount settings, and cgroup limits.
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
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x1, 0x20, 0x1000, 0x4000, 0x40000
API_FILE_SYSTEMS = ("/proc", "/sys", "/dev")


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


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    src, tgt, fs, opts = (v.encode() if v is not None else None for v in (source, target, fstype, data))
    if libc.mount(src, tgt, fs, flags, opts) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def private_mounts(settings: dict[str, list[str]]) -> None:
    """A private mount namespace with ProtectSystem=strict (everything read-only but the API file systems and the
    State/Cache/LogsDirectory= directories) and ProtectProc=/ProcSubset= (a /proc mounted with hidepid=/subset=)."""
    proc_options = []
    if settings.get("ProtectProc", ["default"])[-1] != "default":
        proc_options.append(f"hidepid={settings['ProtectProc'][-1]}")
    if settings.get("ProcSubset", ["all"])[-1] == "pid":
        proc_options.append("subset=pid")
    strict = settings.get("ProtectSystem", ["no"])[-1] == "strict"
    if not proc_options and not strict:
        return
    if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    if strict:
        writable = [f"{base}/{name}" for key, base in (("StateDirectory", "/var/lib"), ("CacheDirectory", "/var/cache"),
                                                        ("LogsDirectory", "/var/log"))
                    for value in settings.get(key, []) for name in value.split()]
        for path in writable:
            os.makedirs(path, exist_ok=True)
            _mount(path, path, None, MS_BIND, None)
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            points = [line.split()[4].encode().decode("unicode_escape") for line in f]
        for point in points:
            if point in writable or any(point == a or point.startswith(a + "/") for a in API_FILE_SYSTEMS):
                continue
            try:
                _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
            except OSError as exc:
                print(f"run-like-unit: {exc}; left as it is", file=sys.stderr)
    if proc_options:
        _mount("proc", "/proc", "proc", 0, ",".join(proc_options))


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
    private_mounts(settings)
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
