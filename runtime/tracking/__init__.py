"""Experiment tracking: the run's figures in MLflow and/or Weights & Biases, while it goes.

The orchestrator is the one process that logs (W&B allows one writer per run; the orchestrator sees
every step first and holds the sample tables). Each step it logs its own record and the trainer's new
rank-0 records (read from `trainer/metrics_rank0.jsonl` on the volume), the resolved config as params
once, and a sample table at the sample-logging cadence (`sampleUpload.everyNSteps`). One tracked run per
RLRun: its id is kept in `<run dir>/tracking/state.json` and every restart resumes it. Tracking is a
side channel: a sink that fails is logged and counted (`rlrun_tracking_failures_total`), never fatal.
The sink libraries are imported only when the config names them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rlrun import pod_contract
from rlrun.runtime.config import RuntimeConfig

log = logging.getLogger("rlrun.tracking")
STATE_FILE = "state.json"
TRAINER_RECORDS = Path("trainer") / "metrics_rank0.jsonl"
SAMPLE_COLUMNS = (
    "step",
    "example_id",
    "env",
    "prompt",
    "completion",
    "reward",
    "advantage",
    "policy_version",
)
Entry = tuple[str, int, dict[str, float]]
"""(axis, step, figures): axis 'orchestrator' or 'trainer', each with its own step."""


class Sink(Protocol):
    name: str

    def start(self, run_id: str | None, run_name: str, params: Mapping[str, Any]) -> str:
        """Resume `run_id` (or create a run named `run_name` with `params`); returns the run id."""
        ...

    def log(self, entries: Sequence[Entry]) -> None: ...

    def table(self, step: int, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...

    def finish(self, succeeded: bool) -> None: ...


def flat_params(cfg: RuntimeConfig) -> dict[str, str]:
    """The resolved config as dotted keys (`orchestrator.batchSize`), without the tracking section (its
    URIs could hold credentials)."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = json.dumps(value) if isinstance(value, list | dict) else str(value)

    walk("", cfg.model_dump(mode="json", by_alias=True, exclude={"tracking"}))
    return out


def figures(record: Mapping[str, Any]) -> dict[str, float]:
    """The numeric fields of a metrics.jsonl record (booleans and text left out), `step` and `rank` too."""
    return {
        k: float(v)
        for k, v in record.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("step", "rank")
    }


