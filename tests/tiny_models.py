"""Tiny model configs for tests, built inline (no binary fixtures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge.core.config import ModelConfig, TaskSpec

TINY_TASKS = (
    TaskSpec("defect", "classification", ("ok", "scratch", "hole", "stain")),
    TaskSpec("attrs", "multilabel", ("shiny", "rusty", "bent")),
    TaskSpec("mask", "segmentation", ("background", "defect"), decoder_channels=4),
    TaskSpec("angle", "regression", ("angle",), scale=30.0, unit="deg"),
)


IR_VERSION = 8
"""The IR version of hand-built test graphs: onnx.helper stamps the newest (14 with onnx 1.23),
which ONNX Runtime < 1.31 refuses; 8 is read by every supported ONNX Runtime (>= 1.16)."""


def onnx_model(graph: Any, opset: int) -> Any:
    """A hand-built graph as a model every supported ONNX Runtime loads."""
    from onnx import helper

    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION
    )


def tiny_config(**kw: object) -> ModelConfig:
    base: dict[str, object] = dict(
        tasks=TINY_TASKS, widths=(8, 16, 16), depths=(1, 2, 1), gamma=0.75, input_size=(32, 32)
    )
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
def tiny() -> ModelConfig:
    return tiny_config()


def tiny_model(config: ModelConfig | None = None, seed: int = 0, spread: float = 0.5) -> Any:
    """An untrained ETRNLP in eval mode whose BatchNorms have non-trivial statistics (so BN
    folding is really exercised); ``spread`` scales how far they are from identity."""
    import torch

    from edge.family.model import ETRNLP

    torch.manual_seed(seed)
    model = ETRNLP(config or tiny_config())
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            assert mod.running_mean is not None and mod.running_var is not None
            mod.running_mean.uniform_(-spread, spread)
            mod.running_var.uniform_(1 / (1 + 2 * spread), 1 + 2 * spread)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-spread / 2, spread / 2)
    return model.eval()


def make_tiny_checkpoint(path: Path, config: ModelConfig | None = None, seed: int = 0) -> Path:
    """A randomly initialised (untrained) checkpoint with non-trivial BN statistics."""
    from edge.family.checkpoint import save_checkpoint

    return save_checkpoint(path, tiny_model(config, seed), {"metrics": {}})


def make_tiny_bundle(folder: Path, config: ModelConfig | None = None, **convert_kw: object) -> Path:
    """Checkpoint + ``edge convert`` of a tiny untrained model into ``folder/bundle``."""
    from edge.convert.bundle import ConvertConfig, convert_checkpoint

    ckpt = make_tiny_checkpoint(folder / "tiny.pt", config)
    return convert_checkpoint(ckpt, ConvertConfig(out=folder / "bundle", **convert_kw))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("tiny"))
