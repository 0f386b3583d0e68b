"""Decoding raw outputs per the manifest's decode specs (numbers worked out by hand)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from edge.core.errors import BundleError
from edge.core.manifest import load_bundle
from edge.runtime.decode import Decoder, argmax_channels, decoders_from_manifest

CLS = Decoder("defect", {"type": "softmax_argmax", "labels": ["ok", "scratch", "hole"], "axis": 1})


def test_classification_label_prob_and_probs() -> None:
    r = CLS.decode(np.array([0.0, math.log(3.0), 0.0], np.float32))
    assert r.data["label"] == "scratch" and r.data["index"] == 1
    assert r.data["prob"] == pytest.approx(0.6, abs=1e-6)
    assert r.data["probs"] == pytest.approx({"ok": 0.2, "scratch": 0.6, "hole": 0.2}, abs=1e-6)
    assert r.get() == "scratch" and r.get("probs.hole") == pytest.approx(0.2, abs=1e-6)
    assert r.brief() == "scratch 0.60" and r.mask is None
    big = CLS.decode(np.array([1000.0, 0.0, -1000.0], np.float32))  # no overflow
    assert big.data["prob"] == 1.0 and big.data["label"] == "ok"


def test_multilabel_threshold() -> None:
    d = Decoder(
        "attrs",
        {"type": "sigmoid_threshold", "labels": ["shiny", "rusty", "bent"], "threshold": 0.7},
    )
    r = d.decode(np.array([0.0, math.log(4.0), 5.0], np.float32))  # p = 0.5, 0.8, 0.993
    assert r.data["on"] == ["rusty", "bent"]
    assert r.data["probs"]["shiny"] == pytest.approx(0.5)
    assert r.data["probs"]["rusty"] == pytest.approx(0.8, abs=1e-6)
    assert r.brief() == "rusty,bent"


def test_regression_scale_offset_unit() -> None:
    d = Decoder(
        "angle", {"type": "affine", "names": ["angle"], "scale": 30.0, "offset": 5.0, "unit": "deg"}
    )
    r = d.decode(np.array([-0.5], np.float32))
    assert r.data == {"value": -10.0, "unit": "deg"} and r.get() == -10.0
    two = Decoder("pose", {"type": "affine", "names": ["x", "y"], "scale": 2.0, "unit": "mm"})
    r2 = two.decode(np.array([1.0, -1.5], np.float32))
    assert r2.data == {"values": {"x": 2.0, "y": -3.0}, "unit": "mm"}
    assert r2.get("values.y") == -3.0


def test_segmentation_mask_and_fractions() -> None:
    d = Decoder("mask", {"type": "argmax_mask", "labels": ["background", "scratch", "hole"]})
    raw = np.zeros((3, 4, 5), np.float32)
    raw[1, 0, :3] = 1.0  # 3 scratch pixels
    raw[2, 3, :] = 2.0  # 5 hole pixels
    r = d.decode(raw)
    assert r.mask is not None and r.mask.dtype == np.uint8 and r.mask.shape == (4, 5)
    assert int((r.mask == 1).sum()) == 3 and int((r.mask == 2).sum()) == 5
    assert r.data["pixels"] == 8 and r.data["shape"] == [4, 5]
    assert r.data["fraction"] == pytest.approx(8 / 20)
    assert r.data["fractions"] == pytest.approx({"scratch": 3 / 20, "hole": 5 / 20})
    assert "mask" not in json.dumps(r.to_json())  # the array stays out of the JSON
    assert r.brief() == "40.0% px"


def test_shape_and_spec_errors() -> None:
    with pytest.raises(BundleError, match=r"\(4,\).*re-run edge convert"):
        CLS.decode(np.zeros(4, np.float32))
    with pytest.raises(BundleError, match=r"\(3, H, W\)"):
        CLS.__class__("m", {"type": "argmax_mask", "labels": ["a", "b", "c"]}).decode(
            np.zeros((3, 4), np.float32)
        )
    with pytest.raises(BundleError, match="unknown decode type 'nms'"):
        Decoder("det", {"type": "nms", "labels": ["a"]})
    with pytest.raises(BundleError, match="no 'names'"):
        Decoder("angle", {"type": "affine", "labels": ["angle"]})


def test_decoders_from_a_real_manifest(tiny_bundle: Path) -> None:
    manifest = load_bundle(tiny_bundle).manifest
    decoders = decoders_from_manifest(manifest)
    assert {t: d.type for t, d in decoders.items()} == {
        "defect": "softmax_argmax",
        "attrs": "sigmoid_threshold",
        "mask": "argmax_mask",
        "angle": "affine",
    }
    assert decoders["defect"].labels == ("ok", "scratch", "hole", "stain")
    with pytest.raises(BundleError, match="unknown decode type None"):
        entry = dataclasses.replace(manifest.tasks["defect"], decode={})
        decoders_from_manifest(dataclasses.replace(manifest, tasks={"defect": entry}))


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_argmax_channels_equals_numpy_argmax_with_ties(classes: int) -> None:
    rng = np.random.default_rng(classes)
    raw = rng.standard_normal((classes, 16, 24)).astype(np.float32)
    raw[:, :3, :3] = 0.5  # ties go to the lowest class, as with np.argmax
    got = argmax_channels(raw)
    assert got.dtype == np.uint8 and got.shape == (16, 24)
    np.testing.assert_array_equal(got, np.argmax(raw, axis=0))


@pytest.mark.parametrize(
    "spec, shape",
    [
        ({"type": "softmax_argmax", "labels": ["ok", "scratch", "hole"]}, (3,)),
        ({"type": "sigmoid_threshold", "labels": ["a", "b"], "threshold": 0.4}, (2,)),
        ({"type": "affine", "names": ["angle"], "scale": 2.5, "offset": -1.0}, (1,)),
        ({"type": "affine", "names": ["x", "y"]}, (2,)),
        ({"type": "argmax_mask", "labels": ["bg", "defect"]}, (2, 6, 5)),
        ({"type": "argmax_mask", "labels": ["bg", "a", "b"]}, (3, 6, 5)),
    ],
)
def test_a_batch_decodes_exactly_as_its_frames_one_by_one(spec: dict, shape: tuple) -> None:
    d = Decoder("t", spec)
    raw = np.random.default_rng(7).normal(size=(5, *shape)).astype(np.float32)
    raw[2].flat[0] = np.nan  # one broken frame among good ones
    batch = d.decode_batch(raw)
    one = [d.decode(r) for r in raw]
    assert [json.dumps(r.data) for r in batch] == [json.dumps(r.data) for r in one]
    assert batch[2].error is not None and all(
        r.error is None for i, r in enumerate(batch) if i != 2
    )
    for b, o in zip(batch, one):
        assert (b.mask is None) == (o.mask is None)
        if b.mask is not None and o.mask is not None:
            assert np.array_equal(b.mask, o.mask) and b.mask.dtype == np.uint8
    with pytest.raises(BundleError, match="per frame"):
        d.decode_batch(raw[:, :0])
    assert d.decode_batch(raw[:0]) == []


def test_argmax_channels_on_a_batch_axis_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    for c in (2, 4):
        raw = rng.normal(size=(3, c, 7, 9)).astype(np.float32)
        want = np.argmax(raw, axis=1).astype(np.uint8)
        assert np.array_equal(argmax_channels(raw, axis=1), want)
        assert np.array_equal(argmax_channels(raw[1]), want[1])
