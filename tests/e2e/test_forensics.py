"""Run forensics on real `rlrun local` runs: lossless resume, hangs that diagnose themselves, attempt logs.

Every role is a real process and every fault a real signal. A run whose trainer group, orchestrator and
then whole launcher are killed at chosen steps must consume exactly the prompts (group ids, example ids,
sampling seeds) of an uninterrupted run of the same seed, and its final weights must have trained each
consumed, unfiltered group exactly once. A trainer rank frozen with SIGSTOP must be named, with every live
rank's stacks on the volume, within the peer-silence bound; the group then restarts, and the failed
attempt's logs stay readable through `rlrun logs --attempt`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import yaml

from rlrun.cli import main
from rlrun.client import LocalClient, RunNotFound
from rlrun.client.events import is_terminal
from rlrun.runtime import stackdump
from rlrun.runtime.orchestrator.state import read_ledger
from rlrun.runtime.trainer.lineage import TRAINED_FILE, lineage, read_records

from .conftest import rlrun_local_file

pytestmark = pytest.mark.e2e
HERE = Path(__file__).parent
FORENSICS_RUN = HERE / "color-codeword-forensics.yaml"
_SPEC = yaml.safe_load(FORENSICS_RUN.read_text())["spec"]
STEPS = _SPEC["orchestrator"]["maxSteps"]
GROUPS = _SPEC["orchestrator"]["batchSize"] // _SPEC["orchestrator"]["groupSize"]
RUN = "run_forensics"
SILENCE = 6  # transport.peerSilenceSeconds of the frozen-rank test


def _progress(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


def _trained_steps(run_dir: Path) -> int:
    """Steps in the trainer's current lineage (what its weights have trained)."""
    return len(lineage(read_records(run_dir / "trainer" / TRAINED_FILE)))


def _wait(proc: subprocess.Popen, what: str, done, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert proc.poll() is None, f"run ended before {what}: " + proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.2)


def _procs(launcher: subprocess.Popen, needle: str, not_needle: str = "\0") -> list[psutil.Process]:
    found = []
    for p in psutil.Process(launcher.pid).children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            continue
        if needle in cmd and not_needle not in cmd:
            found.append(p)
    return found


def _stop(proc: subprocess.Popen) -> None:
    """Whatever happened, the launcher stops every role (SIGINT) before the test ends."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


def _consumed(run_dir: Path) -> dict[int, list[tuple[int, str, int]]]:
    """Step -> (group id, example id, seed) of every group the step consumed, from the orchestrator's ledger."""
    return {
        step: [(g["group"], g["example"], g["seed"]) for g in entry["groups"]]
        for step, entry in read_ledger(run_dir / "orchestrator").items()
    }


@pytest.mark.timeout(1500)
def test_restarts_neither_skip_nor_repeat_a_prompt(tmp_path, no_leftover_processes):
    reference = tmp_path / "uninterrupted"
    code, out = rlrun_local_file(FORENSICS_RUN, reference, timeout=600)
    assert code == 0, out[-4000:]
    expected = _consumed(reference / RUN)
    assert sorted(expected) == list(range(STEPS))

    faulted = tmp_path / "faulted"
    run_dir = faulted / RUN
    proc = rlrun_local_file(FORENSICS_RUN, faulted, wait=False)
    try:
        # 1. the trainer group: SIGKILL one rank mid checkpoint interval (step 4 of 3-step intervals).
        _wait(proc, "trainer step 4", lambda: _trained_steps(run_dir) >= 5)
        ranks = _procs(proc, "rlrun.runtime.trainer", "torch.distributed.run")
        assert len(ranks) == 2, ranks
        ranks[1].send_signal(signal.SIGKILL)
        # 2. the orchestrator, once the restarted trainer group is training again.
        _wait(proc, "trainer restart", lambda: (run_dir / "logs" / "attempt-1" / "trainer.log").is_file())
        _wait(proc, "step 7", lambda: _progress(run_dir).get("step", 0) >= 7)
        (orchestrator,) = _procs(proc, "rlrun.runtime.orchestrator")
        orchestrator.send_signal(signal.SIGKILL)
        # 3. the whole run: SIGTERM to the launcher stops every role; --resume continues it.
        _wait(
            proc,
            "orchestrator restart",
            lambda: (run_dir / "logs" / "attempt-2" / "orchestrator.log").is_file(),
        )
        _wait(proc, "step 10", lambda: _progress(run_dir).get("step", 0) >= 10)
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, out[-3000:]
        restarts = ("trainer failed (exit code 1", "orchestrator failed (exit code -9")
        assert all(r in out for r in restarts), out[-3000:]
    finally:
        _stop(proc)
    code, out = rlrun_local_file(FORENSICS_RUN, faulted, "--resume", timeout=600)
    assert code == 0, out[-4000:]

    # The same prompts, step by step: group ids, example ids and sampling seeds.
    consumed = _consumed(run_dir)
    assert consumed == expected
    # The final weights trained each unfiltered group once; filtered ones are accounted, none is missing.
    ledger = read_ledger(run_dir / "orchestrator")
    trained = lineage(read_records(run_dir / "trainer" / TRAINED_FILE))
    assert sorted(trained) == list(range(STEPS))
    for step, groups in trained.items():
        assert groups == sorted(g["group"] for g in ledger[step]["groups"] if not g["filtered"]), step
    all_trained = [g for groups in trained.values() for g in groups]
    assert len(all_trained) == len(set(all_trained)), "a group was trained twice"
    filtered = {g["group"] for entry in ledger.values() for g in entry["groups"] if g["filtered"]}
    assert set(all_trained) | filtered == set(range(STEPS * GROUPS)), "a group was skipped"
    records = read_records(run_dir / "trainer" / TRAINED_FILE)
    resumes = [r for r in records if "resumedFrom" in r]
    assert len(resumes) == 3 and resumes[1]["resumedFrom"] in (3, 6), resumes  # killed at step 4 or 5
    # Progress accounts the prompts: consumed, filtered and regenerated after the orchestrator restarts.
    progress = _progress(run_dir)
    assert progress["state"] == "succeeded" and progress["promptsConsumed"] == STEPS * GROUPS
    assert progress["promptsFiltered"] == len(filtered)
    metrics = [json.loads(line) for line in (run_dir / "orchestrator" / "metrics.jsonl").open()]
    assert metrics[-1]["prompts_consumed"] == STEPS * GROUPS and metrics[-1]["step"] == STEPS - 1
    logs = "".join(p.read_text() for p in (run_dir / "logs").glob("attempt-*/orchestrator.log"))
    assert progress["promptsRegenerated"] == GROUPS * logs.count("are regenerated with the same group ids")


