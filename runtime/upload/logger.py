"""The orchestrator's sample logger: one parquet per logged step, uploaded off the step's critical path.

Sample logging is a side channel and never holds training up. `log_step` writes the step's parquet (in a
worker thread: it inlines images and compresses) to `<out_dir>/samples/step_<n>.parquet` on the run volume
(temp file + rename, never a partial file) and, when upload is on, queues it and returns at once. One
background task uploads queued files one at a time (bounded memory and bandwidth), each within
`sampleUpload.uploadDeadlineSeconds` all retries included, and deletes the local file once stored.

Nothing is lost silently: a failed or timed-out upload keeps its parquet on the volume, counted in
`rlrun_sample_upload_failures_total`, and it is queued again once a deadline has passed (also by a
restarted orchestrator, which adopts the files it finds). A step that finds the queue full
(`sampleUpload.queueSize`) is not waited for: it stays on the volume for a later retry, counted in
`rlrun_sample_upload_skipped_total`. At most `sampleUpload.maxPendingFiles` such files are kept; past it
the oldest is deleted with an error log, counted in `rlrun_sample_upload_discarded_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rlrun.runtime.config import SampleUploadConfig, check_safe_id
from rlrun.runtime.metrics import UPLOAD_BYTES, UPLOAD_DISCARDED, UPLOAD_FAILURES, UPLOAD_SKIPPED
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

_STEP_FILE = re.compile(r"^step_(0|[1-9][0-9]*)\.parquet$")


@dataclass(frozen=True, slots=True)
class LogResult:
    """What happened to one step's samples. `error` is set (redacted) when logging failed."""

    step: int
    logged: bool = False  # False: not a logging step, no sample rows, or failed
    path: Path | None = None  # the local parquet (until it is uploaded)
    key: str | None = None  # the object key once uploaded
    size_bytes: int = 0
    attempts: int = 0
    error: str | None = None


