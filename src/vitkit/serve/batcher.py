"""Dynamic batching: concurrent requests gathered into one forward pass, each answer to its own request.

    batcher = Batcher(served, max_batch=32, max_wait_ms=5, max_queue=128).start()
    result = await batcher.submit(job)        # from the event loop; QueueFull when the queue is full

One worker thread owns the model. It blocks until a job arrives, then keeps taking jobs until it
holds ``max_batch`` of them or ``max_wait_ms`` have passed since the first, and runs them together
(`ServedModel.run`: one forward pass per kind of job). Jobs that arrived while the previous batch
ran are already queued, so under load a batch fills without waiting; a lone request waits at most
``max_wait_ms``. Each answer goes to its own request's future on the event loop
(``call_soon_threadsafe``). A request that gave up (its timeout) is marked cancelled and skipped.
The queue is bounded (``max_queue``): `submit` raises `queue.Full` instead of growing memory.

A job may come undecoded (``Job.prepare``: the request's bytes -> its preprocessed image). The worker
decodes the batch's images first, on ``decode_threads`` threads of one torch thread each, then runs the
model: decoding and the forward pass take turns instead of sharing the cores. Run at the same time, the
decoding threads preempt the model's OpenMP team, whose other thread then waits at every barrier of the
forward pass (spinning, then idle): the forward pass slows by more than the decoding costs. A job whose
image fails to decode gets that exception (a `RequestError`: 400 / 413) and leaves the batch.
PyTorch releases the GIL inside its kernels, so the event loop keeps reading the next requests while
a batch runs.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .model import Job, ServedModel, set_thread_torch_threads

_STOP = object()


@dataclass
class _Pending:
    job: Job
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    t: float  # time.monotonic() at submit

    @property
    def live(self) -> bool:
        return not (self.job.cancelled or self.future.done())


def _deliver(future: asyncio.Future, result) -> None:
    if future.done():  # the request timed out and stopped waiting
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class Batcher:
    def __init__(self, served: ServedModel, max_batch: int = 32, max_wait_ms: float = 5.0, max_queue: int = 128,
                 decode_threads: int = 2):
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0 or decode_threads < 1:
            raise ValueError("max_batch, max_queue and decode_threads must be >= 1 and max_wait_ms >= 0")
        self.decode_threads = decode_threads
        self.served = served
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1e3
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.batch_sizes: Counter = Counter()
        self.jobs_done = 0
        self.skipped = 0
        self.busy_s = 0.0
        self.decode_s = 0.0
        self.decode_failed = 0
        import torch
        self.threads = torch.get_num_threads()  # the creating thread's (the server's --threads): the model's
        self._thread = threading.Thread(target=self._loop, name="vitkit-batcher", daemon=True)

    # ---- lifecycle
    def start(self) -> Batcher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            while True:  # make room for the stop sign: the jobs still queued get no answer
                try:
                    self.queue.put_nowait(_STOP)
                    break
                except queue.Full:
                    try:
                        self.queue.get_nowait()
                    except queue.Empty:
                        pass
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ---- from the event loop
    def submit(self, job: Job) -> asyncio.Future:
        """Queue ``job``; the future gets its result dict or its exception. Raises queue.Full."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.queue.put_nowait(_Pending(job, future, loop, time.monotonic()))
        return future

    def stats(self) -> dict:
        batches = sum(self.batch_sizes.values())
        return {"batches": batches, "jobs": self.jobs_done, "skipped_cancelled": self.skipped,
                "mean_batch": self.jobs_done / batches if batches else 0.0,
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "queued": self.queue.qsize(), "model_busy_s": round(self.busy_s, 3),
                "decode_busy_s": round(self.decode_s, 3), "decode_failed": self.decode_failed,
                "max_batch": self.max_batch, "max_wait_ms": self.max_wait * 1e3}

    # ---- the worker thread
    def _gather(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """``first`` and the jobs that join it: until ``max_batch`` live jobs, or ``max_wait`` after the
        oldest live one arrived. Jobs that gave up meanwhile (timeout) leave the batch and are counted."""
        batch, stop = [first], False
        while True:
            live = [p for p in batch if p.live]
            self.skipped += len(batch) - len(live)
            batch = live
            if not batch or len(batch) >= self.max_batch:
                break
            remaining = batch[0].t + self.max_wait - time.monotonic()
            try:
                item = self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        return batch, stop

    def _decode(self, batch: list[_Pending], pool: ThreadPoolExecutor) -> list[_Pending]:
        """Make the images of the batch's undecoded jobs (``Job.prepare``) on the decoding threads; a job
        whose image fails gets its exception now and leaves the batch."""
        todo = [p for p in batch if p.job.prepare is not None]
        if not todo:
            return batch
        t = time.perf_counter()
        failed = set()
        for p, err in zip(todo, pool.map(_prepare, [p.job for p in todo])):
            if err is not None:
                failed.add(id(p))
                try:
                    p.loop.call_soon_threadsafe(_deliver, p.future, err)
                except RuntimeError:  # the event loop has closed (shutdown)
                    pass
        self.decode_s += time.perf_counter() - t
        self.decode_failed += len(failed)
        return [p for p in batch if id(p) not in failed] if failed else batch

    def _loop(self) -> None:
        import torch
        torch.set_grad_enabled(False)
        name_os_thread("vitkit-batcher")  # before its OpenMP team exists: the team's threads inherit the name
        set_thread_torch_threads(self.threads)
        pool = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="vitkit-decode",
                                  initializer=_decode_thread_init)
        try:
            self._serve(pool)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _serve(self, pool: ThreadPoolExecutor) -> None:
        while True:
            first = self.queue.get()
            if first is _STOP:
                return
            live, stop = self._gather(first)
            if live:
                live = self._decode(live, pool)
            if live:
                t = time.perf_counter()
                try:
                    results = self.served.run([p.job for p in live])
                except BaseException as e:  # run() answers per group; this is a bug in run itself
                    results = [e] * len(live)
                self.busy_s += time.perf_counter() - t
                self.batch_sizes[len(live)] += 1
                self.jobs_done += len(live)
                for p, r in zip(live, results):
                    try:
                        p.loop.call_soon_threadsafe(_deliver, p.future, r)
                    except RuntimeError:  # the event loop has closed (shutdown)
                        pass
            if stop:
                return


def name_os_thread(name: str) -> None:
    """Name the calling thread for the OS (Linux: at most 15 bytes, shown by top -H, ps and /proc): the
    threads it then starts inherit it, so the model's OpenMP workers carry the batcher's name and the load
    test (benchmarks/serve.py) can tell the model's CPU time from the decoding's and the event loop's."""
    import sys
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def _decode_thread_init() -> None:
    name_os_thread("vitkit-decode")
    set_thread_torch_threads(1)


def _prepare(job: Job) -> BaseException | None:
    """On a decoding thread: ``job.x = job.prepare()``; the exception instead of raising it."""
    try:
        job.x = job.prepare()
    except Exception as e:
        return e
    finally:
        job.prepare = None  # the request's bytes are no longer needed
    return None
