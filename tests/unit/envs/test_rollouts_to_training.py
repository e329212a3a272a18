"""From real rollouts to what the trainer and the sample log get: the orchestrator's own sample building.

Rollouts come from the real env-worker code against the real inference server (tiny model). A random
tiny model never says the codeword, and groups whose rewards are all equal never reach training, so the
environment here is the colour task with a reward that varies within a group (a test environment; the
rest of the path is production code): `Orchestrator.to_samples`, the sample parquet writer, the packer,
the materializer and the trainer's `to_tensors`.
"""

from __future__ import annotations

import asyncio
import copy
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from live_rollouts import produce

from rlrun.runtime.assets import uri_to_path
from rlrun.runtime.config import RuntimeConfig
from rlrun.runtime.envs.builtin.color_codeword import ColorCodeword
from rlrun.runtime.envs.worker import Sampling, image_token_id
from rlrun.runtime.orchestrator.advantages import score_groups
from rlrun.runtime.orchestrator.loop import Orchestrator
from rlrun.runtime.orchestrator.main import _mm_encoder
from rlrun.runtime.orchestrator.state import load_state
from rlrun.runtime.trainer.batches import to_tensors
from rlrun.runtime.trainer.main import _materializer
from rlrun.runtime.trainer.packing import build_micro_batch
from rlrun.runtime.upload.parquet import write_samples_parquet

GROUP = 4


class VariedColours(ColorCodeword):
    """The colour task, rewarded by a hash of the completion: rewards vary within a group."""

    id = "varied-colours"

    def reward(self, example: Any, completion: str) -> float:
        return float(zlib.crc32(completion.encode()) % 2)


async def _produce(stack: Any, indices: list[int]) -> list[dict[str, Any]]:
    groups = [(i, Sampling(max_tokens=3, seed=11 + i)) for i in indices]
    return (await produce(stack, VariedColours(num_colours=4), groups, GROUP))[0]


@pytest.fixture(scope="module")
def produced(color_stack) -> list[dict[str, Any]]:
    rollouts = asyncio.run(_produce(color_stack, [0, 1]))
    _advantages, keep = score_groups([r["reward"] for r in rollouts], GROUP)
    assert keep[0] and keep[GROUP], "precondition: both groups must train (rewards vary within each)"
    return rollouts


def _config(stack: Any, **multimodal: Any) -> RuntimeConfig:
    cfg = stack.config.model_copy(deep=True)
    cfg.orchestrator.batch_size, cfg.orchestrator.group_size = 2 * GROUP, GROUP
    for key, value in multimodal.items():
        setattr(cfg.multimodal, key, value)
    return cfg


def _orchestrator(cfg: RuntimeConfig, tmp_path: Path, mm_encoder: Any = None) -> Orchestrator:
    state = load_state(tmp_path / "orchestrator", cfg.orchestrator.seed)
    return Orchestrator(
        cfg, ["http://127.0.0.1:9"], ["http://127.0.0.1:9"], None, None, None, state, mm_encoder
    )  # type: ignore[arg-type]


def _groups(rollouts: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(group id, seed) per group, as `Orchestrator.generate` returns them."""
    return [(group, 0) for group in range(len(rollouts) // GROUP)]


@contextmanager
def _image_gone(rollout: dict[str, Any]) -> Iterator[Path]:
    """The rollout's image file disappears (swept, lost with a node), and is put back afterwards."""
    path = uri_to_path(rollout["mm"]["uris"][0])
    data = path.read_bytes()
    path.unlink()
    try:
        yield path
    finally:
        path.write_bytes(data)


def test_the_sample_log_records_each_rollouts_advantage_and_token_counts(
    color_stack, produced, tmp_path
) -> None:
    rollouts = copy.deepcopy(produced)
    counts = [(len(r["prompt_ids"]), len(r["completion_ids"])) for r in rollouts]
    advantages, _keep = score_groups([r["reward"] for r in rollouts], GROUP)
    orchestrator = _orchestrator(_config(color_stack), tmp_path)
    samples, _kept, _filtered, _lengths = orchestrator.to_samples(rollouts, _groups(rollouts))
    assert samples  # the training batch is built from the same rollouts

    path = write_samples_parquet(tmp_path / "samples", 0, rollouts)
    assert path is not None
    rows = pq.read_table(path).to_pylist()
    assert [(r["num_prompt_tokens"], r["num_completion_tokens"]) for r in rows] == counts
    assert [r["advantage"] for r in rows] == pytest.approx(advantages)
    by_example = {(s.example_id, s.advantage) for s in samples}
    assert by_example <= {(r["example_id"], r["advantage"]) for r in rows}


def test_non_deferred_materialization_drops_a_sample_whose_image_is_gone(
    color_stack, produced, tmp_path
) -> None:
    cfg = _config(color_stack, defer_materialization=False, missing_image_policy="drop")
    orchestrator = _orchestrator(cfg, tmp_path, _mm_encoder(cfg))
    rollouts = copy.deepcopy(produced)
    _advantages, keep = score_groups([r["reward"] for r in rollouts], GROUP)
    with _image_gone(rollouts[0]):
        samples, kept_per_group, _filtered, _lengths = orchestrator.to_samples(rollouts, _groups(rollouts))
    second = rollouts[GROUP]["example_id"]
    assert [s.example_id for s in samples] == [second] * sum(keep[GROUP:])  # the first group is dropped
    assert kept_per_group == [0, len(samples)] and {s.group for s in samples} == {1}
    assert all(s.mm_kwargs is not None and s.mm_refs is None for s in samples)


def test_drop_policy_zeroes_the_loss_of_exactly_the_rows_whose_image_is_gone(
    color_stack, produced, tmp_path
) -> None:
    cfg = _config(color_stack, missing_image_policy="drop")
    rollouts = copy.deepcopy(produced)
    samples, _kept, _filtered, _lengths = _orchestrator(cfg, tmp_path).to_samples(rollouts, _groups(rollouts))
    micro_batch = build_micro_batch(samples)  # the packer's real micro-batch: refs, not pixels
    sent = np.frombuffer(micro_batch.loss_mask, np.uint8).reshape(micro_batch.rows, micro_batch.seq_len)
    first = rollouts[0]["example_id"]
    lost = [i for i, s in enumerate(samples) if s.example_id == first]
    kept = [i for i, s in enumerate(samples) if s.example_id != first]
    assert lost and kept and sent[lost].any()

    model = color_stack.config.model.name
    with (
        _image_gone(rollouts[0]),
        _materializer(cfg, model) as materializer,  # what each data rank builds
    ):
        tensors = to_tensors(micro_batch, materializer, image_token_id(model))
        assert materializer.reset_stats().failed == len(lost)

    mask = tensors.loss_mask.numpy()
    assert not mask[lost].any()  # the rows whose image is gone train nothing
    assert (mask[kept] == sent[kept].astype(bool)).all()  # every other row trains as sent