def sample_rows(step: int, rollouts: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """One row per rollout, in SAMPLE_COLUMNS order; images stay refs (the sample parquets hold them)."""

    def text(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value, default=str)

    return [
        [step, str(r.get("example_id")), str(r.get("env")), text(r.get("prompt")), text(r.get("completion")),
         float(r["reward"]), float(r.get("advantage", 0.0)), int(r.get("policy_version", -1))]
        for r in rollouts
    ]  # fmt: skip


@dataclass
class TrackingState:
    """What a restart needs: each sink's run id and how far the trainer's records were logged."""

    run_ids: dict[str, str] = field(default_factory=dict)
    trainer_offset: int = 0
    trainer_step: int = -1  # the last trainer step read

    @classmethod
    def load(cls, path: Path) -> TrackingState:
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        return cls(dict(data["run_ids"]), int(data["trainer_offset"]), int(data["trainer_step"]))

    def save(self, path: Path) -> None:
        """Atomically (temp file + rename): a restart never reads half a state."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self)))
        os.replace(tmp, path)


def new_records(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines of `path` after byte `offset`, and the offset after the last one (a line the
    trainer is still writing is left for next time)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    lines = chunk[:end].decode().splitlines()
    return [json.loads(line) for line in lines if line.strip()], offset + end


def make_sinks(cfg: RuntimeConfig) -> list[Sink]:
    """The configured sinks; each library is imported here, and only when configured."""
    t = cfg.tracking
    sinks: list[Sink] = []
    try:
        if t.mlflow is not None:
            from rlrun.runtime.tracking.mlflow_sink import MlflowSink

            sinks.append(MlflowSink(t.mlflow))
        if t.wandb is not None:
            from rlrun.runtime.tracking.wandb_sink import WandbSink

            sinks.append(WandbSink(t.wandb, cfg.run_dir / "tracking"))
    except ModuleNotFoundError as err:
        raise RuntimeError(
            f"spec.tracking needs {err.name!r}, which is not installed where the orchestrator runs: install "
            "rlrun[tracking] (mlflow-skinny, wandb) into its image or virtualenv, or remove spec.tracking"
        ) from err
    return sinks


class Tracker:
    """The orchestrator's side. Every sink call runs on one worker thread, in order, off the step's
    critical path: a slow or unreachable tracker never delays training. At most MAX_PENDING_STEPS steps
    wait for it; a step beyond that is not tracked (logged, counted)."""

    MAX_PENDING_STEPS = 8
    TRAINER_TAIL_SECONDS = 30.0
    FINISH_TIMEOUT_SECONDS = 60.0  # > TRAINER_TAIL_SECONDS: the sinks' own last calls fit in too

    def __init__(self, cfg: RuntimeConfig, sinks: Sequence[Sink], attempt: int) -> None:
        self.cfg, self.sinks, self.attempt = cfg, list(sinks), attempt
        self.dir = cfg.run_dir / "tracking"
        self.state = TrackingState.load(self.dir / STATE_FILE)
        self._pending: list[Future[None]] = []
        # A daemon thread, not a ThreadPoolExecutor: the interpreter joins those at exit, so a tracker that
        # hangs past close()'s bound would keep the orchestrator process alive.
        self._jobs: queue.SimpleQueue[tuple[Future[None], Callable[..., None], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._work, name="tracking", daemon=True).start()

    @classmethod
    def open(cls, cfg: RuntimeConfig, attempt: int) -> Tracker | None:
        """None when the config names no sink; else a tracker whose runs start (or resume) in its thread."""
        sinks = make_sinks(cfg)
        if not sinks:
            return None
        tracker = cls(cfg, sinks, attempt)
        tracker._pending.append(tracker._submit(tracker.start))
        return tracker

    def submit_step(
        self, step: int, record: Mapping[str, Any], rollouts: Sequence[Mapping[str, Any]]
    ) -> None:
        """Queue the step's figures and, at the sample-logging cadence, its sample table; never blocks."""
        self._pending = [f for f in self._pending if not f.done()]
        if len(self._pending) >= self.MAX_PENDING_STEPS:
            from rlrun.runtime.metrics import TRACKING_FAILURES

            for sink in self.sinks:
                TRACKING_FAILURES.labels(sink.name).inc()
            log.warning("step %d not tracked: %d steps still wait for the tracker", step, len(self._pending))
            return
        rows = sample_rows(step, rollouts) if step % self.cfg.sample_upload.every_n_steps == 0 else []
        self._pending.append(self._submit(self.log_step, step, dict(record), rows))

    def close(self, succeeded: bool) -> None:
        """Finish each sink's run after what is queued, waiting FINISH_TIMEOUT_SECONDS at most."""
        self._pending.append(self._submit(self.finish, succeeded))
        _, late = wait(self._pending, timeout=self.FINISH_TIMEOUT_SECONDS)
        if late:
            log.warning(
                "tracker still busy after %gs: its last figures may be missing", self.FINISH_TIMEOUT_SECONDS
            )

    def _submit(self, fn: Callable[..., None], *args: Any) -> Future[None]:
        future: Future[None] = Future()
        self._jobs.put((future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            future, fn, args = self._jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:
                    future.set_exception(exc)

    def start(self) -> None:
        params = flat_params(self.cfg)
        started = []
        for sink in self.sinks:
            resumed = self.state.run_ids.get(sink.name)
            with self._guard(sink, "start"):
                self.state.run_ids[sink.name] = sink.start(resumed, self.cfg.run_id, params)
                action = "resumed" if resumed else "started"
                log.info("%s: %s tracked run %s", sink.name, action, self.state.run_ids[sink.name])
                started.append(sink)
        self.sinks = started
        self.state.save(self.dir / STATE_FILE)

    def log_step(self, step: int, record: Mapping[str, Any], rows: Sequence[Sequence[Any]]) -> None:
        """The step's figures (the orchestrator's, its attempt, the trainer's records so far) and rows."""
        entries = [
            ("orchestrator", step, {**figures(record), "attempt": float(self.attempt)}),
            *self._trainer(),
        ]
        for sink in self.sinks:
            with self._guard(sink, f"step {step}"):
                sink.log(entries)
                if rows:
                    sink.table(step, SAMPLE_COLUMNS, rows)
        self.state.save(self.dir / STATE_FILE)

    def finish(self, succeeded: bool) -> None:
        """Log the trainer records still unlogged, then close each sink's run. After the last step the
        trainer writes its last record right after the reload the orchestrator waited for: a successful
        run waits for it, TRAINER_TAIL_SECONDS at most."""
        entries = self._trainer()
        deadline = time.monotonic() + self.TRAINER_TAIL_SECONDS
        last = self.cfg.orchestrator.max_steps - 1
        while succeeded and self.state.trainer_step < last:
            if time.monotonic() > deadline:
                log.warning("the trainer's record of step %d did not come: not tracked", last)
                break
            time.sleep(0.2)
            entries += self._trainer()
        for sink in self.sinks:
            with self._guard(sink, "finish"):
                if entries:
                    sink.log(entries)
                sink.finish(succeeded)
        self.state.save(self.dir / STATE_FILE)

    def _trainer(self) -> list[Entry]:
        records, self.state.trainer_offset = new_records(
            self.cfg.run_dir / TRAINER_RECORDS, self.state.trainer_offset
        )
        for r in records:
            self.state.trainer_step = max(self.state.trainer_step, int(r["step"]))
        return [("trainer", int(r["step"]), figures(r)) for r in records]

    @contextlib.contextmanager
    def _guard(self, sink: Sink, what: str) -> Iterator[None]:
        """Swallow, log (credentials redacted) and count a sink's failure: tracking never stops the run."""
        try:
            yield
        except Exception as exc:
            from rlrun.runtime.metrics import TRACKING_FAILURES

            TRACKING_FAILURES.labels(sink.name).inc()
            message = redact(f"{type(exc).__name__}: {exc}", os.environ)[:500]
            log.warning("%s: %s failed (the run goes on): %s", sink.name, what, message)


def redact(text: str, environ: Mapping[str, str]) -> str:
    """`text` without the tracking credentials' values or any URL's user info."""
    for key in pod_contract.TRACKING_SECRET_ENV:
        if secret := environ.get(key):
            text = text.replace(secret, "<redacted>")
    return re.sub(r"://[^/@\s]+@", "://<redacted>@", text)
