"""Uploads never hold a step up and never lose samples silently: a silent server, a full queue, retention,
and the kept parquets uploaded to a real MinIO once a logger (a restarted orchestrator) can reach it.

`SilentServer` is the one fake here: a listening socket that accepts connections and never answers, the
fault of a hung object store or proxy that a real MinIO cannot produce.
"""

from __future__ import annotations

import asyncio
import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prometheus_client import REGISTRY
from upload_s3_helpers import BUCKET, MinioServer, s3_admin_client

from rlrun.runtime.config import SampleUploadConfig
from rlrun.runtime.upload.logger import SampleLogger

DEADLINE = 4.0
ROLLOUTS = [{"example_id": "e", "env": "t", "prompt": [], "completion": "x", "reward": 0.0}]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """FAKE: accepts TCP connections (the kernel's backlog) and never reads or answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def _count(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _kept(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "samples").iterdir())


def test_a_silent_server_never_blocks_steps_and_the_kept_samples_reach_minio_later(
    minio: MinioServer, silent_server: str, tmp_path: Path, s3_env: None
) -> None:
    out = tmp_path / "run"
    skipped, discarded, failed = (
        _count(f"rlrun_sample_upload_{n}_total") for n in ("skipped", "discarded", "failures")
    )
    silent = SampleUploadConfig(enabled=True, bucket=BUCKET, endpoint_url=silent_server,
                                upload_deadline_seconds=DEADLINE, queue_size=1, max_pending_files=3)  # fmt: skip

    async def against_the_silent_server() -> list:
        logger = SampleLogger(silent, out, tmp_path, "q", backoff_s=(0.0, 0.0))
        started = time.monotonic()
        for step in range(5):
            assert (await logger.log_step(step, ROLLOUTS)).logged
        # All five in less than one upload's deadline: no step waited for the silent server (before the
        # queue, each waited 3 x 300 s). Also what keeps the queue's order below deterministic.
        assert time.monotonic() - started < DEADLINE, "steps waited for uploads"
        results = await logger.flush(timeout=6 * DEADLINE)
        await logger.aclose()
        return results

    results = asyncio.run(against_the_silent_server())
    # Step 0 was taken by the uploader, step 1 filled the queue of 1, steps 2-4 found it full.
    assert [(r.step, r.logged) for r in results] == [(0, False), (1, False)]
    assert all(f"uploadDeadlineSeconds={DEADLINE:g}" in (r.error or "") for r in results)
    assert _count("rlrun_sample_upload_failures_total") == failed + 2
    assert _count("rlrun_sample_upload_skipped_total") == skipped + 3
    # Five waited for a retry, retention keeps three: the two oldest were deleted, and counted.
    assert _count("rlrun_sample_upload_discarded_total") == discarded + 2
    assert _kept(out) == ["step_2.parquet", "step_3.parquet", "step_4.parquet"]

    reachable = silent.model_copy(
        update={"endpoint_url": minio.endpoint, "queue_size": 8, "upload_deadline_seconds": 30.0}
    )

    async def against_minio() -> list:
        logger = SampleLogger(reachable, out, tmp_path, "q", backoff_s=(0.0, 0.0))
        await logger.log_step(5, ROLLOUTS)
        results = await logger.flush(timeout=120)
        await logger.aclose()
        return results

    results = asyncio.run(against_minio())
    assert sorted(r.step for r in results if r.logged) == [2, 3, 4, 5], results
    assert _kept(out) == []
    s3 = s3_admin_client(minio.endpoint)
    for step in (2, 3, 4, 5):
        body = s3.get_object(Bucket=BUCKET, Key=f"samples/run_q/step_{step}.parquet")["Body"].read()
        assert pq.read_table(io.BytesIO(body)).column("step").to_pylist() == [step]
