"""Fold the fixed primitives: a trained ETR-NLP model -> its deploy form, plus a fold report.

Passes over the PyTorch module tree, each ``pass(model) -> PassResult(model, changed)``, run in
order by ``fold_model`` on a deep copy (the input model is never modified):

- ``FoldSharedBanksPass``: each shared layer ReLU(BN(A · cat_i P_i(x))) becomes, when its linear
  primitives fold, ReLU(W_eff ⊛ x + b [+ A_max · maxpool(x)]) with
      W_eff[o] = Σ_i A_i[o, :] · embed(K_i)      (A_i: A's block for primitive i)
  and BN folded into W_eff and b (docs/architecture.md, "Folding"). A dilated 3x3 embeds in a 5x5
  kernel, or stays its own dilated 3x3 conv ("split" form) when that is cheaper. ``maxpool`` is
  nonlinear and stays an op with its own 1x1 (its linear siblings still fold). The pass counts the
  MACs of every form and keeps the cheapest: a depthwise bank may be cheaper left as constant
  depthwise convs, in which case only BN folds into the 1x1 and the report says why.
- ``FoldTaskBatchNormPass``: each task layer's BN folds into its 3x3 conv.

Either way the fixed primitives end up as constant weights (ONNX initializers), never inputs.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge.core.config import LINEAR_PRIMITIVES
from edge.core.errors import ExportError
from edge.family.model import ETRNLP, NLPBank, SharedLayer, TaskBranch, TaskLayer
from edge.family.primitives import dense_kernel


@dataclass
class LayerFold:
    """What happened to one layer: the chosen form, what folded, what did not and why."""

    name: str
    form: str
    folded: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    macs_before: int = 0
    macs_after: int = 0
    params_before: int = 0
    params_after: int = 0
    candidates: dict[str, int] = field(default_factory=dict)


@dataclass
class FoldReport:
    layers: list[LayerFold] = field(default_factory=list)
    passes: dict[str, bool] = field(default_factory=dict)
    """Each pass that ran and whether it changed the model."""

    def totals(self, prefix: str = "") -> dict[str, int]:
        sel = [x for x in self.layers if x.name.startswith(prefix)]
        return {
            k: sum(getattr(x, k) for x in sel)
            for k in ("macs_before", "macs_after", "params_before", "params_after")
        }

    def to_dict(self) -> dict[str, object]:
        return {
            "passes": dict(self.passes),
            "layers": [asdict(x) for x in self.layers],
            "trunk": self.totals("shared"),
            "total": self.totals(),
        }

    def to_markdown(self, *, per_task_layers: bool = True) -> str:
        """The fold table; ``per_task_layers=False`` sums each task's layers into one row."""
        rows = [
            "| layer | form | folded | kept as ops (why) | MACs before | MACs after | "
            "params before | params after |",
            "|---|---|---|---|---:|---:|---:|---:|",
        ]
        layers = list(self.layers)
        if not per_task_layers:
            layers = [x for x in layers if x.name.startswith("shared")]
            tasks = dict.fromkeys(
                x.name.split(".")[0] for x in self.layers if not x.name.startswith("shared")
            )
            for task in tasks:
                tot = self.totals(f"{task}.")
                layers.append(
                    LayerFold(
                        name=f"{task} (all layers)",
                        form="conv3x3",
                        folded=["batchnorm"],
                        macs_before=tot["macs_before"],
                        macs_after=tot["macs_after"],
                        params_before=tot["params_before"],
                        params_after=tot["params_after"],
                    )
                )
        for x in layers:
            reasons: dict[str, list[str]] = {}
            for kind, why in x.kept.items():
                reasons.setdefault(why, []).append(kind)
            kept = "; ".join(f"{', '.join(k)} ({why})" for why, k in reasons.items()) or "-"
            rows.append(
                f"| {x.name} | {x.form} | {', '.join(x.folded) or '-'} | {kept} | "
                f"{x.macs_before:,} | {x.macs_after:,} | {x.params_before:,} | "
                f"{x.params_after:,} |"
            )
        for label, t in (("trunk", self.totals("shared")), ("all", self.totals())):
            ratio = t["macs_before"] / max(t["macs_after"], 1)
            rows.append(
                f"| **{label}** | | | | {t['macs_before']:,} | {t['macs_after']:,} "
                f"({ratio:.2f}x fewer) | {t['params_before']:,} | {t['params_after']:,} |"
            )
        return "\n".join(rows)


