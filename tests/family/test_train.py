from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.core.config import ModelConfig, TaskSpec
from edge.core.errors import DatasetError
from edge.data.demo_line import demo_tasks
from edge.family.checkpoint import load_checkpoint
from edge.family.train import TrainConfig, encode_target, train
from tiny_models import tiny_config


def _demo_tiny() -> ModelConfig:
    return ModelConfig(
        tasks=demo_tasks(), widths=(8, 16), depths=(1, 1), gamma=0.75, input_size=(32, 32)
    )


def test_train_on_demo_line_writes_a_checkpoint_with_metrics(tmp_path: Path) -> None:
    cfg = TrainConfig(
        out=tmp_path / "m.pt",
        train_frames=32,
        val_frames=16,
        epochs=2,
        batch_size=16,
        progress=False,
    )
    path = train(cfg, _demo_tiny(), command="edge train ...")
    ck = load_checkpoint(path)
    assert set(ck.meta["metrics"]) == {"defect", "part", "mask", "angle"}
    assert "accuracy" in ck.meta["metrics"]["defect"] and "iou" in ck.meta["metrics"]["mask"]
    assert len(ck.meta["history"]) == 2
    assert ck.meta["held_out"]["indices"][0] >= 10_000_000


def test_training_reduces_the_loss(tmp_path: Path) -> None:
    cfg = TrainConfig(
        out=tmp_path / "m.pt",
        train_frames=64,
        val_frames=0,
        epochs=4,
        batch_size=16,
        lr=5e-3,
        progress=False,
    )
    ck = load_checkpoint(train(cfg, _demo_tiny()))
    losses = [h["loss"] for h in ck.meta["history"]]
    assert losses[-1] < losses[0]


def test_train_on_a_labelled_folder(tmp_path: Path) -> None:
    from edge.data.demo_line import LineConfig, write_image_folder

    folder = write_image_folder(tmp_path / "data", 24, LineConfig(seed=5))
    cfg = TrainConfig(
        out=tmp_path / "m.pt",
        data=str(folder),
        train_frames=16,
        val_frames=8,
        epochs=1,
        batch_size=8,
        progress=False,
    )
    ck = load_checkpoint(train(cfg, _demo_tiny()))
    assert ck.meta["held_out"] == {"source": str(folder), "samples": 8}


def test_missing_folder_and_too_few_samples(tmp_path: Path) -> None:
    from edge.data.demo_line import write_image_folder

    with pytest.raises(DatasetError, match=r"labels\.jsonl"):
        train(
            TrainConfig(out=tmp_path / "m.pt", data=str(tmp_path / "nope"), progress=False),
            _demo_tiny(),
        )
    folder = write_image_folder(tmp_path / "d", 4)
    with pytest.raises(DatasetError, match="asked for"):
        train(
            TrainConfig(
                out=tmp_path / "m.pt",
                data=str(folder),
                train_frames=8,
                val_frames=0,
                progress=False,
            ),
            _demo_tiny(),
        )


def test_encode_target_kinds_and_errors() -> None:
    cfg = tiny_config()
    defect, attrs, mask, angle = cfg.tasks
    assert int(encode_target(defect, "hole", (4, 4), "x")) == 2
    assert encode_target(attrs, ["rusty"], (4, 4), "x").tolist() == [0.0, 1.0, 0.0]
    assert float(encode_target(angle, 15.0, (4, 4), "x")[0]) == pytest.approx(0.5)
    m = encode_target(mask, np.full((8, 8), 255, np.uint8), (4, 4), "x")
    assert m.shape == (4, 4) and set(np.unique(m)) == {1}
    with pytest.raises(DatasetError, match="label 'dent'"):
        encode_target(defect, "dent", (4, 4), "frame 3")
    with pytest.raises(DatasetError, match="not valid"):
        encode_target(
            TaskSpec("seg3", "segmentation", ("a", "b", "c")),
            np.full((4, 4), 7, np.uint8),
            (4, 4),
            "x",
        )
