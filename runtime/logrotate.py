"""Size-bounded role logs: copy-truncate rotation of a file another process keeps appending to.

A role's stdout/stderr is its log file itself (opened O_APPEND by the launcher): nothing sits between the
role and the file, so a role that crashes still gets its last traceback onto the volume. To bound the size
the launcher copies an oversized file to `<file>.1` (shifting older ones up to `<file>.<backups>`) and
truncates it; the writer's next append lands at the new end. Lines written between the copy and the
truncation are lost (logrotate's `copytruncate` trade-off), which is why rotation is rare (at max_bytes).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def rotate_if_larger(path: Path, max_bytes: int, backups: int) -> bool:
    """Rotate `path` when it is larger than `max_bytes`; return whether it did."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for n in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
    if backups:
        shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    os.truncate(path, 0)
    return True
