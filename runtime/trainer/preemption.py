"""Graceful preemption: SIGTERM (suspend, eviction, node drain) becomes a checkpoint, not lost work.

Kubernetes sends SIGTERM to torchrun (the trainer container's PID 1), which forwards it to every rank and
SIGKILLs them after $TORCH_ELASTIC_SHUTDOWN_TIMEOUT; the kubelet SIGKILLs the pod after
terminationGracePeriodSeconds. Inside that window each rank only sets a flag here; the trainer acts on it
at two points, and every rank acts together because the decision is an all-reduce(MAX) of the flags
(ranks get the signal at slightly different times):

  * waiting for the step's batch (the orchestrator may be stopping too): the wait is abandoned, nothing of
    the step was trained, the state is version `step`;
  * after a step (optimizer step + weight export): the step in flight is finished, the state is `step+1`.

Either way the trainer writes checkpoint `step_<version>` with its DONE marker (unless that version is
saved already) and exits with PREEMPTED_EXIT, so the resumed run's first step is `version`: no work is
lost beyond the step in flight. A non-zero exit keeps Kubernetes from counting the pod's index as done.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import torch
import torch.distributed as dist

log = logging.getLogger("rlrun.trainer")
PREEMPTED_EXIT = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


class Preempted(Exception):
    """The group stopped on SIGTERM after checkpointing `version` (the resumed run's first step)."""

    def __init__(self, version: int) -> None:
        super().__init__(f"stopped on SIGTERM; checkpoint step_{version} holds every finished step")
        self.version = version


class StopFlag:
    """Set by SIGTERM on this rank; `agreed()` is the group's verdict (a collective: every rank calls it)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self._event.is_set():
            log.warning("%s: finishing or abandoning the step in flight, then checkpointing",
                        signal.Signals(signum).name)  # fmt: skip
        self._event.set()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def agreed(self, device: torch.device) -> bool:
        """True on every rank when any rank got SIGTERM (all-reduce MAX of the 0/1 flags)."""
        flag = torch.tensor([int(self._event.is_set())], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item():
            self._event.set()  # a rank the signal has not reached yet stops with the others
        return bool(flag.item())
