"""The inference queue-depth gauge reads the micro-batcher's queue: requests waiting, none once served."""

from __future__ import annotations

import asyncio
import threading

from prometheus_client import REGISTRY

from rlrun.runtime import metrics
from rlrun.runtime.inference.batching import MicroBatcher


def test_queue_depth_counts_requests_waiting_for_the_engine() -> None:
    release = threading.Event()

    def run_batch(requests: list[int]) -> list[int]:
        release.wait(30)  # the engine is busy: later requests wait in the queue
        return requests

    async def go() -> list[float]:
        batcher: MicroBatcher[int, int] = MicroBatcher(run_batch, rows=lambda r: 1, window_s=0.0, max_rows=1)
        metrics.QUEUE_DEPTH.set_function(batcher.waiting)
        batcher.start()
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(4)]
        await asyncio.sleep(0.2)  # one batch (max_rows=1) taken by the engine, three queued
        seen = [REGISTRY.get_sample_value("rlrun_inference_queue_depth")]
        release.set()
        assert await asyncio.gather(*tasks) == [0, 1, 2, 3]
        seen.append(REGISTRY.get_sample_value("rlrun_inference_queue_depth"))
        await batcher.stop()
        return seen

    assert asyncio.run(go()) == [3, 0]
