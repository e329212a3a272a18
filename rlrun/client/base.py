"""The client API every backend offers (cluster, local), and `wait`, written once on top of `watch`."""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping

from rlrun.client.errors import RunDeleted, WaitTimeout
from rlrun.client.events import Outcome, RunEvent
from rlrun.client.request import Source
from rlrun.client.results import RunResult
from rlrun.operator import names
from rlrun.operator.api import RLRun

COMPONENTS = (
    names.COMPONENT_ORCHESTRATOR,
    names.COMPONENT_TRAINER,
    names.COMPONENT_INFERENCE,
    names.COMPONENT_ENV_WORKERS,
)
"""What `logs(name, component)` accepts."""

Selector = str | Mapping[str, str] | None


def selector_string(selector: Selector) -> str | None:
    if selector is None or isinstance(selector, str):
        return selector or None
    return ",".join(f"{k}={v}" for k, v in selector.items())


class RunClient(ABC):
    """Submit, follow and read RLRuns. `Client` talks to a cluster; `LocalClient` runs `rlrun local`."""

    @abstractmethod
    def submit(self, source: Source, name: str | None = None, *, request_id: str | None = None) -> RLRun:
        """Create the run of this request, or return the run an earlier identical request made.

        `source`: a YAML path, an RLRun document or bare spec (dict), or the RLRun / RLRunSpec models.
        The same `request_id` always yields the same run (retries after a timeout create nothing new);
        the same id with a different spec raises RequestConflict. Without a request id the call is a plain
        create (not safe to retry)."""

    @abstractmethod
    def get(self, name: str) -> RLRun:
        """The run now; RunNotFound if there is none."""

    @abstractmethod
    def list(self, selector: Selector = None) -> builtins.list[RLRun]:
        """Runs matching a label selector (`"team=a"` or `{"team": "a"}`), by name."""

    @abstractmethod
    def watch(self, name: str, *, timeout: float | None = None) -> Iterator[RunEvent]:
        """The run's current state, then one event per change of phase, progress, conditions or restarts;
        ends after a terminal phase or deletion, or when `timeout` seconds passed."""

    @abstractmethod
    def cancel(self, name: str, *, timeout: float = 60.0) -> None:
        """Stop the run for good and forget it; returns once it is gone (see each backend for what stays)."""

    @abstractmethod
    def logs(
        self, name: str, component: str, *, follow: bool = False, attempt: int | None = None
    ) -> Iterator[str]:
        """Log lines of one component (orchestrator, trainer, inference, env-workers); `attempt`: of that
        restart attempt (default: the current one)."""

    @abstractmethod
    def result(self, name: str) -> RunResult:
        """Where the final weights and samples are, the last progress and the restarts."""

    def wait(self, name: str, timeout: float, on_event: Callable[[RunEvent], None] | None = None) -> Outcome:
        """Block until the run is Succeeded or Failed and return that phase with the final progress.

        Raises WaitTimeout after `timeout` seconds (the run keeps going) and RunDeleted if the run
        disappears first. `on_event` sees every event on the way (for a progress display)."""
        last: RunEvent | None = None
        for event in self.watch(name, timeout=timeout):
            last = event
            if on_event:
                on_event(event)
            if event.type == "DELETED":
                raise RunDeleted(name, event.run.metadata.namespace)
            if event.terminal:
                return Outcome(phase=str(event.phase), progress=event.progress, run=event.run)
        raise WaitTimeout(name, timeout, last.run if last else None)
