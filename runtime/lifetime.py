"""Tie a process's life to its parent's: a child whose parent dies is killed by the kernel.

`rlrun local` starts every role in its own session (so it can signal each role's whole group), and torchrun
starts each rank in a new session too; neither group receives the terminal's signals. If the launcher or
torchrun is killed outright (SIGKILL, OOM), nothing would stop its children: they are re-parented and run
on. Linux's PR_SET_PDEATHSIG makes the kernel deliver a signal to the child when its parent exits, so no
process of a run survives its launcher. Elsewhere it is a no-op (no such call).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Looked up once, in the parent: a `preexec_fn` runs between fork and exec, where loading a library could
# deadlock on a lock another thread of the parent held at fork time.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """Have the kernel send `sig` to this process when `parent_pid` (its parent) exits.

    If the parent is already gone (it died before this call), deliver `sig` now: the race the kernel's
    setting cannot cover. Meant for a `preexec_fn` too: it only calls prctl, getppid and kill.
    """
    if _prctl is None:
        return
    if _prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)


def watch_parent(
    parent_names: tuple[str, ...], every_seconds: float = 0.5, sig: int = signal.SIGKILL
) -> None:
    """For a process started by a parent whose command line contains one of `parent_names` (torchrun's ranks):
    if that parent is already gone, die now; else `die_with_parent`, plus a daemon thread that sends `sig`
    once this process is re-parented.

    A rank starts seconds before it gets here (importing torch); a torchrun killed meanwhile leaves it
    re-parented to init (or a subreaper), which the kernel's setting can no longer catch, so the parent is
    recognized by its command line (in a pod, torchrun may itself be PID 1)."""
    parent = os.getppid()
    try:
        with open(f"/proc/{parent}/cmdline", "rb") as f:
            cmdline = f.read()
        alive = any(name.encode() in cmdline for name in parent_names)
    except OSError:  # no /proc (not Linux): nothing to check
        alive = True
    if not alive:
        os.kill(os.getpid(), sig)
    die_with_parent(parent, sig)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_seconds)
        os.kill(os.getpid(), sig)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()
