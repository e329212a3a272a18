"""`LocalClient`: the same client API, running each RLRun with `rlrun local` on this machine.

A platform's code can be tested on a laptop: `submit` writes the run's record under
`<root>/.rlrun-client/<name>/` and starts `rlrun local` (kept by `rlrun.client.supervise`, detached, so the
run outlives the submitting process and any later LocalClient on the same root sees it); status comes from
the launcher's exit code and the run's `progress.json`, logs from `<root>/run_<name>/logs/attempt-<n>/`
(every attempt's, also after its processes are gone).

Idempotency: the record directory is published with one atomic rename, so of concurrent submits of one
request exactly one starts the run; the others read the record and compare request id and spec hash.

What `cancel` does locally: SIGINT to the launcher, which stops every role (no process is left), then the
record is removed (`get` says not found). The run directory with its outputs stays on disk: there is no
volume to garbage-collect; delete `<root>/run_<name>` yourself, or resubmit under another name.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import yaml

from rlrun.client.base import COMPONENTS, RunClient, Selector, selector_string
from rlrun.client.errors import InvalidArgument, NoPods, RequestConflict, RunNotFound, Unavailable
from rlrun.client.events import RunEvent, changes, is_terminal
from rlrun.client.request import (
    ANNOTATION_REQUEST_ID,
    ANNOTATION_SPEC_HASH,
    Source,
    Submission,
    conflict_message,
    prepare,
    same_request,
)
from rlrun.client.results import RunResult, local_result
from rlrun.client.supervise import CANCELLED_FILE, EXIT_FILE
from rlrun.operator import names
from rlrun.operator.api import ProgressStatus, RLRun, RLRunStatus, to_runtime_config
from rlrun.runtime.config import PROGRESS_FILE, RESTARTS_FILE, attempt_log_dir, log_attempts

RECORDS = ".rlrun-client"
REQUEST_FILE, RUN_FILE, PID_FILE, LAUNCHER_LOG = "request.json", "run.yaml", "pid", "launcher.log"
POLL_SECONDS = 0.5
START_GRACE_SECONDS = 30.0
"""A record with no launcher pid after this long: its submitter died before starting it."""
LAUNCH = "import sys; from rlrun.cli import main; sys.exit(main())"
"""`rlrun local` through the installed CLI (not `-m rlrun.cli`, whose __main__ copy registers nothing)."""
COMPONENT_LOGS = {
    names.COMPONENT_ORCHESTRATOR: "orchestrator.log",
    names.COMPONENT_TRAINER: "trainer.log",
    names.COMPONENT_INFERENCE: "inference.log",
    names.COMPONENT_ENV_WORKERS: "env-worker-*.log",
}


class LocalClient(RunClient):
    """RLRuns as local processes; `root` is the asset root (`rlrun local --output-dir`)."""

    def __init__(self, root: str | os.PathLike[str] = "outputs", *, python: str = sys.executable) -> None:
        self.root = Path(root).expanduser().resolve()
        self.python = python
        self.namespace: str | None = None
        self._children: list[subprocess.Popen[bytes]] = []

    def _record(self, name: str) -> Path:
        return self.root / RECORDS / name

    def _run_dir(self, run: RLRun) -> Path:
        return to_runtime_config(run.metadata.name, run.spec, asset_root=str(self.root)).run_dir

    # ---------------------------------------------------------------------------------------- submit

    def submit(self, source: Source, name: str | None = None, *, request_id: str | None = None) -> RLRun:
        sub = prepare(source, name=name, request_id=request_id, namespace=None)
        record = self._record(sub.name)
        if not record.exists():
            run_dir = self._run_dir(sub.run)
            if (run_dir / "config.json").exists():
                raise RequestConflict(
                    f"{run_dir} already holds a run (a cancelled one, or one started without this client): "
                    "choose another name or root, or remove that directory"
                )
            if self._publish(sub, record):
                self._launch(sub, record)
                return self.get(sub.name)
        existing = self.get(sub.name)
        if same_request(existing, sub):
            return existing
        raise RequestConflict(conflict_message(existing, sub))

    def _publish(self, sub: Submission, record: Path) -> bool:
        """Write the record in a temp dir and rename it into place: True if this call made it."""
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.parent / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        request = {"name": sub.name, "requestId": sub.request_id, "specHash": sub.spec_hash,
                   "submittedAt": datetime.now(UTC).isoformat()}  # fmt: skip
        (tmp / REQUEST_FILE).write_text(json.dumps(request))
        (tmp / RUN_FILE).write_text(yaml.safe_dump(sub.body, sort_keys=False))
        try:
            os.rename(tmp, record)
        except OSError:  # ENOTEMPTY / EEXIST: a concurrent submit published first
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        return True

    def _launch(self, sub: Submission, record: Path) -> None:
        command = [self.python, "-c", LAUNCH, "local", str(record / RUN_FILE), "--output-dir", str(self.root)]
        with (record / LAUNCHER_LOG).open("ab") as log:
            proc = subprocess.Popen(
                [self.python, "-m", "rlrun.client.supervise", str(record), "--", *command],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives this process; Ctrl-C of the submitter does not cancel
            )
        self._children.append(proc)
        tmp = record / f".{PID_FILE}.tmp"
        tmp.write_text(str(proc.pid))
        os.replace(tmp, record / PID_FILE)

    # ----------------------------------------------------------------------------------------- reads

    def get(self, name: str) -> RLRun:
        self._reap()
        record = self._record(name)
        try:
            request = json.loads((record / REQUEST_FILE).read_text())
            doc = yaml.safe_load((record / RUN_FILE).read_text())
        except (OSError, ValueError):
            raise RunNotFound(name, None, f" under {self.root}") from None
        meta = doc["metadata"]
        meta["annotations"] = {**meta.get("annotations", {}), ANNOTATION_REQUEST_ID: request["requestId"],
                               ANNOTATION_SPEC_HASH: request["specHash"]}  # fmt: skip
        run = RLRun.model_validate({**doc, "status": None})
        run.status = self._status(record, self._run_dir(run), request)
        return run

    def _status(self, record: Path, run_dir: Path, request: dict[str, str]) -> RLRunStatus:
        status = self._phase(record, run_dir, request)
        status.restarts = _read_restarts(run_dir)
        return status

    def _phase(self, record: Path, run_dir: Path, request: dict[str, str]) -> RLRunStatus:
        progress = _read_progress(run_dir)
        exit_file = record / EXIT_FILE
        if exit_file.is_file():
            code = int(json.loads(exit_file.read_text())["returncode"])
            if code == 0:
                return RLRunStatus(phase="Succeeded", reason="Completed", progress=progress, restarts=0)
            cancelled = (record / CANCELLED_FILE).exists()
            return RLRunStatus(
                phase="Failed",
                reason="Cancelled" if cancelled else "LocalRunFailed",
                message=f"rlrun local exited with {code}: " + _tail(record / LAUNCHER_LOG),
                progress=progress,
                restarts=0,
            )
        pid = _read_pid(record)
        if pid is None:
            submitted = datetime.fromisoformat(request["submittedAt"])
            if (datetime.now(UTC) - submitted).total_seconds() < START_GRACE_SECONDS:
                return RLRunStatus(phase="Pending", reason="Starting", progress=progress, restarts=0)
            return RLRunStatus(phase="Failed", reason="LauncherNeverStarted", progress=progress, restarts=0)
        if not _alive(pid, record):
            if exit_file.is_file():  # finished between the two checks
                return self._phase(record, run_dir, request)
            return RLRunStatus(phase="Failed", reason="LauncherLost",
                               message="the rlrun local launcher died without an exit code", restarts=0)  # fmt: skip
        phase = "Running" if progress is not None and progress.step else "Pending"
        return RLRunStatus(phase=phase, progress=progress, restarts=0)

    def list(self, selector: Selector = None) -> builtins.list[RLRun]:
        wanted = _equality_selector(selector_string(selector))
        records = self.root / RECORDS
        runs = []
        for record in sorted(records.iterdir() if records.is_dir() else []):
            if record.name.startswith("."):
                continue
            try:
                run = self.get(record.name)
            except RunNotFound:
                continue  # cancelled meanwhile
            if wanted.items() <= run.metadata.labels.items():
                runs.append(run)
        return runs

    def result(self, name: str) -> RunResult:
        run = self.get(name)
        return local_result(run, self._run_dir(run))

    # ----------------------------------------------------------------------------------------- watch

    def watch(self, name: str, *, timeout: float | None = None) -> Iterator[RunEvent]:
        """Polls the launcher's state and progress.json every POLL_SECONDS (same events as the cluster)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: RLRun | None = None
        while True:
            try:
                run = self.get(name)
            except RunNotFound:
                if last is None:
                    raise
                yield RunEvent("DELETED", last, ("deleted",))
                return
            changed = changes(last.status if last else None, run.status) or (() if last else ("phase",))
            kind = "ADDED" if last is None else "MODIFIED"
            last = run
            if changed:
                yield RunEvent(kind, run, changed)
            if is_terminal(run.status.phase if run.status else None):
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(
                POLL_SECONDS if deadline is None else max(0.0, min(POLL_SECONDS, deadline - time.monotonic()))
            )

    # ---------------------------------------------------------------------------------------- cancel

    def cancel(self, name: str, *, timeout: float = 60.0) -> None:
        """Stop every process of the run (SIGINT to `rlrun local`), then forget the run; outputs stay."""
        record = self._record(name)
        if not (record / REQUEST_FILE).is_file():
            raise RunNotFound(name, None, f" under {self.root}")
        pid = _read_pid(record)
        if pid is not None and _alive(pid, record) and not (record / EXIT_FILE).exists():
            os.kill(pid, signal.SIGTERM)  # the supervisor passes it on as SIGINT
            deadline = time.monotonic() + timeout
            while not (record / EXIT_FILE).exists():
                self._reap()
                if time.monotonic() > deadline:
                    raise Unavailable(f"local run {name!r} did not stop within {timeout:g}s")
                time.sleep(0.1)
            while _alive(pid, record) and time.monotonic() < deadline:
                self._reap()
                time.sleep(0.05)
        tomb = record.parent / f".deleted-{name}-{uuid.uuid4().hex}"
        os.rename(record, tomb)  # atomic: a concurrent get sees the run or nothing
        shutil.rmtree(tomb, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ logs

    def logs(
        self, name: str, component: str, *, follow: bool = False, attempt: int | None = None
    ) -> Iterator[str]:
        """Lines of `<run_dir>/logs/attempt-<n>/<role>.log`, n = `attempt`, else the newest attempt with a log
        of the component; env-workers: every replica's log, one after another. Rotated parts (`.log.1`...)
        are not read. `follow` keeps reading until the run is terminal."""
        if component not in COMPONENTS:
            raise InvalidArgument(f"unknown component {component!r}: choose one of {', '.join(COMPONENTS)}")
        run = self.get(name)
        run_dir = self._run_dir(run)
        pattern = COMPONENT_LOGS[component]
        attempts = [n for n in log_attempts(run_dir) if any(attempt_log_dir(run_dir, n).glob(pattern))]
        if attempt is not None and attempt not in attempts:
            raise NoPods(f"local run {name!r} has no {component} log of attempt {attempt}; attempts with one: "
                         f"{attempts or 'none'}")  # fmt: skip
        logs_dir = attempt_log_dir(run_dir, attempt if attempt is not None else max(attempts, default=0))
        paths = sorted(logs_dir.glob(pattern))
        if not paths and not follow:
            raise NoPods(f"local run {name!r} (phase {run.status.phase if run.status else None}) has no "
                         f"{component} log yet under {logs_dir}")  # fmt: skip
        if not follow:
            for path in paths:
                yield from path.read_text(errors="replace").splitlines()
            return
        offsets: dict[Path, int] = {}
        while True:
            finished = is_terminal(self.get(name).status.phase)  # read before draining: no line lost
            for path in sorted(logs_dir.glob(COMPONENT_LOGS[component])):
                with path.open("rb") as f:
                    f.seek(offsets.get(path, 0))
                    data = f.read()
                cut = data.rfind(b"\n") + 1 if not finished else len(data)
                offsets[path] = offsets.get(path, 0) + cut
                yield from data[:cut].decode(errors="replace").splitlines()
            if finished:
                return
            time.sleep(POLL_SECONDS)

    def _reap(self) -> None:
        self._children = [p for p in self._children if p.poll() is None]


def _read_progress(run_dir: Path) -> ProgressStatus | None:
    try:
        return ProgressStatus.model_validate_json((run_dir / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None


def _read_restarts(run_dir: Path) -> int:
    """Restarts `rlrun local` made in this run (trainer group and orchestrator together)."""
    try:
        return sum(int(n) for n in json.loads((run_dir / RESTARTS_FILE).read_text()).values())
    except (OSError, ValueError, AttributeError):
        return 0


def _read_pid(record: Path) -> int | None:
    try:
        return int((record / PID_FILE).read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int, record: Path) -> bool:
    """Is `pid` still our supervisor (its command line names the record), not a reused pid?"""
    try:
        return str(record) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no launcher log)"


def _equality_selector(selector: str | None) -> dict[str, str]:
    """`a=b,c=d` only: the local backend has no label index to evaluate set-based selectors."""
    out: dict[str, str] = {}
    for part in filter(None, (selector or "").split(",")):
        key, sep, value = part.partition("=")
        if not sep or key.endswith("!"):
            raise InvalidArgument(f"the local backend supports only key=value selectors, got {part!r}")
        out[key.strip()] = value.strip().removeprefix("=")
    return out
