from __future__ import annotations

import numpy as np
import pytest
import torch

from edge.core.config import PRIMITIVE_KINDS, ModelConfig, parameter_formula
from edge.core.errors import ConfigError
from edge.data.demo_line import demo_config
from edge.family.model import ETRNLP, Preprocess, count_parameters
from tiny_models import tiny_config


def test_primitives_are_deterministic_per_seed() -> None:
    a, b = ETRNLP(tiny_config(seed=3)), ETRNLP(tiny_config(seed=3))
    c = ETRNLP(tiny_config(seed=4))
    bufs = [n for n, _ in a.named_buffers() if ".kernel_" in n]
    assert bufs, "conv primitives must be stored as buffers"
    for n in bufs:
        assert torch.equal(a.get_buffer(n), b.get_buffer(n))
    assert any(not torch.equal(a.get_buffer(n), c.get_buffer(n)) for n in bufs)


def test_primitives_are_not_parameters() -> None:
    m = ETRNLP(tiny_config(primitives=PRIMITIVE_KINDS))
    param_ids = {id(p) for p in m.parameters()}
    for name, buf in m.named_buffers():
        if ".kernel_" in name:
            assert id(buf) not in param_ids
            assert not buf.requires_grad
    assert not any(".kernel_" in n or ".bank." in n for n, _ in m.named_parameters())


def test_lbc_is_sparse_ternary() -> None:
    m = ETRNLP(tiny_config(primitives=("lbc",), lbc_density=0.3))
    k = m.shared[1].bank.kernel(0)
    vals = torch.unique(k / k.abs().max())
    assert set(vals.tolist()) <= {-1.0, 0.0, 1.0}
    assert 0.2 < float((k != 0).float().mean()) < 0.4


@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("prims", [("lbc", "gauss", "avgpool", "identity"), PRIMITIVE_KINDS])
def test_parameter_count_matches_formula(depthwise: bool, prims: tuple[str, ...]) -> None:
    cfg = tiny_config(primitives=prims, depthwise=depthwise)
    m = ETRNLP(cfg)
    counts = count_parameters(m)
    assert counts == parameter_formula(cfg)
    assert counts["learnable"] == sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_shared_stream_computed_once_for_all_tasks() -> None:
    m = ETRNLP(tiny_config()).eval()
    calls = []
    for layer in m.shared:
        layer.register_forward_hook(lambda *_: calls.append(1))
    m(torch.randn(2, 3, 32, 32))
    assert m.trunk_runs == 1
    assert len(calls) == len(m.shared)  # each shared layer ran exactly once for 4 tasks


def test_single_task_equals_all_task_output() -> None:
    m = ETRNLP(tiny_config()).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = m(x)
        for t in m.config.task_names:
            assert torch.equal(m(x, [t])[t], full[t])
        sub = m(x, ["mask", "angle"])
    assert set(sub) == {"mask", "angle"}
    assert full["mask"].shape == (2, 2, 16, 16)  # logits at stride 2
    assert full["attrs"].shape == (2, 3) and full["angle"].shape == (2, 1)


def test_unknown_task_in_forward_is_an_error() -> None:
    m = ETRNLP(tiny_config())
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        m(torch.randn(1, 3, 32, 32), ["nope"])


def test_preprocess_matches_numpy_normalise() -> None:
    from edge.core.preprocess import InputSpec, normalise

    frames = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    spec = InputSpec(height=8, width=8, mean=(100.0, 110.0, 120.0), std=(50.0, 60.0, 70.0))
    got = Preprocess(spec.mean, spec.std)(torch.from_numpy(frames)).numpy()
    np.testing.assert_allclose(got, normalise(frames, spec), rtol=1e-6, atol=1e-6)


def test_config_round_trip_and_errors() -> None:
    cfg = demo_config()
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="unknown primitive"):
        tiny_config(primitives=("lbc", "sobel"))
    with pytest.raises(ConfigError, match="unknown kind"):
        ModelConfig.from_dict(
            {**cfg.to_dict(), "tasks": [{"name": "x", "kind": "detection", "labels": ["a", "b"]}]}
        )
    with pytest.raises(ConfigError, match="gamma"):
        tiny_config(gamma=1.0)
    with pytest.raises(ConfigError, match="divisible"):
        tiny_config(input_size=(30, 32))
