"""Transport unit-test fixtures: free loopback ports, a small transport config, micro-batch makers."""

from __future__ import annotations

import random
import socket
from collections.abc import Callable

import numpy as np
import pytest

from rlrun.runtime.config import TransportConfig
from rlrun.runtime.wire import MicroBatch


def free_base_port() -> int:
    """A base port whose data (+1) and READY (+2) ports are bindable on all interfaces right now."""
    for _ in range(200):
        base = random.randrange(30000, 60000)
        try:
            for port in (base + 1, base + 2):
                with socket.socket() as sock:
                    sock.bind(("0.0.0.0", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free base port found in 30000-60000")


@pytest.fixture
def make_cfg() -> Callable[..., TransportConfig]:
    """A config on free ports that connects to 127.0.0.2 (never the default localhost), short timeouts."""

    def make(**overrides: object) -> TransportConfig:
        values: dict[str, object] = {
            "base_port": free_base_port(),
            "host": "127.0.0.2",
            "ready_timeout_seconds": 5,
            "receive_timeout_seconds": 5,
            "publish_grace_ms": 0,
        }
        return TransportConfig(**(values | overrides))

    return make


def micro_batch(rank: int, step: int, index: int = 0, seq_len: int = 4, rows: int = 2) -> MicroBatch:
    """A micro-batch whose token ids encode (rank, step, index), so misrouting or reordering shows."""
    shape = (rows, seq_len)
    ids = np.full(shape, rank * 1_000_000 + step * 1_000 + index, dtype=np.int32)
    return MicroBatch(
        rows=rows,
        seq_len=seq_len,
        input_ids=ids.tobytes(),
        attention_mask=np.ones(shape, np.uint8).tobytes(),
        loss_mask=np.ones(shape, np.uint8).tobytes(),
        advantages=np.full(shape, step, np.float32).tobytes(),
        inference_logprobs=np.zeros(shape, np.float32).tobytes(),
        num_samples=rows,
    )


@pytest.fixture
def make_mb() -> Callable[..., MicroBatch]:
    return micro_batch
