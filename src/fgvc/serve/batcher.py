"""Dynamic batching: images from concurrent requests share one forward pass.

Requests put their images on a queue and await them. One worker task takes the first image, then
keeps taking images until ``max_batch`` are in hand or ``window`` seconds have passed, and runs the
forward pass in a single inference thread, so the event loop keeps accepting requests meanwhile (and
while a pass runs, the next batch fills up). ``max_batch=1`` turns batching off.

``gate`` (tests, benchmarks): a :class:`threading.Event` the worker waits for before it forms a
batch, so that a test can let N requests queue up and then release them at once — the pass count
is then known exactly, without relying on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor

from .predictors import BatchResult

__all__ = ["BatchStats", "DynamicBatcher", "ImageResult"]

_GATE_POLL_S = 0.05  # how often a held worker looks whether it is shutting down


@dataclass(frozen=True)
class ImageResult:
    probabilities: Tensor  # (C,)
    object_box: Tensor | None  # (4,) inclusive input pixels


@dataclass
class BatchStats:
    forward_passes: int = 0
    images: int = 0  # images that went through a forward pass
    queued: int = 0  # images submitted and not yet in a forward pass
    largest_batch: int = 0
    failed_passes: int = 0

    def __post_init__(self) -> None:
        self.batch_sizes: Counter[int] = Counter()

    def to_dict(self) -> dict:
        return {"forward_passes": self.forward_passes, "images": self.images, "queued": self.queued,
                "largest_batch": self.largest_batch, "failed_passes": self.failed_passes,
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())}}


class DynamicBatcher:
    """Collects images into batches for ``forward`` (uint8 (N, 3, S, S) -> :class:`BatchResult`)."""

    def __init__(self, forward: Callable[[Tensor], BatchResult], max_batch: int = 16, window_s: float = 0.005,
                 gate: threading.Event | None = None) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.forward = forward
        self.max_batch = max_batch
        self.window_s = max(window_s, 0.0)
        self.gate = gate
        self.stats = BatchStats()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fgvc-inference")
        self._queue: asyncio.Queue[tuple[Tensor, asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None
        self._closing = False

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run(), name="fgvc-batcher")

    async def stop(self) -> None:
        self._closing = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self.executor.shutdown(wait=True, cancel_futures=True)

    async def submit(self, images: list[Tensor]) -> list[ImageResult]:
        """Queue the images of one request and wait for their results (in order)."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started (the app's lifespan did not run)")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        self.stats.queued += len(images)
        for image, future in zip(images, futures, strict=True):
            self._queue.put_nowait((image, future))
        return list(await asyncio.gather(*futures))

    async def run_in_worker(self, func: Callable, *args):
        """Run ``func`` in the inference thread (one model call at a time, never on the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    async def _wait_for_gate(self) -> None:
        gate = self.gate
        if gate is None:
            return
        while not self._closing and not await asyncio.to_thread(gate.wait, _GATE_POLL_S):
            pass

    async def _collect(self) -> list[tuple[Tensor, asyncio.Future]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        await self._wait_for_gate()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            live = [(image, future) for image, future in batch if not future.done()]  # a client may have left
            self.stats.queued -= len(batch)
            if not live:
                continue
            images = torch.stack([image for image, _ in live])
            try:
                result: BatchResult = await self.run_in_worker(self.forward, images)
            except Exception as e:  # noqa: BLE001  handed to the waiting requests, which answer 500
                self.stats.failed_passes += 1
                for _, future in live:
                    if not future.done():
                        future.set_exception(e)
                continue
            self._count(len(live))
            for i, (_, future) in enumerate(live):
                if not future.done():
                    box = None if result.object_boxes is None else result.object_boxes[i]
                    future.set_result(ImageResult(result.probabilities[i], box))

    def _count(self, n: int) -> None:
        s = self.stats
        s.forward_passes += 1
        s.images += n
        s.largest_batch = max(s.largest_batch, n)
        s.batch_sizes[n] += 1