@dataclass(frozen=True)
class PassResult:
    model: ETRNLP
    changed: bool


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BN as y = x * scale + shift."""
    assert bn.running_var is not None and bn.running_mean is not None
    var = bn.running_var.detach().double().numpy()
    mean = bn.running_mean.detach().double().numpy()
    gamma = bn.weight.detach().double().numpy()
    beta = bn.bias.detach().double().numpy()
    scale = gamma / np.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def _conv(weight: np.ndarray, bias: np.ndarray | None, stride: int, dilation: int = 1) -> nn.Conv2d:
    c_out, c_in, k, _ = weight.shape
    pad = dilation * (k // 2)
    conv = nn.Conv2d(
        c_in, c_out, k, stride=stride, padding=pad, dilation=dilation, bias=bias is not None
    )
    conv.weight.data = torch.from_numpy(weight.astype(np.float32))
    conv.weight.requires_grad_(False)
    if bias is not None:
        assert conv.bias is not None
        conv.bias.data = torch.from_numpy(bias.astype(np.float32))
    return conv


class FoldedShared(nn.Module):
    """ReLU(Σ_j conv_j(x) + Σ_m mix_m(maxpool(x))), or ReLU(mix(bank(x))) for a kept bank."""

    def __init__(
        self,
        convs: list[nn.Conv2d],
        pooled: list[nn.Conv2d],
        stride: int,
        bank: NLPBank | None = None,
        mix: nn.Conv2d | None = None,
    ):
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.pooled = nn.ModuleList(pooled)
        self.stride = stride
        self.bank = bank
        self.mix = mix

    def forward(self, x: Tensor) -> Tensor:
        if self.bank is not None and self.mix is not None:
            return F.relu(self.mix(self.bank(x)))
        y = self.convs[0](x)
        for conv in self.convs[1:]:
            y = y + conv(x)
        if len(self.pooled):
            p = F.max_pool2d(x, 3, stride=self.stride, padding=1)
            for conv in self.pooled:
                y = y + conv(p)
        return F.relu(y)


class FoldedConv(nn.Module):
    """ReLU(conv(x)) with BN folded into the conv."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x))


def _prim_macs(kind: str, c: int, c_s: int, depthwise: bool) -> int:
    if kind == "identity":
        return 0
    if kind in ("avgpool", "maxpool"):
        return 9 * c
    return 9 * c if depthwise else 9 * c * c


FORMS = ("auto", "single", "split", "bank")


def fold_shared_layer(
    layer: SharedLayer, name: str, pixels: int, form: str = "auto"
) -> tuple[FoldedShared, LayerFold]:
    """One shared layer -> its deploy form (``pixels``: output positions). ``form`` "auto"
    takes the cheapest in MACs; "single"/"split"/"bank" force one where it applies."""
    bank = layer.bank
    c, c_s, k = bank.channels, layer.mix.out_channels, len(bank.kinds)
    scale, shift = bn_scale_shift(layer.bn)
    a = layer.mix.weight.detach().double().numpy()[:, :, 0, 0] * scale[:, None]  # BN into A
    linear = [i for i, kind in enumerate(bank.kinds) if kind in LINEAR_PRIMITIVES]
    nonlin = [i for i, kind in enumerate(bank.kinds) if kind not in LINEAR_PRIMITIVES]
    kinds = bank.kinds
    conv_params = sum(
        int(bank.conv_kernel(i).numel()) for i in range(k) if bank.kernel(i) is not None
    )
    before = sum(_prim_macs(kd, c, c_s, bank.depthwise) for kd in kinds) + k * c * c_s + 2 * c_s
    pool_macs = sum(9 * c + c * c_s for _ in nonlin)
    has_dil = any(kinds[i] == "dilated" for i in linear)
    rest = [i for i in linear if kinds[i] != "dilated"]
    support = 3 if any(kinds[i] != "identity" for i in rest) else 1
    cand: dict[str, int] = {}
    if linear:
        cand["single"] = (25 if has_dil else support**2) * c * c_s + pool_macs
        if has_dil and rest:
            cand["split"] = (support**2 + 9) * c * c_s + pool_macs
    cand["bank"] = sum(_prim_macs(kd, c, c_s, bank.depthwise) for kd in kinds) + k * c * c_s
    auto = min(cand, key=lambda f: cand[f])
    form = form if form in cand else auto
    rec = LayerFold(
        name=name,
        form=form,
        macs_before=before * pixels,
        macs_after=cand[form] * pixels,
        candidates={f: m * pixels for f, m in cand.items()},
    )
    rec.params_before = conv_params + k * c * c_s + 2 * c_s
    if form == "bank":
        mix = _conv(a[:, :, None, None], shift, 1)
        why = (
            f"folding into a dense conv costs {cand.get('single', 0) * pixels:,} MACs, "
            f"more than the constant bank's {cand['bank'] * pixels:,}"
            if auto == "bank"
            else "bank form requested"
        )
        rec.kept = {kinds[i]: ("nonlinear" if i in nonlin else why) for i in range(k)}
        rec.folded = ["batchnorm into 1x1"]
        rec.params_after = conv_params + k * c * c_s + c_s
        return FoldedShared([], [], bank.stride, bank=copy.deepcopy(bank), mix=mix), rec

    def merged(idx: list[int]) -> np.ndarray:
        w = np.zeros((c_s, c, 5, 5))
        for i in idx:
            kern = bank.kernel(i)
            d = dense_kernel(
                kinds[i], None if kern is None else kern.numpy(), c, depthwise=bank.depthwise
            )
            w += np.einsum("oc,cdhw->odhw", a[:, i * c : (i + 1) * c], d)
        return w

    convs: list[nn.Conv2d] = []
    stride = bank.stride
    if form == "split":
        lo = (5 - support) // 2
        convs.append(_conv(merged(rest)[:, :, lo : 5 - lo, lo : 5 - lo], shift, stride))
        dil = merged([i for i in linear if kinds[i] == "dilated"])[:, :, 0:5:2, 0:5:2]
        convs.append(_conv(dil, None, stride, dilation=2))
    else:
        size = 5 if has_dil else support
        lo = (5 - size) // 2
        convs.append(_conv(merged(linear)[:, :, lo : 5 - lo, lo : 5 - lo], shift, stride))
    pooled = [_conv(a[:, i * c : (i + 1) * c, None, None], None, 1) for i in nonlin]
    rec.folded = [kinds[i] for i in linear] + ["batchnorm"]
    rec.kept = {kinds[i]: "nonlinear (max): cannot be folded into a conv" for i in nonlin}
    rec.params_after = sum(
        int(cv.weight.numel()) + (cv.bias.numel() if cv.bias is not None else 0)
        for cv in convs + pooled
    )
    return FoldedShared(convs, pooled, stride), rec


