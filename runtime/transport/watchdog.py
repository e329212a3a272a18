"""Liveness of a wedged trainer master: packing that runs too long kills the process.

Ranks wait for the master's publish status with no deadline, because packing legitimately blocks on the
orchestrator for as long as generation takes (steps of 1178-3137 s were seen; a fixed publish timeout
crash-looped runs). A master that is alive but stuck would then hang every rank forever. This watchdog turns
"armed for longer than the limit" into `os._exit(1)`; torchrun sees the dead worker and tears the group down,
and the operator restarts it from the last checkpoint.
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
    """A daemon thread that exits the process if it stays armed longer than `limit_seconds`.

    The check runs every `check_every` seconds (default: a quarter of the limit, at most 60 s), so a wedge is
    caught between `limit_seconds` and `limit_seconds + check_every` after arming.
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
                f"Trainer master wedged: packing micro-batch step {self._step} has run {elapsed:.0f}s, over "
                f"transport.packWatchdogSeconds={self.limit_seconds:g}; exiting so torchrun stops the group"
            )

    def _run(self) -> None:
        while not self._stop.wait(self.check_every):
            if message := self.overdue():
                logger.critical(message)
                os._exit(1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
