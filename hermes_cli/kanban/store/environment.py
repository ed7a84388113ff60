"""The environment a board may live in: an SQLite with the WAL-reset fix, a filesystem with reliable locks (DESIGN.md
Health). Checked before any board file is opened or created (store/opening.py)."""

from __future__ import annotations

import os

import apsw

from ..core.errors import UnsafeFilesystem, UnsupportedSQLite

#: filesystems where POSIX locks or shared memory are not reliable (DESIGN.md Health)
UNSAFE_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse", "fuseblk", "sshfs", "ceph", "glusterfs", "davfs"}


def sqlite_version() -> tuple[int, int, int]:
    major, minor, patch = (int(p) for p in apsw.sqlite_lib_version().split(".")[:3])
    return major, minor, patch


def version_ok(v: tuple[int, int, int]) -> bool:
    """3.51.3+ has the WAL-reset fix; 3.50.7 and 3.44.6 are its backports."""
    return v >= (3, 51, 3) or (v[:2] == (3, 50) and v[2] >= 7) or (v[:2] == (3, 44) and v[2] >= 6)


def check_sqlite_version() -> None:
    v = sqlite_version()
    if not version_ok(v):
        raise UnsupportedSQLite(
            f"SQLite {'.'.join(map(str, v))} has the WAL-reset corruption bug; need >= 3.51.3 "
            "(or 3.50.7 / 3.44.6) (see: pip install -U apsw)"
        )


def filesystem_type(path: os.PathLike[str] | str) -> str:
    """The type of the filesystem holding `path`, from /proc/self/mounts (longest matching mount point)."""
    target = os.path.realpath(path)
    best, fstype = "", "unknown"
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, fstype = mnt, parts[2]
    except OSError:
        return "unknown"
    return fstype


def check_filesystem(path: os.PathLike[str] | str) -> None:
    fs = filesystem_type(path)
    base = fs.split(".")[0]
    if base in UNSAFE_FS or fs.startswith("fuse."):
        raise UnsafeFilesystem(
            f"{path} is on a {fs} filesystem, where SQLite locking is unreliable; "
            "put boards on a local disk (set HERMES_HOME)"
        )
