from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edge.convert.fold import fold_model
from edge.convert.merge import MergedHeads
from edge.core.errors import ExportError
from edge.core.manifest import load_bundle
from edge.family.model import ETRNLP
from tiny_models import tiny_config, tiny_model


def _folded() -> ETRNLP:
    return fold_model(tiny_model())[0]


def test_merged_heads_equal_heads_one_by_one() -> None:
    model = _folded()
    merged = MergedHeads(model).eval()
    with torch.no_grad():
        taps = model.trunk(torch.randn(2, 3, 32, 32))
        got = merged(*taps)
        for t, out in zip(model.config.task_names, got):
            torch.testing.assert_close(out, model.head(t, taps), rtol=1e-5, atol=1e-6)


def test_one_grouped_conv_per_layer_carries_every_task() -> None:
    model = _folded()
    merged = MergedHeads(model)
    n = len(model.config.tasks)
    assert isinstance(merged.task_convs[0], torch.nn.Identity)  # layer 1 reads the image only
    for conv in merged.task_convs[1:]:
        assert isinstance(conv, torch.nn.Conv2d) and conv.groups == n
    for k, conv in enumerate(merged.shared_convs):
        stage = model.config.layers()[k][0]
        assert conv.out_channels == n * model.config.task_channels(stage)


def test_merging_needs_the_folded_model() -> None:
    with pytest.raises(ExportError, match="folded"):
        MergedHeads(ETRNLP(tiny_config()))


def test_bundle_has_merged_part_named_like_the_heads(tiny_bundle: Path) -> None:
    b = load_bundle(tiny_bundle)
    assert b.merged_heads == "heads_all" and "heads_all" in b.parts
    g = onnx.load(str(b.path("heads_all")))
    assert [i.name for i in g.graph.input] == b.tap_names
    assert [o.name for o in g.graph.output] == [t.output for t in b.tasks.values()]
    assert "heads_all" in b.manifest.verification["max_abs_error"]
    # numerically the same as the separate heads on the trunk's taps
    trunk = ort.InferenceSession(str(b.path("trunk")), providers=["CPUExecutionProvider"])
    frame = np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    taps = dict(zip(b.tap_names, trunk.run(None, {"image": frame})))
    merged = ort.InferenceSession(str(b.path("heads_all")), providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in merged.get_outputs()], merged.run(None, taps)))
    for t in b.tasks.values():
        head = ort.InferenceSession(str(b.path(t.head)), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(outs[t.output], head.run(None, taps)[0], atol=1e-5)
