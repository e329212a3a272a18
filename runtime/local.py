"""`rlrun local`: one RLRun as local processes, the operator's shape without Kubernetes.

Each role is the same entry point the pods run (inference, env-workers, orchestrator, torchrun trainer),
started in its own process group with native-thread limits and a log file under `<run_dir>/logs/`.
The launcher shows a live progress bar from `progress.json`, and on success a summary and
`reward_curve.png`. Any role failing, Ctrl-C or SIGTERM stops every role's process tree (SIGTERM, then
SIGKILL after `STOP_GRACE_SECONDS`; further signals are ignored until that is done), writes the final state
(`failed` / `interrupted`) into `progress.json` and shows the failing role's error line and log path. Each
role also dies with the launcher (PR_SET_PDEATHSIG), so even a SIGKILLed launcher leaves nothing running.
`resume=True` continues an interrupted run: the trainer from its last complete checkpoint, the orchestrator
from its saved position. `preflight` checks what can be checked in seconds before any role starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from rlrun.runtime.config import CONFIG_ENV, PROGRESS_FILE, Progress, RuntimeConfig, write_progress
from rlrun.runtime.lifetime import die_with_parent

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
    from rlrun.runtime.envs.builtin import make_environment
    from rlrun.runtime.models.tiny import BUILTIN_TINY

    problems = []
    env = cfg.env_workers.environment
    try:
        make_environment(env.id, env.args)
    except ValueError as err:
        problems.append(f"envWorkers.environment: {err}")
    name = cfg.model.name
    if name.startswith("builtin:") and name != BUILTIN_TINY:
        problems.append(f"model.name: unknown builtin model {name!r}: the only builtin is {BUILTIN_TINY!r}")
    elif (os.path.isabs(name) or name.startswith(".")) and not (Path(name) / "config.json").is_file():
        problems.append(f"model.name: {name} is not a model directory (no config.json there)")
    return problems


def native_thread_limited_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` (default os.environ) with the native-thread caps overriding existing values."""
    return {**(os.environ if base is None else base), **NATIVE_THREAD_ENV}


def free_port(span: int = 1) -> int:
    """A loopback port p with p..p+span-1 all free right now (the fan-out needs base, base+1, base+2)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + span > 65535:
            continue
        try:
            sockets = []
            for p in range(port, port + span):
                s = socket.socket()
                sockets.append(s)
                s.bind(("0.0.0.0", p))
            return port
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no block of {span} free ports found")


@dataclass
class Role:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    server: bool = False  # long-running: exiting at all is a failure
    log_start: int = 0  # where this start's output begins in the (appended, on resume) log

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


def stop_roles(roles: list[Role], grace: float, seen: Iterable[psutil.Process] = ()) -> None:
    """SIGTERM every role's process group and every descendant at once, SIGKILL what is left after
    `grace`; returns once all are gone (at most ~2 x grace). `seen` are descendants found earlier: a rank
    re-parented when torchrun died is not found under it any more."""
    procs = list({p.pid: p for p in [*seen, *(p for role in roles for p in role.processes())]}.values())
    procs = [p for p in procs if p.is_running()]  # is_running also refuses a recycled pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for role in roles:
            if role.proc is not None:
                with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
                    os.killpg(role.proc.pid, sig)
        for p in procs:
            with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
                p.send_signal(sig)
                if sig == signal.SIGKILL:
                    p.resume()  # harmless after SIGKILL; a stopped process dies as soon as it runs
        _, procs = psutil.wait_procs(procs, timeout=grace)
        for role in roles:
            if role.proc is not None:
                role.proc.poll()  # reap the direct children
        if not procs:
            return


@dataclass
class LocalRun:
    """The processes of one local run and what the launcher learned about them."""

    cfg: RuntimeConfig
    resume: bool = False
    python: str = sys.executable
    engine: str = "rlrun"  # "vllm": vLLM's CPU build from its own virtualenv (vllm_python)
    inference_replicas: int = 1  # servers, each its own process and URL; every one gets every reload
    roles: list[Role] = field(default_factory=list)
    seen: dict[int, psutil.Process] = field(default_factory=dict)  # every descendant observed so far
    _seen_at: float = 0.0

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

    def _role(self, name: str, argv: list[str], server: bool, **extra_env: str) -> Role:
        env = native_thread_limited_env()
        env.update({CONFIG_ENV: str(self.run_dir / "config.json"), "PYTHONUNBUFFERED": "1", **extra_env})
        role = Role(name, argv, self.run_dir / "logs" / f"{name}.log", env, server=server)
        self.roles.append(role)
        role.start()
        return role

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
        self._role(
            "trainer",
            [py, "-m", "torch.distributed.run", "--nnodes", "1",
             # the run's whole trainer shape (nodes x processesPerNode ranks) on this one machine
             "--nproc-per-node", str(self.cfg.trainer.nodes * self.cfg.trainer.processes_per_node),
             "--max-restarts", "0",
             "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
             "-m", "rlrun.runtime.trainer", *inference_urls],
            server=False,
        )  # fmt: skip
        for role, url in servers:
            vllm = self.engine == "vllm"
            self._wait_healthy(role, url, VLLM_HEALTH_TIMEOUT_SECONDS if vllm else HEALTH_TIMEOUT_SECONDS)
        for role, url in workers:
            self._wait_healthy(role, url)
        self._role(
            "orchestrator",
            [py, "-m", "rlrun.runtime.orchestrator", "--status-port", str(free_port()),
             *inference_urls, *[a for _, u in workers for a in ("--env-worker-url", u)]],
            server=False,
        )  # fmt: skip

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
            self.seen.update((p.pid, p) for role in self.roles for p in role.processes())
        for role in self.roles:
            code = role.proc.poll() if role.proc else None
            if code is not None and (role.server or code != 0):
                raise role.failed(code)

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
            if (p := self.progress()) is not None:
                on_progress(p)
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
        stop_roles(self.roles, STOP_GRACE_SECONDS, self.seen.values())

    def finish_progress(self, state: str, message: str) -> None:
        """After every role stopped: `progress.json` must not go on saying `running` (or `starting`)."""
        current = self.progress()
        if current is not None and current.state in ("succeeded", "failed", "interrupted"):
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
) -> dict[str, Any]:
    """Run `cfg` to completion as local processes. Raises RoleFailed, KeyboardInterrupt (Ctrl-C) or
    Interrupted (SIGTERM), always after stopping every process of the run and recording the final state."""
    started = time.monotonic()
    if engine == "vllm":
        vllm_python()  # fail before anything starts when vLLM's virtualenv is missing
    run = LocalRun(cfg, resume=resume, engine=engine, inference_replicas=inference_replicas)
    run.prepare()
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    outcome = ("interrupted", "stopped before it finished")
    try:
        run.start_all()
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
