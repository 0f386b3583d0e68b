"""PyTorch -> ONNX for the three kinds of bundle part: trunk, one head per task, fused.

The exporter is torch's TorchScript-based ``torch.onnx.export(dynamo=False)``: deterministic tensor
names, no extra dependency (the dynamo exporter needs onnxscript), and everything our folded
graphs use (Conv, MaxPool, Concat, Resize, Gemm, ReduceMean) is plain opset-13+ ONNX.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edge.convert.merge import MERGED_PART, MergedHeads
from edge.core.config import ModelConfig, TaskSpec
from edge.family.model import ETRNLP, Preprocess

IMAGE = "image"


def tap_names(config: ModelConfig) -> list[str]:
    """``shared_0`` (the normalised image) then one tap per layer: ``shared_1`` ..."""
    return [f"shared_{k}" for k in range(len(config.layers()) + 1)]


def output_name(task: TaskSpec) -> str:
    return f"{task.name}_{'value' if task.kind == 'regression' else 'logits'}"


class Front(nn.Module):
    """The graph's input: uint8 NHWC BGR with in-graph preprocessing, or float NCHW as is."""

    def __init__(self, config: ModelConfig, in_graph: bool):
        super().__init__()
        self.pre = Preprocess(config.mean, config.std) if in_graph else None

    def forward(self, x: Tensor) -> Tensor:
        return self.pre(x) if self.pre is not None else x


class TrunkGraph(nn.Module):
    def __init__(self, model: ETRNLP, in_graph: bool):
        super().__init__()
        self.front, self.model = Front(model.config, in_graph), model

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.model.trunk(self.front(image)))


class HeadGraph(nn.Module):
    def __init__(self, model: ETRNLP, task: str):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, *taps: Tensor) -> Tensor:
        return self.model.head(self.task, list(taps))


class FusedGraph(nn.Module):
    """image -> every task's output: the trunk, then all heads in their merged form
    (convert/merge.py) when there are several tasks."""

    def __init__(self, model: ETRNLP, in_graph: bool):
        super().__init__()

        self.front, self.model = Front(model.config, in_graph), model
        self.merged = MergedHeads(model) if len(model.config.tasks) > 1 else None

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        if self.merged is not None:
            return tuple(self.merged(*self.model.trunk(self.front(image))))
        out = self.model(self.front(image))
        return tuple(out[t] for t in self.model.config.task_names)


@dataclass(frozen=True)
class ExportOptions:
    opset: int = 17
    batch: int = 1
    dynamic_batch: bool = False
    in_graph: bool = True


def example_image(config: ModelConfig, opts: ExportOptions) -> Tensor:
    h, w = config.input_size
    if opts.in_graph:
        return torch.randint(0, 256, (opts.batch, h, w, config.in_channels), dtype=torch.uint8)
    return torch.randn(opts.batch, config.in_channels, h, w)


def _export(
    module: nn.Module,
    args: tuple[Tensor, ...],
    inputs: list[str],
    outputs: list[str],
    opts: ExportOptions,
) -> bytes:
    dyn = {n: {0: "batch"} for n in inputs + outputs} if opts.dynamic_batch else None
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of dynamo (which needs onnxscript)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # torch.onnx.export accepts a file object, though its annotation says path-only
        torch.onnx.export(
            module.eval(),
            args,
            buf,  # type: ignore[arg-type]
            dynamo=False,
            opset_version=opts.opset,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dyn,
            do_constant_folding=True,
        )
    return buf.getvalue()


def export_parts(model: ETRNLP, opts: ExportOptions) -> dict[str, bytes]:
    """{'trunk': onnx bytes, 'heads/<task>': ..., 'fused': ...} of ``model`` (usually folded)."""
    cfg = model.config
    taps = tap_names(cfg)
    image = example_image(cfg, opts)
    parts = {"trunk": _export(TrunkGraph(model, opts.in_graph), (image,), [IMAGE], taps, opts)}
    with torch.no_grad():
        shared = tuple(TrunkGraph(model, opts.in_graph)(image))
    for t in cfg.tasks:
        parts[f"heads/{t.name}"] = _export(
            HeadGraph(model, t.name), shared, taps, [output_name(t)], opts
        )
    if len(cfg.tasks) > 1:
        parts[MERGED_PART] = _export(
            MergedHeads(model), shared, taps, [output_name(t) for t in cfg.tasks], opts
        )
    parts["fused"] = _export(
        FusedGraph(model, opts.in_graph),
        (image,),
        [IMAGE],
        [output_name(t) for t in cfg.tasks],
        opts,
    )
    return parts


def export_trunk(model: ETRNLP, opts: ExportOptions) -> bytes:
    """The trunk alone (used by the fold benchmark on the unfolded model)."""
    image = example_image(model.config, opts)
    return _export(
        TrunkGraph(model, opts.in_graph), (image,), [IMAGE], tap_names(model.config), opts
    )
