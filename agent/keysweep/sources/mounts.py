"""The mount table (``/proc/self/mountinfo``): which directories are pseudo or network filesystems.

tmpfs is deliberately not pseudo: it holds ``/run/secrets`` and Kubernetes' mounted secrets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"

# kernel interfaces and virtual trees: nothing a user wrote lives there, and reading some files blocks or is costly
PSEUDO_FS: frozenset[str] = frozenset(
    {
        "proc", "sysfs", "cgroup", "cgroup2", "devpts", "devtmpfs", "debugfs", "tracefs", "securityfs", "bpf",
        "pstore", "configfs", "fusectl", "mqueue", "hugetlbfs", "autofs", "binfmt_misc", "efivarfs", "selinuxfs",
        "nsfs", "rpc_pipefs", "nfsd", "fuse.lxcfs", "fuse.gvfsd-fuse", "fuse.portal",
    }
)  # fmt: skip

NETWORK_FS: frozenset[str] = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "sshfs", "fuse.sshfs", "9p", "ceph", "fuse.ceph", "glusterfs",
        "fuse.glusterfs", "lustre", "afs", "ncpfs", "davfs", "fuse.davfs2", "fuse.s3fs", "fuse.rclone",
        "fuse.gcsfuse", "fuse.goofys", "fuse.mountpoint-s3", "gpfs", "beegfs", "orangefs", "vboxsf",
    }
)  # fmt: skip

# skipped by path under a scanned "/" even when the mount table cannot be read
PSEUDO_PATHS: frozenset[str] = frozenset({"/proc", "/sys", "/dev"})

_ESCAPE = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\040``-style octal."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class Mount:
    mount_id: int
    parent_id: int
    device: str  # "major:minor"
    root: str
    mount_point: str
    fstype: str
    source: str

    @property
    def is_pseudo(self) -> bool:
        return self.fstype in PSEUDO_FS

    @property
    def is_network(self) -> bool:
        return self.fstype in NETWORK_FS or self.fstype.split(".", 1)[-1] in NETWORK_FS


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse mountinfo lines; malformed lines are ignored (the kernel writes this file, a bad line is not ours)."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            mounts.append(
                Mount(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    device=fields[2],
                    root=unescape(fields[3]),
                    mount_point=unescape(fields[4]),
                    fstype=fields[sep + 1],
                    source=unescape(fields[sep + 2]) if len(fields) > sep + 2 else "",
                )
            )
        except (ValueError, IndexError):
            continue
    return mounts


def read_mounts(path: str = MOUNTINFO) -> list[Mount]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            return parse_mountinfo(fh.read())
    except OSError:
        return []


class MountTable:
    """Mount points by path; a later mount on the same point hides the earlier one, as in the kernel."""

    def __init__(self, mounts: Iterable[Mount]) -> None:
        self._by_point: dict[str, Mount] = {}
        for m in mounts:
            self._by_point[m.mount_point] = m

    @classmethod
    def current(cls) -> MountTable:
        return cls(read_mounts())

    def at(self, path: str) -> Mount | None:
        """The mount whose mount point is exactly ``path``."""
        return self._by_point.get(path)

    def containing(self, path: str) -> Mount | None:
        """The mount that holds ``path`` (longest mount-point prefix)."""
        p = path.rstrip("/") or "/"
        while True:
            m = self._by_point.get(p)
            if m is not None:
                return m
            if p == "/":
                return None
            p = p.rsplit("/", 1)[0] or "/"

    def points_under(self, path: str) -> list[Mount]:
        prefix = path.rstrip("/") + "/"
        return [m for point, m in self._by_point.items() if point.startswith(prefix)]
