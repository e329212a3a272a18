"""`rlrun local` serves every role's Prometheus metrics while the run goes, and prints where.

A real short run (real processes, 2 torchrun ranks): each printed /metrics is scraped over the run, and the
per-step figures must move as steps complete (step counters rise, the reward gauge changes), each trainer
rank's series coming through the trainer's one port."""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .conftest import SHORT_RUN, rlrun_local_file

pytestmark = pytest.mark.e2e
STEPS = 20  # at ~0.25 s a step, 8 steps ended before a 0.5 s scraper saw three values of each series


def _spec(tmp_path: Path) -> Path:
    doc = yaml.safe_load(SHORT_RUN.read_text())
    doc["metadata"]["name"] = "metrics"
    doc["spec"]["orchestrator"].update(batchSize=32, maxSteps=STEPS)
    doc["spec"]["trainer"].update(processesPerNode=2, microBatchSize=16, checkpointInterval=STEPS)
    path = tmp_path / "metrics.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line)


@pytest.mark.timeout(900)
def test_every_role_serves_metrics_that_move_with_the_run(tmp_path, no_leftover_processes) -> None:
    proc = rlrun_local_file(_spec(tmp_path), tmp_path, wait=False)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    output: list[str] = []
    try:
        urls: dict[str, str] = {}
        deadline = time.monotonic() + 400
        while not urls:
            assert proc.poll() is None and time.monotonic() < deadline, "".join(output)[-3000:]
            try:
                output.append(lines.get(timeout=1))
            except queue.Empty:
                continue
            if m := re.match(r"metrics: (.*)$", output[-1].strip()):
                urls = dict(re.findall(r"(\S+) (http://127\.0\.0\.1:\d+/metrics)", m.group(1)))
        assert set(urls) == {"inference", "env-worker-0", "trainer", "orchestrator"}, urls
        seen: dict[str, list[dict]] = {role: [] for role in urls}
        while proc.poll() is None:
            for role, url in urls.items():
                # not listening yet (still importing) or already gone at the end
                with contextlib.suppress(httpx.HTTPError):
                    seen[role].append(_samples(url))
            time.sleep(0.2)
        while not lines.empty():
            output.append(lines.get())
        assert proc.returncode == 0, "".join(output)[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def values(role: str, name: str, **labels: str) -> list[float]:
        key = (name, tuple(sorted(labels.items())))
        return [s[key] for s in seen[role] if key in s]

    def moves(series: list[float], rising: bool = True) -> None:
        assert len(set(series)) >= 3, series
        if rising:
            assert series == sorted(series), series

    moves(values("orchestrator", "rlrun_orchestrator_step"))
    # the step gauge counts the steps done (the last value can fall between two scrapes on a busy machine)
    assert max(values("orchestrator", "rlrun_orchestrator_step")) <= STEPS
    moves(values("orchestrator", "rlrun_reward_mean", environment="color-codeword"), rising=False)
    moves(values("orchestrator", "rlrun_orchestrator_rollouts_total"))
    for rank in ("0", "1"):  # both ranks through the trainer's one port
        moves(values("trainer", "rlrun_trainer_step", rank=rank))
        moves(values("trainer", "rlrun_trainer_loss_tokens_total", rank=rank))
        assert values("trainer", "rlrun_trainer_peak_memory_bytes", rank=rank, device="cpu")[-1] > 0
        assert values("trainer", "rlrun_trainer_images_materialized_total", rank=rank)[-1] > 0
        assert values("trainer", "rlrun_trainer_fanout_bytes_total", rank=rank)[-1] > 0
    moves(values("inference", "rlrun_inference_policy_version"))
    assert values("inference", "rlrun_inference_reload_seconds_count")[-1] >= STEPS - 1
    moves(values("env-worker-0", "rlrun_env_rollouts_total"))
    assert values("env-worker-0", "rlrun_env_rollout_errors_total")[-1] == 0
