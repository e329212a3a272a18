"""The orchestrator's sample logger: one parquet per logged step, uploaded or kept on the volume.

Sample logging is a side channel: a failed upload is logged, counted in
`rlrun_sample_upload_failures_total` and reported in the result, and training goes on. The parquet is
written in a worker thread (it inlines images and compresses; the event loop keeps serving), to a temp
file in `<out_dir>/samples/` (the run volume, not a tmpfs `/tmp`), and that file is removed on every exit
path of an upload: success, failure and cancellation. Uploads are serialized so at most one file streams
at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import Counter

from rlrun.runtime.config import SampleUploadConfig, check_safe_id
from rlrun.runtime.upload.parquet import TEMP_PREFIX, write_samples_parquet
from rlrun.runtime.upload.presign import (
    PRESIGN_TOKEN_ENV,
    object_key,
    presign_s3_put,
    request_presigned_url,
    s3_client_from_env,
)
from rlrun.runtime.upload.put import BACKOFF_S, UploadError, install_log_redaction, redact_text, stream_put

log = logging.getLogger(__name__)

UPLOAD_FAILURES = Counter(
    "rlrun_sample_upload_failures_total",
    "Logged sample steps whose parquet upload failed (training went on).",
)


@dataclass(frozen=True, slots=True)
class LogResult:
    """What happened to one step's samples. `error` is set (redacted) when logging failed."""

    step: int
    logged: bool = False  # False: not a logging step, no sample rows, or failed
    path: Path | None = None  # the local parquet when upload is disabled
    key: str | None = None  # the object key when uploaded
    size_bytes: int = 0
    attempts: int = 0
    error: str | None = None


class SampleLogger:
    """Logs each step's rollouts as a parquet: uploaded when `cfg.enabled`, else kept under
    `<out_dir>/samples/step_<n>.parquet`. `log_step` never raises for logging failures."""

    def __init__(
        self,
        cfg: SampleUploadConfig,
        out_dir: Path,
        asset_root: Path,
        run_id: str,
        *,
        client: httpx.AsyncClient | None = None,
        backoff_s: Sequence[float] = BACKOFF_S,
    ) -> None:
        self.cfg = cfg
        self.samples_dir = Path(out_dir) / "samples"
        self.asset_root = Path(asset_root)
        self.run_id = check_safe_id(run_id, "RUN_ID")
        self.failures = 0
        self._client = client
        self._own_client = client is None
        self._backoff_s = tuple(backoff_s)
        self._upload_lock = asyncio.Lock()
        self._s3: Any = None
        install_log_redaction()
        self._sweep_leftovers()

    def _sweep_leftovers(self) -> None:
        """Remove temp parquets a killed earlier process left behind (same run directory)."""
        if self.samples_dir.is_dir():
            for stale in self.samples_dir.glob(f"{TEMP_PREFIX}*.parquet"):
                stale.unlink(missing_ok=True)

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def log_step(self, step: int, rollouts: Iterable[Mapping[str, Any]]) -> LogResult:
        """Log this step's samples if it is a logging step. Failures come back in the result.

        `rollouts` is read in a worker thread: do not mutate it until this returns (it is never mutated here).
        """
        if step % self.cfg.every_n_steps:
            return LogResult(step=step)
        try:
            path = await self._write(step, rollouts)
            if path is None:
                log.warning("No samples to log at step %d", step)
                return LogResult(step=step)
            try:
                if not self.cfg.enabled:
                    final = self.samples_dir / f"step_{step}.parquet"
                    os.replace(path, final)  # atomic: readers never see a partial step file
                    return LogResult(step=step, logged=True, path=final, size_bytes=final.stat().st_size)
                return await self._upload(step, path)
            finally:
                path.unlink(missing_ok=True)  # success, failure or cancellation: no temp file survives
        except Exception as exc:  # a side channel: never stop training, never leak a URL
            message = redact_text(f"{type(exc).__name__}: {exc}")
            if self.cfg.enabled:
                self.failures += 1
                UPLOAD_FAILURES.inc()
            log.warning("sample logging failed at step %d: %s", step, message)
            return LogResult(step=step, error=message)

    async def _write(self, step: int, rollouts: Iterable[Mapping[str, Any]]) -> Path | None:
        """Write the parquet in a thread; if we are cancelled meanwhile, the thread's file is removed."""
        job = asyncio.ensure_future(
            asyncio.to_thread(
                write_samples_parquet,
                self.samples_dir,
                step,
                rollouts,
                self.cfg.compression,
                asset_root=self.asset_root,
                max_inline_image_bytes=self.cfg.max_inline_image_bytes,
            )
        )
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            job.add_done_callback(_unlink_result)
            raise

    async def _upload(self, step: int, path: Path) -> LogResult:
        async with self._upload_lock:  # one file streams at a time: bounded memory and bandwidth
            key = object_key(self.cfg.prefix, self.run_id, step)
            size = path.stat().st_size
            client = self._http()
            url = await self._presigned_url(client, key, size)
            put = await stream_put(url, path, client=client, backoff_s=self._backoff_s)
            return LogResult(step=step, logged=True, key=key, size_bytes=size, attempts=put.attempts)

    async def _presigned_url(self, client: httpx.AsyncClient, key: str, size: int) -> str:
        if self.cfg.presign_endpoint:
            token = os.environ.get(PRESIGN_TOKEN_ENV)
            return await request_presigned_url(client, self.cfg.presign_endpoint, key, size, token)
        if self._s3 is None:  # building a botocore client costs ~0.1 s: once per logger
            self._s3 = s3_client_from_env(self.cfg.endpoint_url, self.cfg.region)
        if not self.cfg.bucket:
            raise UploadError("sampleUpload is enabled without presignEndpoint or bucket")
        return presign_s3_put(self._s3, self.cfg.bucket, key)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client


def _unlink_result(job: asyncio.Future[Path | None]) -> None:
    if not job.cancelled() and job.exception() is None and (path := job.result()) is not None:
        path.unlink(missing_ok=True)
