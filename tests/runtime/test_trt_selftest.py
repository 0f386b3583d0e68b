"""The self-test's engine loop (trt_selftest._engine_outputs), driven with ONNX Runtime backends
in the engines' place: it checks which parts the comparison sees, not TensorRT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.core.manifest import load_bundle
from edge.core.preprocess import frames_to_input
from edge.runtime.backends.registry import create_backend
from edge.runtime.backends.trt_selftest import _engine_outputs


@pytest.mark.parametrize("heads_from", ["engine", "reference"])
def test_the_trunk_is_compared_whichever_taps_the_heads_read(
    tiny_bundle: Path, heads_from: str
) -> None:
    b = load_bundle(tiny_bundle)
    head = next(iter(b.tasks.values())).head
    parts = {p: create_backend("onnxruntime").load(b.path(p)) for p in ("trunk", head)}
    try:
        frame = np.full((b.input.height, b.input.width, 3), 90, np.uint8)
        feed = {b.input.name: frames_to_input([frame], b.input)}
        ref_taps = parts["trunk"].run(feed)
        got = _engine_outputs(parts, feed, ref_taps, heads_from)  # type: ignore[arg-type]
        assert set(got) == {"trunk", head}
        for name, value in ref_taps.items():
            np.testing.assert_allclose(got["trunk"][name], value, rtol=1e-6, atol=1e-6)
    finally:
        for backend in parts.values():
            backend.close()
