"""Feeding calibration batches through ONNX Runtime in bounded chunks, one chunk ahead.

``Chunker`` splits each batch into chunks of frames whose collected outputs fit a byte budget, so
no more than that is ever in flight; ``run_ahead`` runs chunk k+1 in a worker thread while the
caller bins chunk k (ONNX Runtime and numpy's array loops release the GIL, so on two cores the
inference and the histograms overlap instead of taking turns). ``tune_allocator`` keeps glibc
from returning and re-faulting the same buffers on every chunk.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

In = TypeVar("In")
Out = TypeVar("Out")


def tune_allocator() -> bool:
    """Stop glibc from handing freed buffers back to the kernel between batches (Linux only).

    Collection allocates and frees the same few tens of MB per chunk (ONNX Runtime's outputs,
    the histograms' temporaries). With glibc's default, dynamic thresholds those buffers are
    mmap'ed or trimmed and re-faulted on every chunk (~1 page fault per 4 KB: on the demo model,
    about 2x the whole collection time). Fixed thresholds (64 MiB mmap, 256 MiB trim) keep them
    in the heap for reuse; the cost is that up to 256 MiB of freed heap stays with the process.
    The same as setting ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` before start.
    Returns whether glibc accepted the settings (False elsewhere: nothing changes).
    """
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
        )
    except (OSError, AttributeError):  # not glibc (musl, ...): leave the allocator alone
        return False


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>

ACTIVATION_BUDGET = 32 << 20
"""Bytes of collected activations in flight at once: each batch is run in chunks of frames
small enough for this (histograms do not depend on how the frames are split). With ``run_ahead``
two chunks are in flight: the one being binned and the one being run."""


class Chunker:
    """Splits feeds into chunks of frames whose collected outputs fit ``budget`` bytes.

    The first chunk is the smallest the graph runs (``unit`` frames: one, or its fixed batch);
    the size of the rest follows from the bytes that chunk produced (``observe``).
    """

    def __init__(self, unit: int = 1, budget: int = ACTIVATION_BUDGET) -> None:
        self.unit = max(1, unit)
        self.budget = budget
        self.size: int | None = None

    def split(self, feed: Mapping[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        n = len(next(iter(feed.values())))
        start = 0
        while start < n:
            size = self.size or self.unit  # read per chunk: ``observe`` may have set it
            yield {k: v[start : start + size] for k, v in feed.items()}
            start += size

    def observe(self, nbytes: int, frames: int) -> None:
        if self.size is None and frames:
            per_frame = max(nbytes / frames, 1.0)
            self.size = max(1, int(self.budget // (per_frame * self.unit))) * self.unit


def run_ahead(
    items: Iterable[In],
    run: Callable[[In], Out],
    on_result: Callable[[In, Out], None] = lambda item, result: None,
) -> Iterator[tuple[In, Out]]:
    """``(item, run(item))`` in order, ``run`` of the next item already going in a worker
    thread while the caller handles the current one.

    ``on_result(item, result)`` is called as soon as a result is in, before the next item is
    drawn from ``items`` (so it can steer what that iterator yields, e.g. ``Chunker.observe``).
    An exception in ``run`` is raised here, in the caller's thread, for the item that caused it.
    """
    it = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="calib-run") as pool:

        def start() -> tuple[In, Future[Out]] | None:
            for item in it:
                return item, pool.submit(run, item)
            return None

        current = start()
        while current is not None:
            item, future = current
            result = future.result()
            on_result(item, result)
            current = start()
            yield item, result
