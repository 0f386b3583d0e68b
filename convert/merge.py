"""All task heads as one graph, in the batched form (docs/architecture.md, "Merged heads").

When every task is due on a frame, running T small head graphs costs T launches of narrow convs
(C_p = (1-γ)·C output channels each, which vectorise poorly). The merged graph computes every
task branch of a layer together:

    p^l = ReLU( Conv(s^{l-1}; [W_1^s; ...; W_T^s]) + GroupConv_T([p_1^{l-1}; ...; p_T^{l-1}];
                [W_1^p; ...; W_T^p]) )

where W_t = [W_t^s | W_t^p] splits each task's 3x3 weights into the columns that read the shared
stream and those that read the task's own stream. One dense conv with T·C_p outputs reads the
shared stream once; one grouped conv (groups = T) carries each task's own stream. The decoders
stay per task. The outputs are named exactly as the per-task heads name them, and the result
equals running the heads one by one (checked by convert's verification like every part).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge.convert.fold import FoldedConv
from edge.core.errors import ExportError
from edge.family.model import ETRNLP, TaskBranch

MERGED_PART = "heads_all"


class MergedHeads(nn.Module):
    """taps (shared_0..shared_n) -> every task's output, in config task order."""

    def __init__(self, model: ETRNLP):
        super().__init__()
        cfg = model.config
        self.model = model
        self.tasks = cfg.task_names
        n = len(self.tasks)
        self.shared_convs = nn.ModuleList()
        self.task_convs = nn.ModuleList()
        self.widths: list[int] = []
        for k, (stage, _j, src, stride) in enumerate(cfg.layers()):
            cs_in, cp_in = cfg.shared_channels(src), cfg.task_channels(src)
            cp = cfg.task_channels(stage)
            convs = []
            for t in self.tasks:
                branch = model.branches[t]
                assert isinstance(branch, TaskBranch)
                layer = branch.layers[k]
                if not isinstance(layer, FoldedConv):
                    raise ExportError(
                        f"merged heads need the folded model (task '{t}' layer {k} is "
                        f"{type(layer).__name__}); fold before merging"
                    )
                convs.append(layer.conv)
            weight = torch.cat([c.weight.detach() for c in convs])
            bias = torch.cat([c.bias.detach() for c in convs if c.bias is not None])
            shared = nn.Conv2d(cs_in, n * cp, 3, stride=stride, padding=1)
            shared.weight.data = weight[:, :cs_in].clone()
            assert shared.bias is not None
            shared.bias.data = bias.clone()
            self.shared_convs.append(shared)
            if cp_in:
                own = nn.Conv2d(
                    n * cp_in, n * cp, 3, stride=stride, padding=1, groups=n, bias=False
                )
                own.weight.data = weight[:, cs_in:].clone()
                self.task_convs.append(own)
            else:
                self.task_convs.append(nn.Identity())
            self.widths.append(cp)

    def forward(self, *taps: Tensor) -> tuple[Tensor, ...]:
        p: Tensor | None = None
        feats: dict[str, dict[int, Tensor]] = {t: {} for t in self.tasks}
        stages = [stage for stage, *_ in self.model.config.layers()]
        for k, shared in enumerate(self.shared_convs):
            y = shared(taps[k])
            if p is not None:
                y = y + self.task_convs[k](p)
            p = F.relu(y)
            own = torch.split(p, self.widths[k], dim=1)
            for i, t in enumerate(self.tasks):
                feats[t][stages[k]] = torch.cat([taps[k + 1], own[i]], dim=1)
        heads = {t: cast(TaskBranch, self.model.branches[t]).head for t in self.tasks}
        return tuple(heads[t]([feats[t][s] for s in sorted(feats[t])]) for t in self.tasks)
