"""The ETR-NLP network in PyTorch (docs/architecture.md, "The model family"), training form.

    s^l   = ReLU(BN(A^l · cat_i P_i(s^{l-1})))            shared branch: shared stream only
    p_t^l = ReLU(BN(W_t^l ⊛ [s^{l-1}; p_t^{l-1}]))        task branch t: 3x3 conv
    x_t^l = [s^l; p_t^l]                                   what task t sees

The shared stream depends on the image alone, so ``trunk`` computes it once per image and every
task's ``head`` (its branch stack and decoder) reads the per-stage shared features ``s^0..s^L``
(``s^0`` is the normalised image). ``forward`` runs any subset of tasks on one trunk pass.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge.core.config import ModelConfig, TaskSpec
from edge.core.errors import InternalError
from edge.family.primitives import dilation_of, primitive_kernel


class NLPBank(nn.Module):
    """k fixed primitives, each C -> C at the layer's stride; output cat_i P_i(x) (k*C channels)."""

    def __init__(self, config: ModelConfig, channels: int, stride: int, where: tuple[int, int]):
        super().__init__()
        self.kinds = tuple(config.primitives)
        self.channels = channels
        self.stride = stride
        self.depthwise = config.depthwise
        for i, kind in enumerate(self.kinds):
            k = primitive_kernel(
                kind,
                channels,
                depthwise=config.depthwise,
                density=config.lbc_density,
                seed=config.seed,
                where=(*where, i),
            )
            if k is not None:
                self.register_buffer(f"kernel_{i}", torch.from_numpy(k))

    def kernel(self, i: int) -> Tensor | None:
        """The fixed kernel of primitive ``i``; None for avgpool, identity and maxpool."""
        k = getattr(self, f"kernel_{i}", None)
        return k if isinstance(k, Tensor) else None

    def conv_kernel(self, i: int) -> Tensor:
        k = self.kernel(i)
        if k is None:
            raise InternalError(f"primitive {i} ({self.kinds[i]}) has no kernel")
        return k

    def forward(self, x: Tensor) -> Tensor:
        outs = []
        for i, kind in enumerate(self.kinds):
            s = self.stride
            if kind == "identity":
                outs.append(x[:, :, ::s, ::s] if s > 1 else x)
            elif kind == "avgpool":
                outs.append(F.avg_pool2d(x, 3, stride=s, padding=1, count_include_pad=True))
            elif kind == "maxpool":
                outs.append(F.max_pool2d(x, 3, stride=s, padding=1))
            else:
                d = dilation_of(kind)
                groups = self.channels if self.depthwise else 1
                outs.append(
                    F.conv2d(x, self.conv_kernel(i), stride=s, padding=d, dilation=d, groups=groups)
                )
        return torch.cat(outs, dim=1)


class SharedLayer(nn.Module):
    """s^l = ReLU(BN(A · bank(s^{l-1}))), A a learnable 1x1 conv (k*C_in -> C_s)."""

    def __init__(
        self, config: ModelConfig, c_in: int, c_out: int, stride: int, where: tuple[int, int]
    ):
        super().__init__()
        self.bank = NLPBank(config, c_in, stride, where)
        self.mix = nn.Conv2d(len(config.primitives) * c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.mix(self.bank(x))))


