"""A role that cannot start because of its configuration stops with one line the operator can read.

The line goes to stderr (the pod log, `rlrun local`'s role log) and to the container's termination message
(`/dev/termination-log`, which the kubelet creates in a pod and copies into the container's terminated
state). The operator matches the line's prefix (a reason such as VolumeNotWritable) and fails the run with
it instead of spending restarts on a pod no restart can fix.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import NoReturn

EXIT_CONFIG = 78  # EX_CONFIG: restarting the same pod with the same configuration cannot help
TERMINATION_LOG = Path("/dev/termination-log")


def fail_start(message: str, termination_log: Path = TERMINATION_LOG) -> NoReturn:
    """Print `message`, write it as the termination message when running in a pod, exit 78."""
    print(message, file=sys.stderr, flush=True)
    if termination_log.is_file():  # the kubelet creates it in a pod; never create it elsewhere
        with contextlib.suppress(OSError):
            termination_log.write_text(message)
    raise SystemExit(EXIT_CONFIG)
