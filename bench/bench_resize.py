"""Frame resize (camera frame -> the demo model's 128x128 input): cost and quality, one run.

1. variants (``--table``): median ms hot (back to back) and cold (after a 30 ms sleep, as a
   live camera's frames arrive), each call on the next of 16 distinct frames (fresh memory, as
   in a run), for 640x480 and 1280x720; quality: mean abs difference from a full
   ``cv2.INTER_AREA`` on held-out demo-line frames; aliasing: the largest deviation from
   mid-grey on 1-px vertical / horizontal stripes, a 1-px checker and 2-px vertical /
   horizontal stripes (an area filter gives ~0; a filter that aliases gives up to 128), and
   "moire": the largest output std over vertical stripes of a period from 3 px to under 2
   output pixels (all finer than the output can show: an area filter damps them).
3. accuracy (``--accuracy N``): the demo checkpoint's held-out metrics at 320x240 (its training
   size), 640x480 and 1280x720, old vs new resize, on N frames (needs torch).
2. in a run (``--run``): ``run_bundle`` on a 30 fps ReplaySource of 16 such frames, the
   "preprocess" stage p50 with the old preprocessing (before issue 16's item 2) and the new
   one (``edge.core.preprocess``) side by side, ABAB over ``--rounds``, medians reported.

    python bench/bench_resize.py [--table] [--run] [--rounds 3] [--seconds 4] [--bundle B]

The machine's load average is printed: on a shared CPU every figure moves with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

import edge.core.preprocess as preprocess_mod
import edge.runtime.pipeline as pipeline_mod
from edge.core.preprocess import InputSpec, _step, frames_to_input, normalise, resize_frame
from edge.data.demo_line import HOLDOUT_OFFSET, LineConfig, render_frame
from edge.runtime.replay import ReplaySource
from edge.runtime.run import RunConfig, run_bundle

REPO = Path(__file__).resolve().parents[1]
SIZES = ((640, 480), (1280, 720))
OUT = 128
Resize = Callable[[np.ndarray, int, int], np.ndarray]


def old_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """resize_frame before issue 16 item 2: bilinear to a 2-4x denser grid, then area."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    if h < height or w < width:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)

    def s(src: int, dst: int) -> int:
        return min(4, max(2, -(-src // (3 * dst))))

    grid = (width * s(w, width), height * s(h, height))
    if (w, h) != grid:
        image = cv2.resize(image, grid, interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def old_frames_to_input(frames: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    batch = np.stack([old_resize(f, spec.height, spec.width) for f in frames])
    return batch if spec.in_graph else normalise(batch, spec)


def _cv(interp: int) -> Resize:
    return lambda im, h, w: cv2.resize(im, (w, h), interpolation=interp)


def _grid_then_area(per: int, lo: int, hi: int) -> Resize:
    """Bilinear to a grid s times the output per axis (s = the shrink factor / ``per``, within
    ``lo``..``hi``), then area (an integer factor)."""

    def f(im: np.ndarray, h: int, w: int) -> np.ndarray:
        def s(src: int, dst: int) -> int:
            return min(hi, max(lo, -(-src // (per * dst))))

        sh, sw = im.shape[:2]
        g = cv2.resize(im, (w * s(sw, w), h * s(sh, h)), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)

    return f


def _pairs_only(im: np.ndarray, h: int, w: int) -> np.ndarray:
    """Like resize_frame, but the columns too only in pairs at the rows' step (no halvings)."""
    sh, sw = im.shape[:2]
    my, mx = _step(sh, h), _step(sw, w)
    ny, nx = sh // my, sw // mx
    y0, x0 = (sh - ny * my) // 2, (sw - nx * mx) // 2
    g = cv2.resize(
        im[y0 : y0 + ny * my, x0 : x0 + nx * mx], (nx, ny), interpolation=cv2.INTER_LINEAR
    )
    return g if (ny, nx) == (h, w) else cv2.resize(g, (w, h), interpolation=cv2.INTER_LINEAR)


def _all_columns(im: np.ndarray, h: int, w: int) -> np.ndarray:
    """resize_frame with every column in the pairs (COLUMN_STEP 2): 2^k-pixel means in x."""
    was = preprocess_mod.COLUMN_STEP
    preprocess_mod.COLUMN_STEP = 2
    try:
        return resize_frame(im, h, w)
    finally:
        preprocess_mod.COLUMN_STEP = was


def _pyr(im: np.ndarray, h: int, w: int) -> np.ndarray:
    """cv2.pyrDown while at least twice the output, then bilinear."""
    while im.shape[0] >= 2 * h and im.shape[1] >= 2 * w:
        im = cv2.pyrDown(im)
    return cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR)


VARIANTS: dict[str, Resize] = {
    "cv2 INTER_AREA": _cv(cv2.INTER_AREA),
    "cv2 INTER_LINEAR": _cv(cv2.INTER_LINEAR),
    "cv2 INTER_NEAREST": _cv(cv2.INTER_NEAREST),
    "cv2 pyrDown (to >= 2x) + linear": _pyr,
    "old: linear to 2-4x grid + area": old_resize,
    "linear to 2x grid + area": _grid_then_area(1, 2, 2),
    "row+column pairs + linear": _pairs_only,
    "pairs, every column, halvings": _all_columns,
    "new resize_frame": resize_frame,
}


def frames(size: tuple[int, int], n: int = 16, first: int = 0) -> list[np.ndarray]:
    w, h = size
    return [render_frame(first + i, LineConfig(width=w, height=h)).image for i in range(n)]


def stripes(size: tuple[int, int]) -> dict[str, np.ndarray]:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    pats = {
        "x1": xx % 2,
        "y1": yy % 2,
        "chk": (xx + yy) % 2,
        "x2": (xx % 4) // 2,
        "y2": (yy % 4) // 2,
    }
    return {k: np.repeat((p * 255).astype(np.uint8)[..., None], 3, axis=2) for k, p in pats.items()}


def quality(fn: Resize, size: tuple[int, int]) -> tuple[float, list[float]]:
    """(mean abs diff from INTER_AREA on held-out frames, [max deviation from grey per pattern,
    the largest output std over vertical stripes of period 3 px .. 2 output pixels])."""
    d = []
    for img in frames(size, 4, first=10_000_000):
        area = cv2.resize(img, (OUT, OUT), interpolation=cv2.INTER_AREA).astype(np.float32)
        d.append(float(np.abs(fn(img, OUT, OUT).astype(np.float32) - area).mean()))
    dev = [float(np.abs(fn(p, OUT, OUT) - 127.5).max()) for p in stripes(size).values()]
    w, h = size
    xx = np.mgrid[0:h, 0:w][1]
    moire = max(
        float(
            fn(
                np.repeat(np.where(xx % p < p // 2, 255, 0).astype(np.uint8)[..., None], 3, 2),
                OUT,
                OUT,
            )
            .astype(np.float32)
            .std()
        )
        for p in range(3, 2 * w // OUT)  # finer than the output can show
    )
    return statistics.mean(d), [*dev, moire]


def timings(fns: dict[str, Resize], imgs: list[np.ndarray], reps: int) -> dict[str, list[float]]:
    """{name: [hot ms, cold ms]}; the variants interleaved, so load shifts hit all alike."""
    ts: dict[tuple[str, bool], list[int]] = {}
    for i in range(reps):
        for cold in (False, True):
            for name, fn in fns.items():
                img = imgs[i % len(imgs)]
                if cold:
                    time.sleep(0.03)
                t0 = time.perf_counter_ns()
                fn(img, OUT, OUT)
                ts.setdefault((name, cold), []).append(time.perf_counter_ns() - t0)
    return {n: [statistics.median(ts[(n, c)]) / 1e6 for c in (False, True)] for n in fns}


def table(reps: int) -> None:
    print(f"variants: median ms hot / cold, {reps} calls each; mad = mean |x - INTER_AREA|;")
    print("alias = max |x - 127.5| on 1-px x stripes / y stripes / checker / 2-px x / y stripes;")
    print("moire = the largest output std over x stripes of period 3 px .. under 2 output pixels")
    for size in SIZES:
        t = timings(VARIANTS, frames(size), reps)
        print(f"{size[0]}x{size[1]} (load average {load()}):")
        for name, fn in VARIANTS.items():
            mad, dev = quality(fn, size)
            alias = "/".join(f"{v:.0f}" for v in dev[:-1])
            print(
                f"  {name:34s} hot {t[name][0]:6.3f}  cold {t[name][1]:6.3f}  mad {mad:5.2f}  "
                f"alias {alias}  moire {dev[-1]:.0f}"
            )


EXTRA_ARMS: list[str] = []


def _arm(fn: Resize) -> Callable[[Sequence[np.ndarray], InputSpec], np.ndarray]:
    return lambda frames, spec: fn(frames[0], spec.height, spec.width)[None]


def in_run(bundle: Path, size: tuple[int, int], seconds: float) -> float:
    src = ReplaySource(frames(size), fps=30.0)
    s = run_bundle(bundle, RunConfig(source="replay", duration_s=seconds, warmup=10), source=src)
    return float(s.stages["preprocess"]["p50_ms"])


def runs(bundle: Path, rounds: int, seconds: float) -> None:
    arms = {"old": old_frames_to_input, "new": frames_to_input}
    for extra in EXTRA_ARMS:
        arms[extra] = _arm(VARIANTS[extra])
    res: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for size in SIZES:
            for arm, fn in arms.items():
                pipeline_mod.frames_to_input = fn  # type: ignore[assignment]
                try:
                    p50 = in_run(bundle, size, seconds)
                finally:
                    pipeline_mod.frames_to_input = frames_to_input  # type: ignore[assignment]
                res.setdefault((f"{size[0]}x{size[1]}", arm), []).append(p50)
    print(
        f"in a run (run_bundle, ReplaySource 30 fps, {seconds:g} s x {rounds} rounds), "
        "preprocess p50 ms, median (rounds):"
    )
    for (tag, arm), v in res.items():
        print(
            f"  {tag:9s} {arm}: {statistics.median(v):.3f}   ({', '.join(f'{x:.3f}' for x in v)})"
        )


def accuracy(count: int) -> None:
    """The demo checkpoint's held-out metrics per frame size, old vs new resize (the same
    frames, resized by each, evaluated as ``edge train`` does on its validation set)."""
    import edge.family.train as train_mod  # torch: only this arm needs it
    from edge.family.checkpoint import load_checkpoint
    from edge.family.model import Preprocess

    ck = load_checkpoint(REPO / "edge" / "assets" / "demo.pt")
    pre = Preprocess(ck.config.mean, ck.config.std)
    print(f"accuracy: demo.pt on held-out demo-line frames {HOLDOUT_OFFSET}..+{count}")
    for w, h in ((320, 240), *SIZES):
        cfg = LineConfig(width=w, height=h)
        samples = []
        for i in range(HOLDOUT_OFFSET, HOLDOUT_OFFSET + count):
            f = render_frame(i, cfg)
            samples.append((f.image, {**f.labels(), "mask": f.mask}, f"frame {i}"))
        for arm, fn in (("old", old_resize), ("new", resize_frame)):
            train_mod.resize_frame = fn  # type: ignore[assignment]
            try:
                data = train_mod.build_dataset(iter(samples), ck.config, count)
            finally:
                train_mod.resize_frame = resize_frame  # type: ignore[assignment]
            m = train_mod.evaluate(ck.model, pre, data)
            print(
                f"  {w}x{h} {arm}: "
                + " | ".join(
                    f"{t} " + " ".join(f"{k}={v:.2f}" for k, v in r.items()) for t, r in m.items()
                )
            )


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def build(work: Path) -> Path:
    from edge.convert.bundle import ConvertConfig, convert_checkpoint

    ckpt = REPO / "edge" / "assets" / "demo.pt"
    return convert_checkpoint(ckpt, ConvertConfig(out=work / "bundle", verify_frames=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--run", action="store_true")
    ap.add_argument("--accuracy", type=int, metavar="N", help="also: held-out metrics, N frames")
    ap.add_argument("--reps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--arm", action="append", default=[], choices=list(VARIANTS))
    a = ap.parse_args()
    EXTRA_ARMS.extend(a.arm)
    cv2.setNumThreads(1)  # as in a run (the prefetch thread resizes on one core)
    print(f"load average before: {load()} on {os.cpu_count()} CPUs; OpenCV {cv2.__version__}")
    if a.table or not a.run:
        table(a.reps)
    if a.run or not a.table:
        bundle = a.bundle or build(Path(tempfile.mkdtemp(prefix="bench-resize-")))
        runs(bundle, a.rounds, a.seconds)
    if a.accuracy:
        accuracy(a.accuracy)
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
