"""Artifact snapshots: keep a file's content as it was when `log_artifact` was called.

Runs on the caller's thread, inside `log_artifact`: the loop may overwrite the file on its next step
(a checkpoint rewritten each epoch), so the content must be captured before the call returns.

A copy-on-write clone (FICLONE: btrfs, XFS, bcachefs, overlayfs on those) costs the same for any
size; where the file system has none (ext4, tmpfs) the bytes are copied in the kernel
(`copy_file_range`/`sendfile` via shutil). A hard link would be free but is not a snapshot: the
loop's next `torch.save` truncates and rewrites the same inode.
"""
from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

__all__ = ["snapshot_file"]

_FICLONE = 0x40049409  # from linux/fs.h: _IOW(0x94, 9, int)


def snapshot_file(source: Path, destination: Path) -> str:
    """Copy `source` to `destination` atomically; returns "clone" or "copy" (how it was done)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    method = "clone" if _try_clone(source, tmp) else "copy"
    if method == "copy":
        shutil.copyfile(source, tmp)
    os.replace(tmp, destination)
    return method


def _try_clone(source: Path, destination: Path) -> bool:
    try:
        with open(source, "rb") as src, open(destination, "wb") as dst:
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
        return True
    except OSError:
        return False
