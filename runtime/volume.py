"""Every role checks, before anything else, that it can write its run directory on the shared volume.

A volume the pods' uid cannot write (a hostPath or an NFS export owned by root: neither honours the pods'
fsGroup) used to fail deep inside a role with a bare PermissionError, spend every restart of the run and
leave only "trainer failed". Here the role stops at once with one precise line, written both to stderr and
to the container's termination message (what the operator reads from the failed pod), saying who cannot
write what and what the volume needs.
"""

from __future__ import annotations

import os
from pathlib import Path

from rlrun.runtime.config import VOLUME_NOT_WRITABLE
from rlrun.runtime.termination import TERMINATION_LOG, fail_start


def _owner(path: Path) -> str:
    """'uid:gid mode' of `path` or of its nearest existing parent."""
    for candidate in (path, *path.parents):
        try:
            st = candidate.stat()
        except OSError:
            continue
        return f"{candidate} is owned by {st.st_uid}:{st.st_gid} with mode {st.st_mode & 0o7777:04o}"
    return f"{path} does not exist"


def not_writable_message(run_dir: Path, error: OSError) -> str:
    return (
        f"{VOLUME_NOT_WRITABLE}: the run directory {run_dir} is not writable by uid {os.getuid()} "
        f"(gid {os.getgid()}, groups {sorted(os.getgroups())}): {error.strerror or error}; {_owner(run_dir)}. "
        "The run volume must be writable by uid 1000 or gid 1000: use a StorageClass whose volumes honour "
        "the pods' fsGroup (1000), or give the export/hostPath to 1000:1000 (chown) or make it group-writable "
        "by gid 1000."
    )


def ensure_writable(run_dir: Path, termination_log: Path = TERMINATION_LOG) -> None:
    """Create `run_dir` and write and remove a probe file in it; exit 78 with the reason if that fails."""
    probe = run_dir / f".write-probe-{os.getpid()}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        fail_start(not_writable_message(run_dir, error), termination_log)
