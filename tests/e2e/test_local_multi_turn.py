"""`rlrun local` on the built-in calculator tool environment: several assistant turns per rollout, and the
samples the trainer received train exactly the tokens the policy sampled, with logprobs that line up.

On-policy (maxAsyncSteps 0), the trainer's logprob of every token it trains equals the one inference
sampled it with up to float noise (its `logprob_delta_mean`); a mask shifted by one position, or
covering a tool reply, gives deltas of order 1 (the random model's logprobs are about -1 to -5).

The random tiny model answers in NATO words, never digits, so the calculator's own reward is 0 for every
rollout and no group would train; the run names (by import path, from a module the test writes) the
calculator with a reward that is a hash of the conversation. Tools, turns and samples are the built-in's.
"""

import json
from pathlib import Path

import msgspec
import numpy as np
import pytest
import yaml

from rlrun.runtime.models.chat import RENDERER_ONLY_TOKENS
from rlrun.runtime.models.tiny import build_tokenizer
from rlrun.runtime.wire import TrainingBatch, floats, ints, masks

from .conftest import batch_collector, rlrun_local_watching

pytestmark = pytest.mark.e2e
RUN_FILE = Path(__file__).with_name("calculator-short.yaml")
MODULE = """
import contextlib
import json
import signal
import threading
import time
import zlib

from rlrun.runtime.envs.builtin.calculator import Calculator


class VariedCalculator(Calculator):
    def score(self, example, messages):
        return float(zlib.crc32(json.dumps(messages).encode()) % 2)
"""


def test_calculator_tool_episodes_train_only_sampled_tokens(tmp_path, no_leftover_processes):
    (tmp_path / "calc_ci.py").write_text(MODULE)
    run_dir = tmp_path / "run_calculator-ci"
    collect, received = batch_collector(run_dir)
    code, log = rlrun_local_watching(
        RUN_FILE, tmp_path, collect, env={"PYTHONPATH": str(tmp_path)}, timeout=600
    )
    assert code == 0, log[-4000:]
    steps = yaml.safe_load(RUN_FILE.read_text())["spec"]["orchestrator"]["maxSteps"]

    trained = [
        json.loads(line) for line in (run_dir / "trainer" / "metrics_rank0.jsonl").read_text().splitlines()
    ]
    assert len(trained) == steps and sum(r["loss_tokens"] for r in trained) > 0, trained
    for record in trained:
        assert record["logprob_delta_mean"] < 1e-3, trained

    tokenizer = build_tokenizer()
    headers = set(tokenizer.convert_tokens_to_ids(list(RENDERER_ONLY_TOKENS)))
    tool_header = tokenizer.encode("<|im_start|>tool\n", add_special_tokens=False)
    assert sorted(received) == list(range(steps))
    multi_turn = 0
    for data in received.values():
        for sample in msgspec.msgpack.decode(data, type=TrainingBatch).samples:
            ids, lps, mask = (
                ints(sample.completion_ids),
                floats(sample.completion_logprobs),
                masks(sample.completion_mask),
            )
            assert sample.env == "calculator" and len(ids) == len(lps) == len(mask)
            assert not set(ids[mask == 1].tolist()) & headers  # no header or tool turn is trained
            assert (lps[mask == 1] <= 0).all() and not lps[mask == 0].any()
            context = ids[mask == 0].tolist()
            if context:  # a merged episode: the tool's reply sits in the context, whole
                multi_turn += 1
                window = len(tool_header)
                assert any(context[i : i + window] == tool_header for i in range(len(context))), context
    assert multi_turn, "no sample held more than one turn"
    rollouts = [json.loads(x) for x in (run_dir / "orchestrator" / "metrics.jsonl").read_text().splitlines()]
    assert len(rollouts) == steps
    assert np.isfinite([r["reward_mean"] for r in rollouts]).all()
