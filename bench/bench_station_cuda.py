"""Station batch sweep on a CUDA GPU (issue 16): the demo model in PyTorch, trunk once + every
head, at batch 1/2/4/8: ms per batch and per frame, eager and with a CUDA graph per batch size.

Skips (exit 0, one line) when torch has no CUDA device. On a GPU, per-launch overhead dominates
this small model, so batching a station's cameras should cost little more than one frame.

    python bench/bench_station_cuda.py [--iters 500]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def time_ms(fn: Any, iters: int, torch: Any) -> float:
    """Median of ``iters`` CUDA-event timings of ``fn()`` (after 20 warm-up calls)."""
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--checkpoint", type=Path, default=REPO / "edge" / "assets" / "demo.pt")
    a = ap.parse_args()
    import torch  # the bench's one heavy dependency

    if not torch.cuda.is_available():
        print("skipped: torch has no CUDA device here (run this on a GPU machine)")
        return
    from edge.family.checkpoint import load_checkpoint

    ck = load_checkpoint(a.checkpoint)
    model = ck.model.cuda().eval()
    h, w = ck.config.input_size
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, input {h}x{w}")
    print("batch | eager ms/batch | eager ms/frame | graph ms/batch | graph ms/frame")
    base = None
    with torch.inference_mode():
        for n in (1, 2, 4, 8):
            x = torch.randn(n, 3, h, w, device="cuda")
            eager = time_ms(lambda x=x: model(x), a.iters, torch)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    model(x)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                model(x)
            g = time_ms(graph.replay, a.iters, torch)
            base = base or g
            print(f"{n:5d} | {eager:14.3f} | {eager / n:14.3f} | {g:14.3f} | {g / n:14.3f}")
    print(f"graph batch 8 / batch 1: {g / base:.2f}x the time for 8x the frames")


if __name__ == "__main__":
    main()
