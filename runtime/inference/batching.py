"""Micro-batching of concurrent requests onto one engine thread.

Env-workers send many small requests at once (one per example, n choices each). Running them one by one
wastes the padded-batch forward the engine is built for, so requests wait up to `window_s` for company
and then run as one `generate`. Everything that touches the model (generate, weight reload) runs on one
worker thread, which serializes reloads with generation and keeps the event loop free to accept work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")


@dataclass
class BatchStats:
    batches: int = 0
    requests: int = 0
    rows: int = 0
    max_batch_requests: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "mean_batch_requests": self.requests / self.batches if self.batches else 0.0}


class MicroBatcher(Generic[Req, Res]):
    """Collects requests for `window_s` (or until `max_rows`) and runs `run_batch` on the model thread.

    `run_batch(requests) -> results` (same order); `rows(request)` is its cost (completions it asks for).
    A failing batch fails every request in it with the same exception.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Req]], list[Res]],
        rows: Callable[[Req], int],
        window_s: float = 0.005,
        max_rows: int = 256,
    ) -> None:
        self.run_batch, self.rows = run_batch, rows
        self.window_s, self.max_rows = window_s, max_rows
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[Req, asyncio.Future[Res]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():
            _, fut = self._queue.get_nowait()
            fut.cancel()
        self.executor.shutdown(wait=True, cancel_futures=True)

    def waiting(self) -> int:
        """Requests queued for the next batches (the queue-depth gauge)."""
        return self._queue.qsize()

    async def submit(self, request: Req) -> Res:
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        await self._queue.put((request, future))
        return await future

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn` on the model thread, between batches (e.g. a weight reload)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _collect(self) -> list[tuple[Req, asyncio.Future[Res]]]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        rows = self.rows(batch[0][0])
        deadline = loop.time() + self.window_s
        while rows < self.max_rows:
            remaining = deadline - loop.time()
            if remaining <= 0 and self._queue.empty():
                break
            try:
                item = (
                    self._queue.get_nowait()
                    if remaining <= 0
                    else await asyncio.wait_for(self._queue.get(), remaining)
                )
            except TimeoutError:
                break
            batch.append(item)
            rows += self.rows(item[0])
        return batch

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            live = [(req, fut) for req, fut in batch if not fut.cancelled()]  # client went away
            if not live:
                continue
            self.stats.batches += 1
            self.stats.requests += len(live)
            self.stats.rows += sum(self.rows(req) for req, _ in live)
            self.stats.max_batch_requests = max(self.stats.max_batch_requests, len(live))
            try:
                results = await self.call(self.run_batch, [req for req, _ in live])
            except Exception as err:  # delivered to every waiting request
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            for (_, fut), result in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