class SampleLogger:
    """Logs each step's rollouts as `<out_dir>/samples/step_<n>.parquet`, uploaded in the background when
    `cfg.enabled`. `log_step` never raises for logging failures and never waits for an upload."""

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
        self.failures = self.skipped = self.discarded = 0
        self._client = client
        self._own_client = client is None
        self._backoff_s = tuple(backoff_s)
        self._s3: Any = None
        self._queue: asyncio.Queue[int] = asyncio.Queue(cfg.queue_size)
        self._queued: set[int] = set()
        self._retry_at: dict[int, float] = {}  # on the volume, not queued: step -> when to queue it again
        self._results: list[LogResult] = []  # finished uploads, until `flush` hands them out
        self._worker: asyncio.Task[None] | None = None
        install_log_redaction()
        self._sweep_leftovers()
        if cfg.enabled:  # parquets an earlier process could not upload: due now
            self._retry_at = dict.fromkeys(self._volume_steps(), 0.0)

    def _sweep_leftovers(self) -> None:
        """Remove temp parquets a killed earlier process left behind (same run directory)."""
        if self.samples_dir.is_dir():
            for stale in self.samples_dir.glob(f"{TEMP_PREFIX}*.parquet"):
                stale.unlink(missing_ok=True)

    def _volume_steps(self) -> list[int]:
        if not self.samples_dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.samples_dir.iterdir() if (m := _STEP_FILE.match(p.name)))

    def _step_path(self, step: int) -> Path:
        return self.samples_dir / f"step_{step}.parquet"

    async def flush(self, timeout: float | None = None) -> list[LogResult]:
        """Queue the retries that are due, wait (at most `timeout` s) until the queue is empty; return the
        uploads finished since the last call, in order."""
        self._queue_due_retries()
        if self._queued:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._queue.join()
        results, self._results = self._results, []
        return results

    async def aclose(self) -> None:
        """Give queued uploads one deadline to finish, then stop; what is left stays on the volume."""
        if self.cfg.enabled:
            await self.flush(timeout=self.cfg.upload_deadline_seconds)
            if left := self._queued | set(self._retry_at):
                log.warning("sample parquets of steps %s not uploaded yet: kept in %s", sorted(left),
                            self.samples_dir)  # fmt: skip
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def log_step(self, step: int, rollouts: Iterable[Mapping[str, Any]]) -> LogResult:
        """Write this step's parquet if it is a logging step and queue its upload; failures come back in
        the result. `rollouts` is read in a worker thread: do not mutate it until this returns."""
        if step % self.cfg.every_n_steps:
            return LogResult(step=step)
        try:
            path = await self._write(step, rollouts)
            if path is None:
                log.warning("No samples to log at step %d", step)
                return LogResult(step=step)
            try:
                final = self._step_path(step)
                os.replace(path, final)  # atomic: readers never see a partial step file
            finally:
                path.unlink(missing_ok=True)  # success, failure or cancellation: no temp file survives
        except Exception as exc:  # a side channel: never stop training, never leak a URL
            message = redact_text(f"{type(exc).__name__}: {exc}")
            log.warning("sample logging failed at step %d: %s", step, message)
            return LogResult(step=step, error=message)
        result = LogResult(step=step, logged=True, path=final, size_bytes=final.stat().st_size)
        if self.cfg.enabled:
            self._offer(step)
            self._queue_due_retries()
            self._keep_retention()
        return result

    def _offer(self, step: int) -> None:
        """Queue `step`'s upload without waiting; a full queue keeps it on the volume for a retry."""
        if step in self._queued:
            return
        try:
            self._queue.put_nowait(step)
        except asyncio.QueueFull:
            self.skipped += 1
            UPLOAD_SKIPPED.inc()
            self._retry_at[step] = time.monotonic()
            log.warning("sample upload queue full (sampleUpload.queueSize=%d): step %d stays at %s for a "
                        "later retry", self.cfg.queue_size, step, self._step_path(step))  # fmt: skip
            return
        self._queued.add(step)
        self._retry_at.pop(step, None)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._uploads(), name="sample-uploads")

    def _queue_due_retries(self) -> None:
        now = time.monotonic()
        for step in sorted(s for s, at in self._retry_at.items() if at <= now):
            if self._queue.full():
                return
            self._offer(step)

    def _keep_retention(self) -> None:
        """At most `maxPendingFiles` parquets wait for a retry: past it the oldest go, loudly."""
        waiting = sorted(self._retry_at)
        for step in waiting[: max(0, len(waiting) - self.cfg.max_pending_files)]:
            del self._retry_at[step]
            self._step_path(step).unlink(missing_ok=True)
            self.discarded += 1
            UPLOAD_DISCARDED.inc()
            log.error("sample parquet of step %d deleted without upload: more than "
                      "sampleUpload.maxPendingFiles=%d wait for a retry", step, self.cfg.max_pending_files)  # fmt: skip

    async def _uploads(self) -> None:
        """The background task: one queued file at a time."""
        while True:
            step = await self._queue.get()
            try:
                self._results.append(await self._upload_step(step))
            finally:
                self._queued.discard(step)
                self._queue.task_done()

    async def _upload_step(self, step: int) -> LogResult:
        """Upload within the deadline and delete the local file; on failure keep it and schedule a retry."""
        path = self._step_path(step)
        try:
            async with asyncio.timeout(self.cfg.upload_deadline_seconds):
                result = await self._upload(step, path)
        except Exception as exc:  # never leak a URL; TimeoutError is the deadline
            message = redact_text(f"{type(exc).__name__}: {exc}")
            if isinstance(exc, TimeoutError):
                message = f"not stored within sampleUpload.uploadDeadlineSeconds={self.cfg.upload_deadline_seconds:g}"
            self.failures += 1
            UPLOAD_FAILURES.inc()
            log.warning(
                "sample upload failed at step %d: %s; %s is kept and retried later", step, message, path
            )
            self._retry_at[step] = time.monotonic() + self.cfg.upload_deadline_seconds
            self._keep_retention()
            return LogResult(step=step, path=path, error=message)
        path.unlink(missing_ok=True)
        UPLOAD_BYTES.inc(result.size_bytes)
        return result

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
        if (
            self._s3 is None
        ):  # building a botocore client costs ~0.1 s (more on busy cores): once, off the loop
            self._s3 = await asyncio.to_thread(s3_client_from_env, self.cfg.endpoint_url, self.cfg.region)
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
