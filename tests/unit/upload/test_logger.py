"""SampleLogger: local mode, platform-mode upload to a real loopback server, failures that never stop
training and keep the parquet, a stalled upload cut by its deadline, and the temp file gone on every path."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from aiohttp import web
from prometheus_client import REGISTRY
from upload_helpers import PNG, Sink, rollout, run, serve

from rlrun.runtime.config import SampleUploadConfig
from rlrun.runtime.upload.logger import SampleLogger

TOKEN = "platform-token-123"
SIGNATURE = "sig0123456789abcdef"


def _failures() -> float:
    return REGISTRY.get_sample_value("rlrun_sample_upload_failures_total") or 0.0


def _temp_files(out_dir: Path) -> list[Path]:
    return list((out_dir / "samples").glob(".samples_step*")) if (out_dir / "samples").exists() else []


def test_disabled_keeps_parquet_on_volume_every_n_steps(tmp_path: Path, asset_root: Path) -> None:
    img = asset_root / "run_t" / "assets" / "images" / "a.png"
    img.write_bytes(PNG)
    logger = SampleLogger(SampleUploadConfig(every_n_steps=2), tmp_path / "out", asset_root, "t")

    async def go() -> None:
        skipped = await logger.log_step(3, [rollout("e", [img])])
        assert not skipped.logged and skipped.error is None
        result = await logger.log_step(4, [rollout("e", [img])])
        assert result.logged and result.path == tmp_path / "out" / "samples" / "step_4.parquet"
        assert pq.read_table(result.path).column("step").to_pylist() == [4]
        empty = await logger.log_step(6, [])
        assert not empty.logged and empty.error is None
        await logger.aclose()

    run(go())
    assert sorted(p.name for p in (tmp_path / "out" / "samples").iterdir()) == ["step_4.parquet"]


class Platform:
    """A real HTTP presign endpoint and object sink: POST /presign -> {"url": ...}, then PUT stores."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.base = ""
        self.requests: list[dict] = []

    async def presign(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401)
        body = await request.json()
        self.requests.append(body)
        return web.json_response({"url": f"{self.base}/put/{body['key']}?X-Amz-Signature={SIGNATURE}"})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return await (self.presign(request) if request.method == "POST" else self.sink.handle(request))


def _platform_logger(base: str, out: Path, asset_root: Path, **settings: float) -> SampleLogger:
    cfg = SampleUploadConfig(enabled=True, presign_endpoint=f"{base}/presign", prefix="samples", **settings)
    return SampleLogger(cfg, out, asset_root, "t", backoff_s=(0.0, 0.0))


def test_platform_mode_uploads_then_removes_temp(
    tmp_path: Path, asset_root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RLRUN_PRESIGN_TOKEN", TOKEN)
    platform = Platform(Sink(fail_first=1))
    out = tmp_path / "out"

    async def go() -> None:
        async with serve(platform.handle, method="*") as base:
            platform.base = base
            logger = _platform_logger(base, out, asset_root)
            await logger.log_step(5, [rollout("e", [])])
            [result] = await logger.flush()
            await logger.aclose()
        assert result.logged and result.error is None and result.attempts == 2
        assert result.key == "samples/run_t/step_5.parquet"

    with caplog.at_level(logging.DEBUG):
        run(go())
    assert platform.requests[0]["key"] == "samples/run_t/step_5.parquet"
    assert [s.path for s in platform.sink.seen] == ["/put/samples/run_t/step_5.parquet"] * 2
    assert _temp_files(out) == [] and list((out / "samples").iterdir()) == []  # stored: local copy gone
    assert TOKEN not in caplog.text and SIGNATURE not in caplog.text


def test_failed_upload_is_counted_kept_and_training_goes_on(tmp_path: Path, asset_root: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    out = tmp_path / "out"
    before = _failures()

    async def go() -> None:
        logger = _platform_logger(dead, out, asset_root)
        await logger.log_step(1, [rollout("e", [])])
        [first] = await logger.flush()
        assert not first.logged and "presign request to" in (first.error or "")
        await logger.log_step(2, [rollout("e", [])])
        [second] = await logger.flush()
        assert not second.logged
        assert logger.failures == 2
        await logger.aclose()

    run(go())
    assert _failures() == before + 2
    assert _temp_files(out) == []
    # Both steps' samples are kept on the volume for a later retry.
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_1.parquet", "step_2.parquet"]


def test_a_stalled_upload_never_blocks_the_step_and_keeps_the_parquet(
    tmp_path: Path, asset_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLRUN_PRESIGN_TOKEN", TOKEN)
    platform = Platform(Sink(stall=True))
    out = tmp_path / "out"

    async def go() -> None:
        async with serve(platform.handle, method="*") as base:
            platform.base = base
            logger = _platform_logger(base, out, asset_root, upload_deadline_seconds=1.0)
            started = asyncio.get_running_loop().time()
            await logger.log_step(1, [rollout("e", [])] * 50)
            assert asyncio.get_running_loop().time() - started < 0.9  # the step did not wait for the PUT
            await asyncio.wait_for(platform.sink.got_request.wait(), 10)
            [result] = await logger.flush()
            assert not result.logged and "uploadDeadlineSeconds=1" in (result.error or "")
            platform.sink.release.set()
            await logger.aclose()

    run(go())
    assert _temp_files(out) == []
    assert [p.name for p in (out / "samples").iterdir()] == ["step_1.parquet"]


def test_leftover_temp_files_of_a_killed_process_are_swept(tmp_path: Path, asset_root: Path) -> None:
    samples = tmp_path / "out" / "samples"
    samples.mkdir(parents=True)
    (samples / ".samples_step3_abc.parquet").write_bytes(b"partial")
    (samples / "step_2.parquet").write_bytes(b"kept")
    SampleLogger(SampleUploadConfig(), tmp_path / "out", asset_root, "t")
    assert [p.name for p in samples.iterdir()] == ["step_2.parquet"]


def test_run_id_that_is_not_a_safe_path_component_is_refused(tmp_path: Path, asset_root: Path) -> None:
    with pytest.raises(ValueError, match=r"RUN_ID '\.\./x' is not a safe id"):
        SampleLogger(SampleUploadConfig(), tmp_path, asset_root, "../x")


def test_cancellation_while_writing_removes_the_threads_file(tmp_path: Path, asset_root: Path) -> None:
    out = tmp_path / "out"
    first_written, release = threading.Event(), threading.Event()

    def slow_rollouts():  # consumed by the writer thread; blocks after the first row
        yield rollout("a", [])
        first_written.set()
        release.wait(10)
        yield rollout("b", [])

    async def go() -> None:
        logger = SampleLogger(SampleUploadConfig(), out, asset_root, "t")
        task = asyncio.create_task(logger.log_step(1, slow_rollouts()))
        await asyncio.to_thread(first_written.wait, 10)
        assert len(_temp_files(out)) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        for _ in range(100):  # the thread finishes its file, then the done-callback removes it
            if not (out / "samples").exists() or not list((out / "samples").iterdir()):
                break
            await asyncio.sleep(0.05)

    run(go())
    assert list((out / "samples").iterdir()) == []
