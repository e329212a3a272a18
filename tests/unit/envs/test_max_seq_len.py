"""`trainer.maxSeqLen`: the orchestrator cuts a too-long sample, never through an image, and drops (counts,
logs) one left with nothing to train.

Samples come from the real producers: multi-turn episodes of the calculator whose first tool reply carries
a picture (so a sample has trained tokens, then an image, then more trained tokens), made by the real
env-worker against the real inference server (tiny model, its real tokenizer and image processor). The cut
samples then go through the trainer's own packer, materializer and `to_tensors`, whose image-token check
(mm/tripwires.py `check_image_tokens`) must still hold.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from live_rollouts import PictureCalculator, produce

from rlrun.runtime.envs.worker import Sampling, image_token_id
from rlrun.runtime.mm.tripwires import check_image_tokens
from rlrun.runtime.orchestrator.advantages import score_groups
from rlrun.runtime.orchestrator.loop import Orchestrator
from rlrun.runtime.orchestrator.samples import fit_to_max_seq_len, sample_parts, to_training_sample
from rlrun.runtime.orchestrator.state import load_state
from rlrun.runtime.trainer.batches import to_tensors
from rlrun.runtime.trainer.main import _materializer
from rlrun.runtime.trainer.packing import build_micro_batch

GROUP = 4


@pytest.fixture(scope="module")
def rollouts(text_stack) -> list[dict[str, Any]]:
    env = PictureCalculator(num_examples=8, max_operand=9, max_turns=3, format_reward=0.1, seed=0)
    # The tiny policy often writes the same few tokens in every rollout of a group (one reward: a group
    # the orchestrator filters out); draw again with other seeds until a group's rewards vary.
    for seed in range(5, 25):
        groups = [(i, Sampling(max_tokens=4, seed=seed)) for i in (0, 1)]
        rollouts = asyncio.run(produce(text_stack, env, groups, GROUP))[0]
        if any(score_groups([r["reward"] for r in rollouts], GROUP)[1]):
            return rollouts
    raise AssertionError("no seed gave a group with varied rewards")


def _parts(rollouts: list[dict[str, Any]]) -> list[Mapping[str, Any]]:
    return [part for r in rollouts for part in sample_parts(r)]


def _spans(part: Mapping[str, Any]) -> list[list[int]]:
    return part["mm"]["descriptor"]["mm_placeholders"]["image"] if part.get("mm") else []


def _trained_before(part: Mapping[str, Any], end: int) -> bool:
    """Whether a token the policy sampled lies in the first `end` tokens of the sample."""
    n = end - len(part["prompt_ids"])
    mask = part.get("completion_mask") or [1] * len(part["completion_ids"])
    return n > 0 and any(mask[:n])


def _check_in_trainer(parts: list[Mapping[str, Any]], model: str, cfg: Any) -> torch.Tensor:
    """The parts as a trainer rank sees them (packer, materializer, `to_tensors`); the image token count."""
    samples = [to_training_sample(p, advantage=1.0) for p in parts]
    with _materializer(cfg, model) as materializer:
        t = to_tensors(build_micro_batch(samples), materializer, image_token_id(model))
    grids = t.model_kwargs.get("image_grid_thw")
    merge = materializer.geometry.merge_size
    check_image_tokens(t.input_ids, image_token_id(model), t.model_kwargs.get("pixel_values"), grids, merge)
    return t.loss_mask


def test_no_limit_or_a_sample_within_it_is_unchanged(rollouts) -> None:
    for part in _parts(rollouts):
        assert fit_to_max_seq_len(part, None).part is part
        length = len(part["prompt_ids"]) + len(part["completion_ids"])
        fitted = fit_to_max_seq_len(part, length)
        assert fitted.outcome == "kept" and fitted.part is part


def test_a_text_sample_is_cut_at_the_limit_with_its_mask_and_logprobs(rollouts) -> None:
    cut = 0
    for part in _parts(rollouts):
        prompt = len(part["prompt_ids"])
        limit = prompt + 2
        if not _trained_before(part, limit) or any(o < limit for o, _ in _spans(part)):
            continue
        original = copy.deepcopy(dict(part))
        fitted = fit_to_max_seq_len(part, limit)
        assert dict(part) == original  # pure
        assert fitted.outcome == "truncated" and fitted.part is not None
        out = fitted.part
        assert out["prompt_ids"] == part["prompt_ids"]
        assert len(out["prompt_ids"]) + len(out["completion_ids"]) == limit
        assert out["completion_ids"] == part["completion_ids"][:2]
        assert out["completion_logprobs"] == part["completion_logprobs"][:2]
        if part.get("completion_mask") is not None:
            assert out["completion_mask"] == part["completion_mask"][:2]
        assert out.get("mm") is None  # every image of the sample lay after the cut
        cut += 1
    assert cut, "no sample had a sampled token right after its prompt"


def test_a_cut_inside_an_image_moves_before_it_and_drops_the_image(rollouts, text_stack) -> None:
    model, cfg = text_stack.config.model.name, text_stack.config
    cut_parts, whole_parts = [], []
    for part in _parts(rollouts):
        spans = _spans(part)
        later = [(o, n) for o, n in spans if o > len(part["prompt_ids"]) and _trained_before(part, o)]
        if not later:
            continue
        offset, length = later[0]
        assert length >= 2, "precondition: an image of several tokens, so a cut can fall inside it"
        fitted = fit_to_max_seq_len(part, offset + length // 2)
        assert fitted.outcome == "truncated" and fitted.part is not None
        out = fitted.part
        assert len(out["prompt_ids"]) + len(out["completion_ids"]) == offset  # just before the image
        kept = [s for s in spans if s[0] + s[1] <= offset]
        if kept:
            assert out["mm"]["descriptor"]["mm_placeholders"]["image"] == kept
            assert len(out["mm"]["descriptor"]["mm_hashes"]["image"]) == len(kept)
        else:
            assert out.get("mm") is None
        cut_parts.append(out)
        whole = fit_to_max_seq_len(part, offset + length)  # a cut right after the image keeps it
        assert whole.part is not None and _spans(whole.part)[-1] == [offset, length]
        whole_parts.append(whole.part)
    assert cut_parts, "no sample had trained tokens before a tool reply's image"
    loss = _check_in_trainer(cut_parts, model, cfg)  # image tokens and features agree (else ValueError)
    assert loss.any(dim=1).all()  # every cut sample still trains
    _check_in_trainer(whole_parts, model, cfg)


def test_a_prompt_longer_than_the_limit_is_dropped_not_cut(rollouts) -> None:
    for part in _parts(rollouts):
        fitted = fit_to_max_seq_len(part, len(part["prompt_ids"]))
        assert fitted.part is None and fitted.outcome == "too_long"
        assert "prompt" in fitted.reason


def test_the_orchestrator_counts_and_logs_what_the_limit_cut_and_dropped(
    rollouts, text_stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = text_stack.config.model_copy(deep=True)
    cfg.orchestrator.batch_size, cfg.orchestrator.group_size = 2 * GROUP, GROUP
    _advantages, keep = score_groups([r["reward"] for r in rollouts], GROUP)
    trained = [p for r, k in zip(rollouts, keep, strict=True) if k for p in sample_parts(r)]
    assert trained, "precondition: a group with varied rewards"
    shortest = min(len(p["prompt_ids"]) for p in trained)
    cfg.trainer.max_seq_len = shortest  # every sample is too long; the shortest prompt alone just fits
    state = load_state(tmp_path / "orchestrator", cfg.orchestrator.seed)
    orchestrator = Orchestrator(cfg, ["http://127.0.0.1:9"], ["http://127.0.0.1:9"], None, None, None, state)  # type: ignore[arg-type]
    groups = [(g, 0) for g in range(len(rollouts) // GROUP)]
    with caplog.at_level(logging.WARNING, logger="rlrun.orchestrator"):
        samples, kept, filtered, lengths = orchestrator.to_samples(copy.deepcopy(rollouts), groups)
    assert samples == [] and sum(kept) == 0 and filtered == len(rollouts)
    assert lengths == {"samples_truncated": 0, "samples_too_long": len(trained)}
    dropped = [r for r in caplog.records if "maxSeqLen" in r.getMessage()]
    assert len(dropped) == len(trained)
    assert {p["example_id"] for p in trained} <= {str(r.args[0]) for r in dropped}  # type: ignore[index]


def test_a_sample_with_images_but_no_spans_is_dropped_rather_than_cut_blind(rollouts) -> None:
    """Placeholders are optional in a descriptor; without them no cut can be known to miss every image."""
    parts = [p for p in _parts(rollouts) if _spans(p)]
    assert parts, "precondition: a sample with an image"
    for part in parts:
        mm = copy.deepcopy(part["mm"])
        del mm["descriptor"]["mm_placeholders"]
        length = len(part["prompt_ids"]) + len(part["completion_ids"])
        fitted = fit_to_max_seq_len({**part, "mm": mm}, length - 1)
        assert fitted.part is None and "placeholder" in fitted.reason
