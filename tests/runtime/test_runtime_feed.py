"""The run loop's feeds: the lending feed takes frames itself at light load, lends the next one
to its helper (prepared, in order) under load, and reports a frame its helper held at stop."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge.data.demo_line import LineConfig, render_frame
from edge.runtime.capture import CaptureThread
from edge.runtime.feed import END, LendingFeed
from edge.runtime.pipeline import Pipeline
from edge.runtime.replay import ReplaySource

FRAMES = [render_frame(i, LineConfig(width=160, height=120)).image for i in range(4)]


def consume(
    feed: LendingFeed, pipeline: Pipeline, n: int, extra_s: float
) -> list[tuple[int, bool]]:
    """Like the run loop: take a frame, lend, process it (plus ``extra_s`` of other work)."""
    got: list[tuple[int, bool]] = []
    deadline = time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        item = feed.get(0.05)
        assert item is not END
        if item is None:
            continue
        assert isinstance(item, tuple)
        frame, x, pre_ns = item
        got.append((frame.id, x is not None))
        if x is not None:  # the helper resized it, exactly as the pipeline would
            assert pre_ns > 0 and np.array_equal(x, pipeline.preprocess(frame.image))
        feed.lend()
        pipeline.process(frame.image, prepared=x)
        time.sleep(extra_s)
    return got


def test_light_load_takes_every_frame_directly(tiny_bundle: Path) -> None:
    with Pipeline(tiny_bundle) as p, CaptureThread(ReplaySource(FRAMES, fps=20)) as cap:
        p.warmup(2)  # a first run's set-up time is not the time per frame
        feed = LendingFeed(cap, p)
        try:
            got = consume(feed, p, 6, 0.0)
        finally:
            assert feed.stop() == []
    ids = [i for i, _ in got]
    assert len(got) == 6 and ids == sorted(ids)
    # 50 ms between frames, a few ms per frame: the helper is never woken
    assert feed.lent_count == 0 and not any(prepared for _, prepared in got)


def test_full_load_lends_the_next_frame_in_order(tiny_bundle: Path) -> None:
    with Pipeline(tiny_bundle) as p, CaptureThread(ReplaySource(FRAMES, fps=1000)) as cap:
        feed = LendingFeed(cap, p)
        try:
            got = consume(feed, p, 30, 0.004)
        finally:
            feed.stop()
    ids = [i for i, _ in got]
    assert len(got) == 30 and ids == sorted(set(ids))  # in order, none twice
    # a frame every ms, >= 4 ms per frame: after the first frames the helper takes every one
    assert feed.lent_count >= 25 and sum(prepared for _, prepared in got) >= 25


def test_stop_reports_the_frame_the_helper_holds(tiny_bundle: Path) -> None:
    with Pipeline(tiny_bundle) as p, CaptureThread(ReplaySource(FRAMES, fps=1000)) as cap:
        feed = LendingFeed(cap, p)
        consume(feed, p, 5, 0.004)  # the last one was lent: the helper takes the next
        deadline = time.monotonic() + 10
        while not feed.ready() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert feed.ready()
        held = feed.stop()
    assert len(held) == 1 and held[0] > 0


def test_keep_warm_rehearses_before_each_frame_at_light_load(tiny_bundle: Path) -> None:
    with Pipeline(tiny_bundle) as p, CaptureThread(ReplaySource(FRAMES, fps=20)) as cap:
        p.warmup(2)
        feed = LendingFeed(cap, p, keep_warm=True)
        try:
            got = consume(feed, p, 10, 0.0)
        finally:
            feed.stop()
    ids = [i for i, _ in got]
    assert ids == sorted(set(ids)) and p.frames == 10  # rehearsals are not frames
    # from the third frame on the period is known: a rehearsal before each frame that does
    # not come early
    assert 4 <= feed.rehearsals <= 8 and feed.lent_count == 0
