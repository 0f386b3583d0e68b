from __future__ import annotations

import pytest
import torch

from edge.convert.fold import FoldedConv, FoldedShared, fold_model
from edge.core.config import PRIMITIVE_KINDS
from edge.core.errors import ExportError
from edge.family.model import ETRNLP, SharedLayer, TaskLayer
from tiny_models import tiny_config, tiny_model


def _model(**kw: object) -> ETRNLP:
    return tiny_model(tiny_config(**kw), spread=1.0)  # type: ignore[no-any-return]


def _max_rel_error(a: ETRNLP, b: ETRNLP) -> float:
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ra, rb = a(x), b(x)
    return max(float((ra[k] - rb[k]).abs().max() / ra[k].abs().max()) for k in ra)


BANKS = [(k,) for k in PRIMITIVE_KINDS] + [
    ("lbc", "gauss", "avgpool", "identity"),
    ("lbc", "gauss", "dilated", "avgpool"),
    ("lbc", "dilated", "maxpool"),
    ("gauss", "dilated", "avgpool", "identity", "maxpool"),
]


@pytest.mark.parametrize("form", ["single", "split", "bank"])
@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("bank", BANKS, ids=lambda b: "+".join(b))
def test_folded_equals_unfolded(bank: tuple[str, ...], depthwise: bool, form: str) -> None:
    m = _model(primitives=bank, depthwise=depthwise)
    folded, report = fold_model(m, form)
    assert _max_rel_error(m, folded) < 1e-5
    assert not any(isinstance(x, SharedLayer) for x in folded.shared)
    shared = [r for r in report.layers if r.name.startswith("shared")]
    for rec in shared:
        if "maxpool" in bank:
            assert rec.kept.get("maxpool", "").startswith("nonlinear")


def test_the_input_model_is_not_modified() -> None:
    m = _model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fold_model(m)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert isinstance(m.shared[0], SharedLayer)


def test_linear_bank_folds_into_one_conv_per_layer() -> None:
    m = _model(
        primitives=("lbc", "gauss", "avgpool", "identity"), widths=(16, 16, 16), depths=(1, 1, 1)
    )
    folded, report = fold_model(m, "single")
    for layer in folded.shared:
        assert isinstance(layer, FoldedShared)
        assert len(layer.convs) == 1 and layer.convs[0].kernel_size == (3, 3)
        assert not len(layer.pooled)
    assert report.totals("shared")["macs_after"] < report.totals("shared")["macs_before"]


def test_dilated_embeds_in_5x5_or_splits() -> None:
    m = _model(primitives=("lbc", "dilated"), widths=(16, 16, 16), depths=(1, 1, 1))
    single, _ = fold_model(m, "single")
    split, _ = fold_model(m, "split")
    assert single.shared[1].convs[0].kernel_size == (5, 5)
    assert [c.dilation for c in split.shared[1].convs] == [(1, 1), (2, 2)]


def test_maxpool_stays_an_op_and_siblings_fold() -> None:
    m = _model(primitives=("gauss", "identity", "maxpool"), widths=(16, 16, 16))
    folded, report = fold_model(m, "single")
    layer = folded.shared[1]
    assert len(layer.convs) == 1 and len(layer.pooled) == 1
    rec = next(r for r in report.layers if r.name == "shared.2.0")
    assert "maxpool" in rec.kept and "gauss" in rec.folded and "identity" in rec.folded


def test_auto_picks_fewest_macs_and_records_why() -> None:
    m = _model(
        primitives=("lbc", "gauss", "avgpool", "identity"),
        depthwise=True,
        widths=(32, 32, 32),
        depths=(1, 1, 1),
    )
    _, report = fold_model(m, "auto")
    for rec in (r for r in report.layers if r.name.startswith("shared")):
        assert rec.macs_after == min(rec.candidates.values())
        if rec.form == "bank":
            assert all("MACs" in why for why in rec.kept.values())


def test_task_batchnorm_folds() -> None:
    m = _model()
    folded, report = fold_model(m)
    for branch in folded.branches.values():
        assert all(isinstance(x, FoldedConv) for x in branch.layers)
        assert not any(isinstance(x, (TaskLayer, torch.nn.BatchNorm2d)) for x in branch.modules())
    assert any(r.folded == ["batchnorm"] for r in report.layers)


def test_unknown_form() -> None:
    with pytest.raises(ExportError, match="fold form"):
        fold_model(_model(), "magic")


def test_unsupported_layer_is_a_clear_error() -> None:
    m = _model()
    m.shared[1] = torch.nn.Identity()
    with pytest.raises(ExportError, match="unsupported layer Identity"):
        fold_model(m)


def test_folding_twice_changes_nothing() -> None:
    from edge.convert.fold import FoldReport, FoldSharedBanksPass, FoldTaskBatchNormPass

    folded, _ = fold_model(_model())
    report = FoldReport()
    assert not FoldSharedBanksPass(report)(folded).changed
    assert not FoldTaskBatchNormPass(report)(folded).changed
    assert report.layers == []


def test_the_report_says_which_passes_changed_the_model() -> None:
    _, report = fold_model(_model())
    assert report.passes == {"FoldSharedBanksPass": True, "FoldTaskBatchNormPass": True}
    assert report.to_dict()["passes"] == report.passes