class FoldSharedBanksPass:
    """Replace every SharedLayer by its cheapest folded form (see module docstring)."""

    def __init__(self, report: FoldReport, form: str = "auto"):
        self.report = report
        self.form = form

    def __call__(self, model: ETRNLP) -> PassResult:
        cfg = model.config
        changed = False
        h, w = cfg.input_size
        for idx, (stage, j, _src, _stride) in enumerate(cfg.layers()):
            layer = model.shared[idx]
            if isinstance(layer, FoldedShared):
                continue  # already folded
            if not isinstance(layer, SharedLayer):
                raise ExportError(
                    f"unsupported layer {type(layer).__name__} at shared[{idx}]: convert folds "
                    "ETR-NLP shared layers (NLP bank + 1x1 + BN) only; train with edge train"
                )
            pixels = (h >> stage) * (w >> stage)
            folded, rec = fold_shared_layer(layer, f"shared.{stage}.{j}", pixels, self.form)
            model.shared[idx] = folded
            self.report.layers.append(rec)
            changed = True
        return PassResult(model, changed)


class FoldTaskBatchNormPass:
    """Fold each task layer's BN into its 3x3 conv."""

    def __init__(self, report: FoldReport):
        self.report = report

    def __call__(self, model: ETRNLP) -> PassResult:
        cfg = model.config
        h, w = cfg.input_size
        changed = False
        for task, branch in model.branches.items():
            assert isinstance(branch, TaskBranch)
            for k, (stage, j, _src, _stride) in enumerate(cfg.layers()):
                layer = branch.layers[k]
                if isinstance(layer, FoldedConv):
                    continue  # already folded
                if not isinstance(layer, TaskLayer):
                    raise ExportError(
                        f"unsupported layer {type(layer).__name__} in task branch '{task}': "
                        "convert folds conv + BN + ReLU task layers only"
                    )
                scale, shift = bn_scale_shift(layer.bn)
                wt = layer.conv.weight.detach().double().numpy() * scale[:, None, None, None]
                conv = _conv(wt, shift, layer.conv.stride[0])
                branch.layers[k] = FoldedConv(conv)
                n = int(layer.conv.weight.numel())
                macs = n * (h >> stage) * (w >> stage)
                c_out = layer.conv.out_channels
                self.report.layers.append(
                    LayerFold(
                        name=f"{task}.{stage}.{j}",
                        form="conv3x3",
                        folded=["batchnorm"],
                        macs_before=macs + 2 * c_out * (h >> stage) * (w >> stage),
                        macs_after=macs,
                        params_before=n + 2 * c_out,
                        params_after=n + c_out,
                    )
                )
                changed = True
        return PassResult(model, changed)


def fold_model(model: ETRNLP, form: str = "auto") -> tuple[ETRNLP, FoldReport]:
    """The deploy form of ``model`` (a folded deep copy in eval mode) and the fold report."""
    if form not in FORMS:
        raise ExportError(f"fold form '{form}' is unknown; expected one of {FORMS}")
    report = FoldReport()
    deploy = copy.deepcopy(model).eval()
    for p in (FoldSharedBanksPass(report, form), FoldTaskBatchNormPass(report)):
        result = p(deploy)
        deploy = result.model
        report.passes[type(p).__name__] = result.changed
    return deploy, report