def _ranks(run_dir: Path) -> dict[int, psutil.Process]:
    """The run's trainer ranks by RANK (torchrun's workers, not torchrun itself)."""
    ranks = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            env = p.environ()
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        mine = env.get("RLRUN_CONFIG", "").startswith(str(run_dir))
        if mine and "rlrun.runtime.trainer" in cmd and "torch.distributed.run" not in cmd and "RANK" in env:
            ranks[int(env["RANK"])] = p
    return ranks


@pytest.mark.timeout(900)
def test_a_frozen_rank_is_named_its_peers_stacks_dumped_and_the_group_restarts(
    tmp_path, capsys, no_leftover_processes
):
    doc = yaml.safe_load(FORENSICS_RUN.read_text())
    doc["metadata"]["name"] = "frozen"
    doc["spec"]["trainer"]["processesPerNode"] = 3
    doc["spec"]["transport"] = {"peerSilenceSeconds": SILENCE}
    client = LocalClient(tmp_path)
    name = client.submit(doc).metadata.name
    run_dir = tmp_path / "run_frozen"
    try:
        deadline = time.monotonic() + 400
        while _trained_steps(run_dir) < 4:  # past the checkpoint of step 3
            assert time.monotonic() < deadline, "no trainer step within 400 s"
            time.sleep(0.2)
        ranks = _ranks(run_dir)
        assert sorted(ranks) == [0, 1, 2], ranks
        frozen = ranks[1]
        frozen.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        dumps = stackdump.dump_dir(run_dir, 0)
        report = dumps / stackdump.REPORT_FILE
        bound = SILENCE + 1 + 5 + 10  # silence, the watch's poll, the wait for dumps, slack on busy cores
        while not report.is_file():
            assert time.monotonic() - frozen_at < bound, f"no hang report within {bound}s"
            time.sleep(0.2)
        diagnosis = json.loads(report.read_text())
        culprit = stackdump.label("trainer-rank1", frozen.pid)
        assert diagnosis["culprit"] == culprit, diagnosis
        for rank, proc in ranks.items():  # every live rank dumped all its threads; the frozen one could not
            text = (dumps / f"trainer-rank{rank}-{proc.pid}.stacks").read_text()
            assert ("most recent call first" in text) == (rank != 1), (rank, text[-2000:])
        outcome = client.wait(name, timeout=600)
        assert outcome.phase == "Succeeded", outcome
        assert client.get(name).status.restarts == 1
    finally:
        with contextlib.suppress(RunNotFound):
            if not is_terminal(client.get(name).status.phase):
                client.cancel(name)
    assert not psutil.pid_exists(frozen.pid) or frozen.status() == psutil.STATUS_ZOMBIE
    launcher = (tmp_path / ".rlrun-client" / name / "launcher.log").read_text()
    assert f"hang diagnosis ({report}): suspected culprit: {culprit}" in launcher, launcher[-3000:]
    assert "trainer restarted as attempt 1" in launcher
    # The failed attempt's processes are gone; its logs are still there, through `rlrun logs`.
    assert main(["logs", name, "--local", str(tmp_path), "--attempt", "0", "-c", "trainer"]) == 0
    out = capsys.readouterr().out
    assert "hang: rank 1 is silent" in out and "suspected culprit: trainer-rank1" in out, out[-3000:]
    assert main(["logs", name, "--local", str(tmp_path), "--attempt", "1", "-c", "trainer"]) == 0
    resumed = re.search(r"rank 0 resumed from checkpoint step (\d+)", capsys.readouterr().out)
    assert resumed and int(resumed.group(1)) in (3, 6), "attempt 1 resumes from the last checkpoint"
