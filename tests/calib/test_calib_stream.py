"""Chunked, one-ahead feeding of calibration batches (calib/stream.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge.calib.stream import Chunker, run_ahead


def test_run_ahead_yields_every_item_in_order_with_its_result() -> None:
    got = list(run_ahead(range(7), lambda i: i * i))
    assert got == [(i, i * i) for i in range(7)]
    assert list(run_ahead([], lambda i: i)) == []


def test_run_ahead_runs_the_next_item_while_the_caller_handles_the_current() -> None:
    started = {i: threading.Event() for i in range(4)}

    def run(i: int) -> int:
        started[i].set()
        return i

    for item, _ in run_ahead(range(4), run):
        if item < 3:  # a serial implementation would start item + 1 only after we move on
            assert started[item + 1].wait(timeout=10), f"item {item + 1} did not start"


def test_on_result_runs_before_the_next_item_is_drawn() -> None:
    chunker = Chunker(unit=1, budget=100)
    feed = {"x": np.zeros((10, 5), dtype=np.uint8)}
    sizes = [
        len(f["x"])
        for f, _ in run_ahead(
            chunker.split(feed),
            lambda f: 25 * len(f["x"]),  # 25 "bytes" per frame
            lambda f, nbytes: chunker.observe(nbytes, len(f["x"])),
        )
    ]
    assert sizes == [1, 4, 4, 1]  # the first chunk sets the size for all that follow


def test_run_ahead_raises_in_the_caller_for_the_failing_item() -> None:
    seen: list[int] = []

    def run(i: int) -> int:
        if i == 2:
            raise ValueError("bad item 2")
        return i

    with pytest.raises(ValueError, match="bad item 2"):
        for item, _ in run_ahead(range(5), run):
            seen.append(item)
    assert seen == [0, 1]


def test_chunker_respects_a_fixed_batch_unit() -> None:
    chunker = Chunker(unit=4, budget=1000)
    chunker.observe(nbytes=4 * 30, frames=4)  # 30 bytes per frame: 33 frames fit -> 8 x 4
    assert chunker.size == 32
    feed = {"x": np.arange(80)}
    assert [len(c["x"]) for c in chunker.split(feed)] == [32, 32, 16]
