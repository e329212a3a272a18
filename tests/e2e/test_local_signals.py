"""`rlrun local` under signals and failures: nothing of the run survives, the state and the cause are shown.

Every test runs the real launcher (the console script) with every role as a real process; the
`no_leftover_processes` fixture then looks for any process of the run (ps over the whole machine).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import yaml

from rlrun.cli import main

from .conftest import SHORT_RUN, rlrun_local, rlrun_local_file, trained_steps

pytestmark = pytest.mark.e2e
RUN = "run_color-codeword-ci"
STOP_BOUND = 30  # launcher exit after the signal: every role's TERM (5 s grace) then KILL, on busy cores


def _wait_for_training(proc: subprocess.Popen, run_dir: Path, timeout: float = 300) -> None:
    """Until both trainer ranks finished a step (the orchestrator runs a step ahead of them)."""
    deadline = time.monotonic() + timeout
    metrics = [run_dir / "trainer" / f"metrics_rank{rank}.jsonl" for rank in (0, 1)]
    while not all(m.is_file() and m.stat().st_size for m in metrics):
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"no trainer step within {timeout}s"
        time.sleep(0.3)


def _role(launcher: psutil.Process, needle: str) -> psutil.Process:
    return next(p for p in launcher.children() if needle in " ".join(p.cmdline()))


def _progress_state(run_dir: Path) -> str:
    return json.loads((run_dir / "progress.json").read_text())["state"]


def test_sigterm_to_the_launcher_stops_every_role(tmp_path, no_leftover_processes):
    proc = rlrun_local(tmp_path, wait=False)
    _wait_for_training(proc, tmp_path / RUN)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    out, _ = proc.communicate(timeout=STOP_BOUND + 30)
    assert time.monotonic() - sent < STOP_BOUND, out[-3000:]
    assert proc.returncode == 130 and "interrupted (stopped by SIGTERM)" in out, out[-3000:]
    assert _progress_state(tmp_path / RUN) == "interrupted"


def test_ctrl_c_twice_stops_every_role_and_resume_finishes_the_run(tmp_path, no_leftover_processes):
    """Ctrl-C three exports past a checkpoint, a second Ctrl-C during the shutdown, then `--resume`: the
    resumed trainer re-exports the checkpoint's weights while the interrupted run's later ones exist."""
    run_dir = tmp_path / RUN
    every = yaml.safe_load(SHORT_RUN.read_text())["spec"]["trainer"]["checkpointInterval"]
    steps = yaml.safe_load(SHORT_RUN.read_text())["spec"]["orchestrator"]["maxSteps"]
    proc = rlrun_local(tmp_path, wait=False)
    deadline = time.monotonic() + 300
    while trained_steps(run_dir) < every + 3:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"not {every + 3} steps within 300 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)  # lands during the shutdown
    out, _ = proc.communicate(timeout=STOP_BOUND + 30)
    assert proc.returncode == 130 and "interrupted (SIGINT)" in out, out[-3000:]
    assert _progress_state(run_dir) == "interrupted"
    assert (run_dir / "checkpoints" / f"step_{every}" / "DONE").is_file()

    code, out = rlrun_local(tmp_path, "--resume")
    assert code == 0, out[-4000:]
    assert (run_dir / "weights" / f"step_{steps}" / "DONE").is_file()
    assert _progress_state(run_dir) == "succeeded"


def test_killing_torchrun_outright_leaves_no_rank_running(tmp_path, no_leftover_processes):
    proc = rlrun_local(tmp_path, wait=False)
    _wait_for_training(proc, tmp_path / RUN)
    torchrun = _role(psutil.Process(proc.pid), "torch.distributed.run")
    ranks = torchrun.children()
    assert len(ranks) == 2
    torchrun.kill()  # SIGKILL: torchrun cannot stop its ranks, which run in sessions of their own
    out, _ = proc.communicate(timeout=STOP_BOUND + 30)
    assert proc.returncode == 1 and "role trainer failed (exit code -9)" in out, out[-3000:]
    assert f"full log: {tmp_path / RUN / 'logs' / 'attempt-0' / 'trainer.log'}" in out
    assert _progress_state(tmp_path / RUN) == "failed"
    _, alive = psutil.wait_procs(ranks, timeout=5)
    assert not alive, alive


def test_killing_the_launcher_outright_leaves_no_role_running(tmp_path, no_leftover_processes):
    proc = rlrun_local(tmp_path, wait=False)
    _wait_for_training(proc, tmp_path / RUN)
    launcher = psutil.Process(proc.pid)
    everything = launcher.children(recursive=True)
    everything += [r for p in everything for r in p.children(recursive=True) if r not in everything]
    proc.kill()
    proc.communicate(timeout=30)
    _, alive = psutil.wait_procs(everything, timeout=10)
    assert not alive, alive


def test_a_failing_role_shows_its_error_line_first(tmp_path, no_leftover_processes):
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "no-such-architecture"}')
    spec = yaml.safe_load(SHORT_RUN.read_text())
    spec["spec"]["model"]["name"] = str(model)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(spec))
    code, out = rlrun_local_file(config, tmp_path, timeout=180)
    assert code == 1, out[-3000:]
    first = next(line for line in out.splitlines() if "failed (exit code" in line)
    role, cause = re.fullmatch(r"role (\S+) failed \(exit code 1\): (\w+Error: .+)", first).groups()
    log = (tmp_path / RUN / "logs" / "attempt-0" / f"{role}.log").read_text()
    assert cause in log and "Traceback" in log.split(cause)[0], out[-3000:]  # its own error, not a summary
    assert (
        out.index(first)
        < out.index(f"full log: {tmp_path / RUN / 'logs' / 'attempt-0' / role}.log")
        < out.index("Last lines of the log")
    )
    assert _progress_state(tmp_path / RUN) == "failed"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read it: No such file or directory"),
        ("spec: [unclosed", "not valid YAML"),
        ("apiVersion: rlrun.dev/v1alpha1\nkind: RLRun\nmetadata: {name: x}\nspec: {orchestrator: {batchSize: 0}}",
         "spec.orchestrator.batchSize"),
        ("apiVersion: rlrun.dev/v1alpha1\nkind: RLRun\nmetadata: {name: x}\n"
         "spec: {envWorkers: {environment: {id: no-such-env}}}", "unknown environment 'no-such-env'"),
        ("apiVersion: rlrun.dev/v1alpha1\nkind: RLRun\nmetadata: {name: x}\n"
         "spec: {model: {name: /nonexistent/model}}", "model.name: /nonexistent/model is not a model directory"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_in_seconds_before_any_role_starts(tmp_path, capsys, content, expected):
    path = tmp_path / "run.yaml"
    if content is not None:
        path.write_text(content)
    started = time.monotonic()
    assert main(["local", str(path), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err
    assert time.monotonic() - started < 10
    assert not (tmp_path / "out").exists()  # nothing was started or written