class TaskLayer(nn.Module):
    """p_t^l = ReLU(BN(W_t ⊛ [s^{l-1}; p_t^{l-1}])), W_t a learnable 3x3 conv (-> C_p)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class ImageHead(nn.Module):
    """Global average and max pooling + linear: classification logits, multi-label logits or
    regression values. The max pool keeps small, local evidence (a scratch, a hole) that an
    average over the whole part dilutes."""

    def __init__(self, c_in: int, n_out: int):
        super().__init__()
        self.fc = nn.Linear(2 * c_in, n_out)

    def forward(self, feats: list[Tensor]) -> Tensor:
        x = feats[-1]
        return self.fc(torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1))


class DenseHead(nn.Module):
    """Top-down decoder over every stage (lateral 1x1 + 2x upsampling).

    Logits come out at the first stage's resolution (stride ``OUTPUT_STRIDE`` = 2): the last,
    parameter-free 2x upsampling is left to whoever needs full-size masks (the training loss and
    the metrics upsample logits bilinearly; the runtime resizes the decoded mask to the frame),
    which keeps the deployed head cheap.
    """

    OUTPUT_STRIDE = 2

    def __init__(self, widths: tuple[int, ...], channels: int, n_out: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(w, channels, 1) for w in widths)
        self.classify = nn.Conv2d(channels, n_out, 1)

    def forward(self, feats: list[Tensor]) -> Tensor:
        y = self.lateral[-1](feats[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            y = F.interpolate(y, scale_factor=2.0, mode="nearest") + lat(f)
        return self.classify(F.relu(y))


class TaskBranch(nn.Module):
    """Task t's branch stack and its decoder: reads s^0..s^L, returns the task's raw output."""

    def __init__(self, config: ModelConfig, task: TaskSpec):
        super().__init__()
        self.spec = task
        self.layers = nn.ModuleList()
        self.in_stage: list[int] = []
        for stage, _j, src, stride in config.layers():
            c_in = config.shared_channels(src) + config.task_channels(src)
            self.layers.append(TaskLayer(c_in, config.task_channels(stage), stride))
            self.in_stage.append(src)
        self.stage_of = [stage for stage, *_ in config.layers()]
        if task.dense:
            self.head: nn.Module = DenseHead(config.widths, task.decoder_channels, task.num_outputs)
        else:
            self.head = ImageHead(config.widths[-1], task.num_outputs)

    def forward(self, shared: list[Tensor]) -> Tensor:
        """``shared[i]`` is the output of the i-th shared layer's stage; shared[0] the image."""
        p: Tensor | None = None
        stage_out: dict[int, Tensor] = {}
        s_prev = shared[0]
        for k, layer in enumerate(self.layers):
            x = s_prev if p is None else torch.cat([s_prev, p], dim=1)
            p = layer(x)
            s_prev = shared[k + 1]
            stage_out[self.stage_of[k]] = torch.cat([s_prev, p], dim=1)
        feats = [stage_out[s] for s in sorted(stage_out)]
        return self.head(feats)


class ETRNLP(nn.Module):
    """The multi-task network. ``trunk(x)`` -> shared features; ``head(task, shared)`` -> output.

    ``x`` is the normalised image (N, C, H, W) float; see ``Preprocess`` for the uint8 front.
    ``trunk_runs`` counts trunk passes (the shared stream is computed once per forward).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.shared = nn.ModuleList()
        for stage, j, src, stride in config.layers():
            self.shared.append(
                SharedLayer(
                    config,
                    config.shared_channels(src),
                    config.shared_channels(stage),
                    stride,
                    where=(stage, j),
                )
            )
        self.branches = nn.ModuleDict({t.name: TaskBranch(config, t) for t in config.tasks})
        self.trunk_runs = 0

    def trunk(self, x: Tensor) -> list[Tensor]:
        """The shared stream of every layer: [s^0 (= x), s after layer 1, ..., s after last]."""
        self.trunk_runs += 1
        out = [x]
        for layer in self.shared:
            out.append(layer(out[-1]))
        return out

    def head(self, task: str, shared: list[Tensor]) -> Tensor:
        return self.branches[task](shared)

    def forward(
        self, x: Tensor, tasks: list[str] | tuple[str, ...] | None = None
    ) -> dict[str, Tensor]:
        names = self.config.task_names if tasks is None else tuple(tasks)
        for n in names:
            self.config.task(n)  # raises ConfigError for an unknown task
        shared = self.trunk(x)
        return {n: self.branches[n](shared) for n in names}


class Preprocess(nn.Module):
    """uint8 (N, H, W, C) BGR frames -> normalised float (N, C, H, W): cast, normalise, transpose.

    The same module runs in training and in the exported graphs (in-graph preprocessing), so the
    runtime's CPU only resizes frames.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
        inv = (1.0 / np.asarray(std, dtype=np.float32)).reshape(1, -1, 1, 1)
        self.register_buffer("mean", torch.from_numpy(m))
        self.register_buffer("inv_std", torch.from_numpy(inv))

    mean: Tensor
    inv_std: Tensor

    def forward(self, frames: Tensor) -> Tensor:
        # transpose first, then normalise per channel: broadcasting over a trailing axis of 3
        # is several times slower in ONNX Runtime than over (1, C, 1, 1)
        return (frames.permute(0, 3, 1, 2).to(torch.float32) - self.mean) * self.inv_std


def count_parameters(model: ETRNLP) -> dict[str, object]:
    """Learnable parameters (shared / per task / total) and fixed primitive weights."""
    shared = sum(p.numel() for p in model.shared.parameters())
    per_task = {n: sum(p.numel() for p in b.parameters()) for n, b in model.branches.items()}
    fixed = sum(b.numel() for name, b in model.named_buffers() if ".kernel_" in name)
    return {
        "shared": shared,
        "per_task": per_task,
        "learnable": shared + sum(per_task.values()),
        "fixed": fixed,
    }
