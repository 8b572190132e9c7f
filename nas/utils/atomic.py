"""Writes that a crash never leaves half-done: a temporary file, fsynced, renamed over the target.

The rename is atomic on POSIX, so at every moment the path holds either the old
content or the new one; a killed process leaves only a hidden ``.NAME.*.tmp``
file, which ``remove_torn_writes`` deletes.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Calls ``write(file)`` on a temporary file, fsyncs it, and renames it to ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def remove_torn_writes(folder: str | Path) -> list[Path]:
    """Deletes the temporaries ``atomic_write`` leaves when its process is killed mid-write; returns them."""
    torn = sorted(Path(folder).glob(".*.tmp"))
    for path in torn:
        path.unlink(missing_ok=True)
    return torn
