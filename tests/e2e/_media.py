"""Real storage conditions for child processes: a read-only mount and a full filesystem.

Both wrap a child's argv so that it runs in its own mount namespace (``unshare -m``), where a
directory is bind-mounted read-only over itself, or a tiny tmpfs is mounted on it. The mounts
exist only inside the child's namespace and vanish with it; the rest of the machine never
sees them. That needs root (the test machines and CI run as root). As a non-root user a
read-only directory is made with ``chmod`` instead (which binds a non-root user, unlike root);
a full filesystem has no such stand-in, and :func:`full_disk_available` says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

#: What the namespace's shell does before exec'ing the command: $0 is the directory.
_READONLY = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
_FULL = (
    'mount -t tmpfs -o "size=$1,mode=0755" kintsugi-full "$0" && shift || exit 97; '
    'dd if=/dev/zero of="$0/.filler" bs=4096 2>/dev/null; "$@"; rc=$?; '
    'echo "{LISTING}"; find "$0" -type f -printf "%s %P\\n"; exit $rc'
).replace("{LISTING}", "--- files ---")
#: The line after which :func:`on_full_disk` lists the files left (size, path).
LISTING = "--- files ---"


def _namespaces() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False).returncode == 0


def full_disk_available() -> bool:
    """True when a size-limited filesystem can be mounted for a child (root, unshare)."""
    return _namespaces()


def on_readonly(directory: Path, argv: list[str]) -> list[str]:
    """``argv`` run with ``directory`` (and everything under it) read-only."""
    if _namespaces():
        return ["unshare", "-m", "sh", "-c", _READONLY, str(directory), *argv]
    for path in [directory, *directory.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    return argv


def on_full_disk(directory: Path, size: str, argv: list[str]) -> list[str]:
    """``argv`` run with a fresh tmpfs of ``size`` (``"64k"``, ``"1m"``) mounted on
    ``directory`` (which must exist) and filled to the last byte by ``.filler``. After the
    command, the child prints :data:`LISTING` and then ``size path`` of every file left on
    the tmpfs (which vanishes with the child); it exits with the command's code."""
    assert _namespaces(), "check full_disk_available() first"
    return ["unshare", "-m", "sh", "-c", _FULL, str(directory), size, *argv]
