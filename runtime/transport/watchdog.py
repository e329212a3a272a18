"""Liveness of a wedged trainer master: packing that makes no progress for too long kills the process.

Packing legitimately blocks on the orchestrator for as long as generation takes (steps of 1178-3137 s were
seen), so the limit is on packing *without progress*: the master's wait for the batch beats the watchdog at
every poll, and only a pack stuck in one call (a hung volume read, a deadlocked encoder) stays silent. A
master that is alive but stuck would otherwise hang every rank forever. This watchdog turns "armed and
silent for longer than the limit" into `os._exit(1)`; torchrun sees the dead worker and tears the group
down, and the operator restarts it from the last checkpoint.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


class PackWatchdog:
    """A daemon thread that exits the process if it stays armed without a `beat` for `limit_seconds`.

    The check runs every `check_every` seconds (default: a quarter of the limit, at most 60 s), so a wedge is
    caught between `limit_seconds` and `limit_seconds + check_every` after the last sign of progress.
    """

    def __init__(self, limit_seconds: float, check_every: float | None = None) -> None:
        if limit_seconds <= 0:
            raise ValueError(f"limit_seconds must be > 0, got {limit_seconds}")
        self.limit_seconds = limit_seconds
        self.check_every = check_every if check_every is not None else min(60.0, limit_seconds / 4)
        self._lock = threading.Lock()
        self._armed_at: float | None = None
        self._step: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pack-watchdog", daemon=True)
        self._thread.start()

    def arm(self, step: int) -> None:
        with self._lock:
            self._armed_at, self._step = time.monotonic(), step

    def beat(self) -> None:
        """Progress while armed (the master is waiting, not stuck): restart the clock."""
        with self._lock:
            if self._armed_at is not None:
                self._armed_at = time.monotonic()

    def disarm(self) -> None:
        with self._lock:
            self._armed_at = self._step = None

    @contextmanager
    def armed(self, step: int) -> Iterator[None]:
        self.arm(step)
        try:
            yield
        finally:
            self.disarm()

    def overdue(self) -> str | None:
        """The fatal message if armed for longer than the limit, else None."""
        with self._lock:
            if self._armed_at is None:
                return None
            elapsed = time.monotonic() - self._armed_at
            if elapsed <= self.limit_seconds:
                return None
            return (
                f"Trainer master wedged: packing micro-batch step {self._step} made no progress for "
                f"{elapsed:.0f}s, over transport.packWatchdogSeconds={self.limit_seconds:g}; exiting so "
                "torchrun stops the group"
            )

    def _run(self) -> None:
        while not self._stop.wait(self.check_every):
            if message := self.overdue():
                logger.critical(message)
                os._exit(1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
