"""`rlrun local`: one RLRun as local processes, the operator's shape without Kubernetes.

Each role is the same entry point the pods run (inference, env-workers, orchestrator, torchrun trainer),
started in its own process group with native-thread limits and a log file under `<run_dir>/logs/`.
The launcher shows a live progress bar from `progress.json`, and on success a summary and
`reward_curve.png`. Any role failing, Ctrl-C or SIGTERM stops every role's process tree (SIGTERM, then
SIGKILL after `STOP_GRACE_SECONDS`, the trainer after its terminationGracePeriodSeconds; further signals
are ignored until that is done), writes the final state (`failed` / `interrupted`) into `progress.json`
and shows the failing role's error line and log path. Each
role also dies with the launcher (PR_SET_PDEATHSIG), so even a SIGKILLed launcher leaves nothing running.
A failed trainer group or orchestrator is restarted like the operator does it, per the RLRun's
`failurePolicy` (`RestartPolicy`: counted, backed off, bounded), as the run's next attempt ($RLRUN_ATTEMPT);
so is the trainer group when the run stalls (no step advance within the stall bound).
`resume=True` continues an interrupted run: the trainer from its last complete checkpoint, the orchestrator
from its saved position. `preflight` checks what can be checked in seconds before any role starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import httpx
import psutil

from rlrun import pod_contract
from rlrun.runtime import stackdump
from rlrun.runtime.config import (
    CONFIG_ENV,
    PROGRESS_FILE,
    RESTARTS_FILE,
    Progress,
    RuntimeConfig,
    attempt_log_dir,
    log_attempts,
    torchrun_shutdown_seconds,
    write_progress,
)
from rlrun.runtime.lifetime import die_with_parent
from rlrun.runtime.logrotate import rotate_if_larger

NATIVE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "OMP_THREAD_LIMIT": "1",
    "RAYON_NUM_THREADS": "1",
    "OMP_DYNAMIC": "FALSE",
    "MKL_DYNAMIC": "FALSE",
    "MALLOC_ARENA_MAX": "2",
    "TOKENIZERS_PARALLELISM": "false",
}
STOP_GRACE_SECONDS = 5.0
DUMP_WAIT_SECONDS = 2.0
"""After SIGUSR1, how long the launcher gives every process to write its stacks (faulthandler: ms)."""
HEALTH_TIMEOUT_SECONDS = 180.0
# vLLM imports for minutes on a small CPU machine before it serves (2-5 min measured on 2 busy cores).
VLLM_HEALTH_TIMEOUT_SECONDS = 900.0
VLLM_PYTHON_ENV = "RLRUN_VLLM_PYTHON"


def vllm_python(environ: Mapping[str, str] | None = None) -> Path:
    """The interpreter of vLLM's own virtualenv: $RLRUN_VLLM_PYTHON, else `.venv-vllm` beside this one
    (what tools/vllm/build.sh makes in a checkout). Raises FileNotFoundError saying how to get one."""
    environ = os.environ if environ is None else environ
    path = Path(environ.get(VLLM_PYTHON_ENV) or Path(sys.prefix).parent / ".venv-vllm" / "bin" / "python")
    if not path.is_file():
        raise FileNotFoundError(
            f"inference engine vllm: no vLLM interpreter at {path}; build it with tools/vllm/build.sh "
            f"(make tools) or set {VLLM_PYTHON_ENV}, or run with --engine rlrun"
        )
    return path


FINISH_TIMEOUT_SECONDS = 120.0


# The last line of a Python traceback ("pkg.mod.SomeError: message"), optionally behind torchrun's
# "[rank1]: " prefix; torchrun's own summary error (ChildFailedError) names no cause and is skipped.
_ERROR_LINE = re.compile(
    r"^(?:\[rank\d+\]:\s*)?(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit)\b(?::.*)?$"
)
_NOT_A_CAUSE = ("ChildFailedError", "KeyboardInterrupt")


RESTARTABLE = ("trainer", "orchestrator")
"""The groups the operator restarts (Jobs); a failed inference or env-worker server stops the run."""


@dataclass(frozen=True)
class RestartPolicy:
    """How `rlrun local` answers a failed trainer group or orchestrator: the RLRun's `failurePolicy` (the
    CLI passes its numbers and backoff formula in) and the operator's stall bound. The default restarts
    nothing: the first failure stops the run."""

    max_restarts: int = 0
    backoff: Callable[[int], float] = lambda restarts: 0.0
    stall_factor: float = 5.0
    stall_floor_seconds: float = 300.0

    def stall_seconds(self, step_seconds: list[float]) -> float:
        """No step advance for this long is a stall (the operator's rule: k x median step, with a floor)."""
        if not step_seconds:
            return self.stall_floor_seconds
        return max(self.stall_floor_seconds, self.stall_factor * median(step_seconds))


class Interrupted(Exception):
    """The launcher got SIGTERM (SIGINT arrives as KeyboardInterrupt); handled like Ctrl-C."""


class RoleFailed(RuntimeError):
    """A role exited unexpectedly; `error_line` is the first error its log shows since it started,
    `log_tail` the end of that log and `log_path` where the whole log is."""

    def __init__(
        self, role: str, returncode: int | None, log_tail: str, log_path: Path | None = None
    ) -> None:
        super().__init__(f"role {role} failed (exit code {returncode})")
        self.role, self.returncode, self.log_tail, self.log_path = role, returncode, log_tail, log_path
        self.error_line = first_error_line(log_tail)


def first_error_line(log: str) -> str | None:
    """The first traceback's error line in `log` (the cause; later ones are its consequences)."""
    for line in log.splitlines():
        line = line.strip()
        if _ERROR_LINE.match(line) and not any(skip in line for skip in _NOT_A_CAUSE):
            return line
    return None


def preflight(cfg: RuntimeConfig) -> list[str]:
    """What would make a role fail at start-up, found in seconds instead of 20-45 s into the run:
    an unknown environment or bad environment args, an unknown builtin or a model path without a model."""
    from rlrun.runtime.envs.registry import make_environment
    from rlrun.runtime.models.tiny import BUILTIN_TINY

    problems = []
    env = cfg.env_workers.environment
    try:  # with envWorkers.packages the environment exists only in their virtualenv: the env-worker checks
        if not cfg.env_workers.packages.requirements:
            make_environment(env.id, env.args)
    except ValueError as err:
        problems.append(f"envWorkers.environment: {err}")
    if (fork := cfg.resume_from) and not (
        cfg.parent_dir / "checkpoints" / f"step_{fork.step}" / "DONE"
    ).is_file():
        problems.append(
            f"resumeFrom: no complete checkpoint step_{fork.step} in {cfg.parent_dir} (run {fork.run!r} must "
            "have run in the same --output-dir and kept that checkpoint)"
        )
    name = cfg.model.name
    if name.startswith("builtin:") and name != BUILTIN_TINY:
        problems.append(f"model.name: unknown builtin model {name!r}: the only builtin is {BUILTIN_TINY!r}")
    elif (os.path.isabs(name) or name.startswith(".")) and not (Path(name) / "config.json").is_file():
        problems.append(f"model.name: {name} is not a model directory (no config.json there)")
    return problems


def native_thread_limited_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` (default os.environ) with the native-thread caps overriding existing values."""
    return {**(os.environ if base is None else base), **NATIVE_THREAD_ENV}


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10000  # below: well-known and commonly configured service ports
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections (Linux; 32768 elsewhere, its default)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    return 32768


def free_port(span: int = 1) -> int:
    """A port p with p..p+span-1 all free right now (the fan-out needs base, base+1, base+2).

    Chosen below the kernel's ephemeral range: a port free now stays free until the role binds it, because
    no outgoing connection is ever given it as its local port (a port the kernel picked from the ephemeral
    range was taken that way in CI: "Address already in use" on the trainer's fan-out). Ports handed out by
    this process are not handed out again.
    """
    rng = random.SystemRandom()
    high = _ephemeral_low() - span
    for _ in range(500):
        port = rng.randrange(LOWEST_PORT, high) if high > LOWEST_PORT else rng.randrange(1024, 65536 - span)
        block = range(port, port + span)
        if _handed_out.intersection(block):
            continue
        try:
            for p in block:
                for host in ("127.0.0.1", "0.0.0.0"):
                    with socket.socket() as probe:
                        probe.bind((host, p))
        except OSError:
            continue
        _handed_out.update(block)
        return port
    raise RuntimeError(f"no block of {span} free ports found")


def attempt_log(run_dir: Path, attempt: int, role: str) -> Path:
    return attempt_log_dir(run_dir, attempt) / f"{role}.log"


def next_attempt(run_dir: Path) -> int:
    """A resumed run's first attempt: one past every attempt that left logs."""
    return max(log_attempts(run_dir), default=-1) + 1


@dataclass
class Role:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    server: bool = False  # long-running: exiting at all is a failure
    log_start: int = 0  # where this start's output begins in the (appended, on resume) log
    seen: dict[int, psutil.Process] = field(default_factory=dict)  # its descendants observed so far

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        launcher = os.getpid()
        with self.log_path.open("ab") as log:
            self.log_start = log.tell()
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # its own group: stop() signals the role with everything it started
                preexec_fn=lambda: die_with_parent(launcher),  # and it dies with the launcher
            )

    def log_since_start(self) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(self.log_start)
                return f.read().decode(errors="replace")
        except OSError:
            return "(no log)"

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_since_start().splitlines()[-lines:])

    def failed(self, returncode: int | None, why: str = "") -> RoleFailed:
        log = self.log_since_start()
        failure = RoleFailed(self.name, returncode, (why + "\n" if why else "") + self.tail(), self.log_path)
        failure.error_line = first_error_line(log) or why or None
        return failure

    def processes(self) -> list[psutil.Process]:
        """The role's process and all its descendants (torchrun's ranks run in sessions of their own)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


def _send(roles: Iterable[Role], procs: Iterable[psutil.Process], sig: int) -> None:
    for role in roles:
        if role.proc is not None:
            with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
                os.killpg(role.proc.pid, sig)
    for p in procs:
        with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
            p.send_signal(sig)
            if sig == signal.SIGKILL:
                p.resume()  # harmless after SIGKILL; a stopped process dies as soon as it runs


def stop_roles(
    roles: list[Role],
    grace: float,
    seen: Iterable[psutil.Process] = (),
    patient: tuple[str, float] | None = None,
) -> None:
    """SIGTERM every role's process group and every descendant at once, SIGKILL what is left after
    `grace`; returns once all are gone (at most ~2 x grace). `seen` are descendants found earlier: a rank
    re-parented when torchrun died is not found under it any more. `patient` (role name, seconds) gives
    one role a longer window: the trainer checkpointing within its terminationGracePeriodSeconds, while
    the servers, whose shutdown waits for their in-flight requests, are killed after `grace` as before."""
    procs = list({p.pid: p for p in [*seen, *(p for role in roles for p in role.processes())]}.values())
    procs = [p for p in procs if p.is_running()]  # is_running also refuses a recycled pid
    name, patience = patient or ("", grace)
    waiting = [r for r in roles if r.name == name]
    waiting_pids = {p.pid for r in waiting for p in r.processes()}
    _send(roles, procs, signal.SIGTERM)
    _, procs = psutil.wait_procs(procs, timeout=grace)
    if patience > grace and any(p.pid in waiting_pids for p in procs):
        _send(
            [r for r in roles if r.name != name],
            [p for p in procs if p.pid not in waiting_pids],
            signal.SIGKILL,
        )
        _, procs = psutil.wait_procs(procs, timeout=patience - grace)
    if procs:
        _send(roles, procs, signal.SIGKILL)
        _, procs = psutil.wait_procs(procs, timeout=grace)
    for role in roles:
        if role.proc is not None:
            role.proc.poll()  # reap the direct children


@dataclass
class LocalRun:
    """The processes of one local run and what the launcher learned about them."""

    cfg: RuntimeConfig
    resume: bool = False
    python: str = sys.executable
    engine: str = "rlrun"  # "vllm": vLLM's CPU build from its own virtualenv (vllm_python)
    inference_replicas: int = 1  # servers, each its own process and URL; every one gets every reload
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    on_event: Callable[[str], None] = lambda message: None  # restarts, stalls: the console
    roles: list[Role] = field(default_factory=list)
    metrics_urls: dict[str, str] = field(default_factory=dict)  # role -> its /metrics on loopback
    seen: dict[int, psutil.Process] = field(default_factory=dict)  # every descendant observed so far
    attempt: int = 0  # this run's attempt: +1 per restart of a group and per --resume
    restarts: dict[str, int] = field(default_factory=dict)  # per restartable group
    pending: dict[str, float] = field(default_factory=dict)  # group -> when its restart is due (monotonic)
    _seen_at: float = 0.0
    _urls: tuple[list[str], list[str]] = ([], [])  # inference, env-worker argv pairs
    _stall: tuple[int, float] = (-1, 0.0)  # (last step seen, when it advanced)
    _step_seconds: list[float] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    def prepare(self) -> None:
        run_dir = self.run_dir
        started = (run_dir / "config.json").exists()
        if started and not self.resume:
            raise FileExistsError(
                f"run directory {run_dir} already holds a run: pass --resume to continue it, "
                "or choose another --output-dir"
            )
        if self.resume and not started:
            raise FileNotFoundError(f"--resume: no run to resume in {run_dir} (no config.json)")
        self.attempt = next_attempt(run_dir) if self.resume else 0
        with contextlib.suppress(OSError, ValueError):  # a resumed run keeps counting against its budget
            self.restarts = {k: int(v) for k, v in json.loads((run_dir / RESTARTS_FILE).read_text()).items()}
        cfg = self.cfg.model_copy(deep=True)
        cfg.transport.base_port = free_port(span=3)
        cfg.transport.host = "127.0.0.1"
        cfg.transport.publish_grace_ms = min(cfg.transport.publish_grace_ms, 200)
        self.cfg = cfg
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / ".config.json.tmp"
        tmp.write_text(cfg.to_json())
        os.replace(tmp, run_dir / "config.json")

    def _wait_for_model(self, builder: Role) -> None:
        """Until the builtin tiny model is complete (inference builds it first thing), if that is the model."""
        from rlrun.runtime.models.tiny import BUILTIN_TINY, is_complete

        if self.cfg.model.name != BUILTIN_TINY:
            return
        deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
        while not is_complete(self.run_dir / "model"):
            self.check_roles()
            if time.monotonic() > deadline:
                raise builder.failed(None, f"model not built after {HEALTH_TIMEOUT_SECONDS:g}s")
            time.sleep(0.1)

    def _role(self, name: str, argv: list[str], server: bool, metrics: bool = True, **extra_env: str) -> Role:
        """Start a role; with `metrics`, it serves Prometheus on a loopback port of its own, like the
        `metrics` port of its pod (the trainer's ranks share theirs, as in a pod)."""
        env = native_thread_limited_env()
        env.update({CONFIG_ENV: str(self.run_dir / "config.json"), "PYTHONUNBUFFERED": "1", **extra_env})
        if metrics:
            port = free_port()
            env.update({pod_contract.METRICS_PORT_ENV: str(port), pod_contract.METRICS_HOST_ENV: "127.0.0.1"})
            self.metrics_urls[name] = f"http://127.0.0.1:{port}/metrics"
        env[pod_contract.ATTEMPT_ENV] = str(self.attempt)
        role = Role(name, argv, attempt_log(self.run_dir, self.attempt, name), env, server=server)
        self.roles.append(role)
        role.start()
        return role

    def _trainer_argv(self) -> list[str]:
        return [
            self.python, "-m", "torch.distributed.run", "--nnodes", "1",
            # the run's whole trainer shape (nodes x processesPerNode ranks) on this one machine
            "--nproc-per-node", str(self.cfg.trainer.nodes * self.cfg.trainer.processes_per_node),
            "--max-restarts", "0",
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
            "-m", "rlrun.runtime.trainer", *self._urls[0],
        ]  # fmt: skip

    def _orchestrator_argv(self) -> list[str]:
        return [self.python, "-m", "rlrun.runtime.orchestrator", "--status-port", str(free_port()),
                *self._urls[0], *self._urls[1]]  # fmt: skip

    def start_all(self) -> None:
        """Start every role, overlapping their start-up (each spends seconds importing torch).

        Inference starts first and builds the tiny model; env-workers and the trainer ranks start as soon
        as the model is complete (they load it but talk to inference only later); the orchestrator, the
        only role that calls the others right away, starts once inference and env-workers are healthy.
        Starting one role after another's health check cost ~40 s of the CPU example's start-up.
        """
        py = self.python
        servers = []
        for i in range(self.inference_replicas):
            port = free_port()
            listen = ["--host", "127.0.0.1", "--port", str(port)]
            name = "inference" if i == 0 else f"inference-{i}"
            if self.engine == "vllm":
                role = self._start_vllm(name, listen)
            else:
                role = self._role(name, [py, "-m", "rlrun.runtime.inference", *listen], server=True)
                if i == 0:
                    self._wait_for_model(role)  # the first builds the tiny model; the others load it
            servers.append((role, f"http://127.0.0.1:{port}"))
        inference_urls = [a for _, url in servers for a in ("--inference-url", url)]
        self._urls = (inference_urls, [])
        workers = []
        for i in range(self.cfg.env_workers.replicas):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            worker = self._role(
                f"env-worker-{i}",
                [py, "-m", "rlrun.runtime.envs", "--host", "127.0.0.1", "--port", str(port),
                 *inference_urls],
                server=True,
            )  # fmt: skip
            workers.append((worker, url))
        self._urls = (inference_urls, [a for _, u in workers for a in ("--env-worker-url", u)])
        shutdown = torchrun_shutdown_seconds(self.cfg.trainer.termination_grace_period_seconds)
        self._role(
            "trainer",
            self._trainer_argv(),
            server=False,
            **{pod_contract.TORCHRUN_SHUTDOWN_ENV: str(shutdown)},
        )
        for role, url in servers:
            vllm = self.engine == "vllm"
            self._wait_healthy(role, url, VLLM_HEALTH_TIMEOUT_SECONDS if vllm else HEALTH_TIMEOUT_SECONDS)
        for role, url in workers:
            self._wait_healthy(role, url)
        self._role("orchestrator", self._orchestrator_argv(), server=False)

    def _start_vllm(self, name: str, listen: list[str]) -> Role:
        """vLLM's CPU build. The builtin tiny model is built first, here, with rlrun's own torch and
        transformers (what the trainer loads; vLLM's virtualenv pins other versions)."""
        from rlrun.runtime.models.tiny import resolve_model

        python = vllm_python()
        resolve_model(self.cfg.model.name, self.run_dir, seed=self.cfg.orchestrator.seed)
        return self._role(
            name,
            [str(python), "-m", "rlrun.runtime.inference.vllm_server", *listen],
            server=True,
            # -m must not put the cwd on sys.path (a checkout's operator/ would shadow the stdlib module);
            # vLLM's engine processes talk over loopback, not the host's first address.
            PYTHONSAFEPATH="1",
            VLLM_HOST_IP="127.0.0.1",
        )

    def _wait_healthy(self, role: Role, url: str, timeout: float = HEALTH_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_roles()
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise role.failed(None, f"not healthy at {url}/health after {timeout:g}s")

    def role(self, name: str) -> Role:
        return next(r for r in self.roles if r.name == name)

    def check_roles(self) -> None:
        """Raise RoleFailed for a server that exited or a job that exited non-zero; remember (once a second)
        every process of the run, so the stop reaches even those whose parent died."""
        if time.monotonic() - self._seen_at > 1.0:
            self._seen_at = time.monotonic()
            for role in self.roles:
                role.seen.update((p.pid, p) for p in role.processes())
                self.seen.update(role.seen)
            for role in self.roles:
                if rotate_if_larger(role.log_path, self.cfg.logs.max_bytes, self.cfg.logs.backups):
                    role.log_start = 0
        for role in self.roles:
            code = role.proc.poll() if role.proc else None
            if code is not None and (role.server or code != 0):
                self._restart_or_raise(role, role.failed(code))

    def _restart_or_raise(self, role: Role, failure: RoleFailed, diagnosed: bool = False) -> None:
        """The operator's group restart, locally: stop what is left of the group, count the restart and
        schedule the next attempt after the policy's backoff; past `max_restarts` (or for a server) raise."""
        report = (
            stackdump.dump_dir(self.run_dir, int(role.env[pod_contract.ATTEMPT_ENV])) / stackdump.REPORT_FILE
        )
        if report.is_file() and not diagnosed:  # the ranks' peer watch diagnosed a hang
            summary = json.loads(report.read_text())["summary"]
            self.on_event(f"hang diagnosis ({report}): {summary}")
            failure.error_line = failure.error_line or f"hang: {summary}"
        done = self.restarts.get(role.name, 0)
        if role.name not in RESTARTABLE or done >= self.policy.max_restarts:
            if done:
                failure.args = (
                    f"{failure.args[0]}; failurePolicy.maxRestarts {self.policy.max_restarts} spent",
                )
            raise failure
        stop_roles([role], STOP_GRACE_SECONDS, role.seen.values())  # ranks torchrun left behind too
        role.proc, role.seen = None, {}
        delay = self.policy.backoff(done)
        self.restarts[role.name] = done + 1
        tmp = self.run_dir / f".{RESTARTS_FILE}.tmp"
        tmp.write_text(json.dumps(self.restarts))
        os.replace(tmp, self.run_dir / RESTARTS_FILE)
        self.pending[role.name] = time.monotonic() + delay
        self.on_event(
            f"{role.name} failed (exit code {failure.returncode}: {failure.error_line or 'no error line'}); "
            f"restart {done + 1}/{self.policy.max_restarts} after {delay:g}s backoff; its log: {failure.log_path}"
        )

    def start_due(self) -> None:
        """Start every group whose restart backoff has passed, as the run's next attempt."""
        for name, due in list(self.pending.items()):
            if time.monotonic() < due:
                continue
            del self.pending[name]
            self.attempt += 1
            role = self.role(name)
            role.argv = self._trainer_argv() if name == "trainer" else self._orchestrator_argv()
            role.env[pod_contract.ATTEMPT_ENV] = str(self.attempt)
            role.log_path = attempt_log(self.run_dir, self.attempt, name)
            role.start()
            self._stall = (self._stall[0], time.monotonic())  # a new attempt gets the whole stall bound
            self.on_event(f"{name} restarted as attempt {self.attempt} (log: {role.log_path})")

    def dump_stacks(self, reason: str) -> Path:
        """Every live process of the run that registered a dump handler (stackdump.install) writes its
        stacks (SIGUSR1); a stopped one cannot and is named as such. The diagnosis goes to the console
        and `hang.json` beside the trainer's dumps; returns that report's path."""
        alive = {p.pid: p for role in self.roles for p in role.processes()}
        targets: dict[Path, dict[int, str]] = {}
        silent: dict[str, str] = {}
        for directory in sorted((self.run_dir / "forensics").glob("attempt-*")):
            for pid, name in stackdump.registered(directory).items():
                if pid not in alive:
                    continue
                targets.setdefault(directory, {})[pid] = name
                with contextlib.suppress(psutil.NoSuchProcess):
                    if alive[pid].status() == psutil.STATUS_STOPPED:
                        silent[stackdump.label(name, pid)] = (
                            "stopped (SIGSTOP): it cannot run, so it left no dump"
                        )
        offsets = {d: stackdump.sizes(d, names) for d, names in targets.items()}
        for names in targets.values():
            for pid in names:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, stackdump.DUMP_SIGNAL)
        time.sleep(DUMP_WAIT_SECONDS)
        dumps = {}
        for directory, names in targets.items():
            dumps.update(stackdump.read_dumps(directory, names, offsets[directory]))
        diagnosis = stackdump.diagnose(dumps, silent)
        directory = stackdump.dump_dir(self.run_dir, int(self.role("trainer").env[pod_contract.ATTEMPT_ENV]))
        directory.mkdir(parents=True, exist_ok=True)
        report = stackdump.write_report(directory, reason, diagnosis)
        self.on_event(
            f"stall: {reason}; stack dumps of {len(dumps)} processes under {self.run_dir / 'forensics'} "
            f"({report}); {diagnosis.summary}"
        )
        return report

    def check_stall(self, progress: Progress | None) -> None:
        """No step advance within the stall bound: the trainer group fails and the restart policy applies."""
        now = time.monotonic()
        if progress is not None and progress.step != self._stall[0]:
            if progress.step > self._stall[0] >= 0 and progress.step_seconds is not None:
                self._step_seconds = [*self._step_seconds[-19:], progress.step_seconds]
            self._stall = (progress.step, now)
            return
        bound = self.policy.stall_seconds(self._step_seconds)
        if self._stall[0] < 0 or now - self._stall[1] <= bound or "trainer" in self.pending:
            return
        trainer = self.role("trainer")
        self.dump_stacks(f"no step advance past step {self._stall[0]} for {now - self._stall[1]:.0f}s")
        message = f"stalled: no step advance past step {self._stall[0]} for {now - self._stall[1]:.0f}s (bound {bound:.0f}s)"
        self._stall = (self._stall[0], now)
        self._restart_or_raise(trainer, trainer.failed(None, message), diagnosed=True)

    def progress(self) -> Progress | None:
        try:
            return Progress.model_validate_json((self.run_dir / PROGRESS_FILE).read_text())
        except (OSError, ValueError):
            return None

    def wait(self, on_progress: Callable[[Progress], None], poll: float = 0.25) -> Progress:
        """Until orchestrator and trainer both finished successfully; returns the final progress."""
        orchestrator, trainer = self.role("orchestrator"), self.role("trainer")
        finish_deadline: float | None = None
        while True:
            self.check_roles()
            self.start_due()
            if (p := self.progress()) is not None:
                on_progress(p)
            self.check_stall(p)
            done = [r.proc is not None and r.proc.poll() == 0 for r in (orchestrator, trainer)]
            if all(done):
                final = self.progress()
                if final is None or final.state != "succeeded":
                    raise orchestrator.failed(0, "exited without reporting success")
                return final
            if any(done) and finish_deadline is None:
                finish_deadline = time.monotonic() + FINISH_TIMEOUT_SECONDS
            if finish_deadline is not None and time.monotonic() > finish_deadline:
                laggard = trainer if done[0] else orchestrator
                raise laggard.failed(None, f"did not finish within {FINISH_TIMEOUT_SECONDS:g}s of the other")
            time.sleep(poll)

    def stop_all(self) -> None:
        """Every role gets SIGTERM; the trainer has its grace window to checkpoint (preemption.py)."""
        grace = self.cfg.trainer.termination_grace_period_seconds
        stop_roles(self.roles, STOP_GRACE_SECONDS, self.seen.values(), patient=("trainer", grace))

    def finish_progress(self, state: str, message: str) -> None:
        """After every role stopped: `progress.json` must not go on saying `running` (or `starting`). A role
        stopped with the others writes `interrupted` itself; when the run failed, the failure is what stays."""
        current = self.progress()
        if current is not None and current.state in ("succeeded", "failed", state):
            return
        if current is None:
            current = Progress(run_id=self.cfg.run_id, max_steps=self.cfg.orchestrator.max_steps)
        write_progress(self.run_dir, current.model_copy(update={"state": state, "message": message}))


# ------------------------------------------------------------------------------------------- outputs


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def reward_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    """Per-step mean reward from the orchestrator's metrics (the last record wins after a resume)."""
    by_step = {r["step"]: r["reward_mean"] for r in read_jsonl(run_dir / "orchestrator" / "metrics.jsonl")}
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def save_reward_curve(run_dir: Path, chance: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, rewards = reward_curve(run_dir)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, rewards, label="reward mean")
    if chance is not None:
        ax.axhline(chance, linestyle="--", color="grey", label=f"image-blind ceiling ({chance:.2f})")
    ax.set_xlabel("step")
    ax.set_ylabel("reward")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right")
    ax.set_title(run_dir.name)
    fig.tight_layout()
    path = run_dir / "reward_curve.png"
    tmp = path.with_name(".reward_curve.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def summarize(run_dir: Path, seconds: float) -> dict[str, Any]:
    steps, rewards = reward_curve(run_dir)
    head = rewards[: max(1, len(rewards) // 10)]
    tail = rewards[-max(1, len(rewards) // 10) :]
    trainer = read_jsonl(run_dir / "trainer" / "metrics_rank0.jsonl")
    return {
        "steps": len(steps),
        "reward_first": sum(head) / len(head) if head else None,
        "reward_last": sum(tail) / len(tail) if tail else None,
        "seconds": seconds,
        "trainer_step_seconds": sum(r["time_step_s"] for r in trainer) / len(trainer) if trainer else None,
        "run_dir": str(run_dir),
    }


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(f"stopped by {signal.Signals(signum).name}")


def run_local(
    cfg: RuntimeConfig,
    resume: bool = False,
    on_progress: Callable[[Progress], None] = lambda p: None,
    engine: str = "rlrun",
    inference_replicas: int = 1,
    on_started: Callable[[dict[str, str]], None] = lambda metrics_urls: None,
    policy: RestartPolicy | None = None,
    on_event: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Run `cfg` to completion as local processes; `on_started` gets each role's /metrics URL once all
    started. Raises RoleFailed, KeyboardInterrupt (Ctrl-C) or
    Interrupted (SIGTERM), always after stopping every process of the run and recording the final state."""
    started = time.monotonic()
    if engine == "vllm":
        vllm_python()  # fail before anything starts when vLLM's virtualenv is missing
    run = LocalRun(
        cfg,
        resume=resume,
        engine=engine,
        inference_replicas=inference_replicas,
        policy=policy or RestartPolicy(),
        on_event=on_event,
    )
    run.prepare()
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    outcome = ("interrupted", "stopped before it finished")
    try:
        run.start_all()
        on_started(dict(run.metrics_urls))
        run.wait(on_progress)
        outcome = ("succeeded", "")
    except RoleFailed as failure:
        outcome = ("failed", f"{failure}: {failure.error_line or 'see ' + str(failure.log_path)}")
        raise
    except (KeyboardInterrupt, Interrupted) as stop:
        outcome = ("interrupted", str(stop) or "stopped by SIGINT")
        raise
    finally:
        # A second Ctrl-C (or a SIGTERM) must not cut the shutdown short and leave roles running.
        handlers = [signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)]
        try:
            run.stop_all()
            if outcome[0] != "succeeded":
                run.finish_progress(*outcome)
        finally:
            if outcome[0] != "interrupted":  # interrupted: the launcher exits next, ignoring more signals
                signal.signal(signal.SIGINT, handlers[0])
                signal.signal(signal.SIGTERM, previous)
    env = cfg.env_workers.environment
    chance = 1.0 / int(env.args.get("num_colours", 4)) if env.id == "color-codeword" else None
    save_reward_curve(run.run_dir, chance)
    return summarize(run.run_dir, time.monotonic() - started)
