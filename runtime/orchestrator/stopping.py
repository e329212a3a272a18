"""SIGTERM against the step being committed.

Once a step's batch is written the trainer may train it, and a trainer stopped by the same SIGTERM
checkpoints what it trained. If the orchestrator were cancelled between writing the batch and saving its
position (the sample log's await lies between them), a resumed orchestrator would draw that step again
although the trainer's checkpoint already holds it (seen in CI: checkpoint step_4, saved position 3). So a
SIGTERM that arrives while a step is being committed waits for the commit (ledger, sample log, metrics,
position) and cancels right after it; any other SIGTERM cancels at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator


class CommitWindow:
    """Where the orchestrator's step task may not be cancelled by a stop request (one per process)."""

    def __init__(self) -> None:
        self.open = False
        self.stop_deferred = False

    @contextlib.contextmanager
    def committing(self) -> Iterator[None]:
        """The commit of one step; a stop requested during it takes effect when it ends."""
        self.open = True
        try:
            yield
        finally:
            self.open = False
        if self.stop_deferred:
            raise asyncio.CancelledError("stop requested while a step was committed: stopping after it")

    def request_stop(self, cancel: Callable[[], object]) -> None:
        """Called on the event loop for SIGTERM: `cancel()` now, or when the commit in progress ends."""
        if self.open:
            self.stop_deferred = True
        else:
            cancel()


COMMIT = CommitWindow()
