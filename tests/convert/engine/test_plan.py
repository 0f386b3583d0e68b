"""``edge build`` decisions without TensorRT: plan_build for TensorRT 8.5, 8.6, 10.3, 10.13, 11.x
on the probed Jetsons of tests/jetson/data, option validation, engine paths and profiles."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.calib.cache import CalibrationCache, write_cache, write_cache_sidecar
from edge.convert.engine.build import _sidecar_info, build_engines
from edge.convert.engine.config import BuildConfig
from edge.convert.engine.plan import engine_is_current, plan_build
from edge.core.board import JetsonInfo, probe_jetson
from edge.core.device_identity import GpuIdentity
from edge.core.errors import BundleError, EngineBuildError, MissingDependencyError
from edge.core.files import sha256_file
from edge.core.manifest import Bundle, load_bundle
from edge.core.sidecar import write_sidecar
from edge.core.trt_version import TrtVersion, capabilities
from tiny_models import make_tiny_bundle

ROOTS = Path(__file__).parents[2] / "jetson" / "data" / "roots"
HEADS = ["heads/defect", "heads/attrs", "heads/mask", "heads/angle"]


def board(name: str) -> JetsonInfo:
    info = probe_jetson(ROOTS / name)
    assert info is not None
    return info


ORIN_NANO = board("orin-nano-jp62")  # no DLA
AGX_ORIN = board("agx-orin-jp61")  # 2 DLA cores
NANO = board("nano-jp46")  # no fast INT8


@pytest.fixture
def bundle(tiny_bundle: Path, tmp_path: Path) -> Bundle:
    """A private copy of the shared tiny bundle (static batch 1), free to add calib/ int8/ to."""
    root = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    return load_bundle(root)


@pytest.fixture(scope="module")
def dynamic_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    root = make_tiny_bundle(tmp_path_factory.mktemp("dyn"), dynamic_batch=True, max_batch=4)
    return load_bundle(root)


def add_cache(
    b: Bundle, part: str, version: str, *, algorithm: str = "entropy", onnx_sha: str | None = None
) -> Path:
    path = b.root / "calib" / f"{part}.cache"
    cache = CalibrationCache.from_amaxes(
        TrtVersion.parse(version), algorithm, {"shared_1": 3.0, "shared_2": 5.5}
    )
    write_cache(path, cache)
    write_cache_sidecar(path, {"onnx_sha256": onnx_sha or sha256_file(b.path(part))})
    return path


def add_all_caches(b: Bundle, version: str) -> None:
    for part in ["trunk", *HEADS]:
        add_cache(b, part, version)


def add_qdq(b: Bundle) -> None:
    """Stand-ins for edge calibrate's Q/DQ files: plan_build only decides which file to use."""
    for part in b.parts:
        dst = b.root / "int8" / f"{part}.onnx"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(b.path(part), dst)


def by_part(jobs: list) -> dict:
    return {j.part: j for j in jobs}


# ------------------------------------------------------------------ FP16 / FP32 per version


def test_fp16_on_jetpack6_orin_nano(bundle: Bundle) -> None:
    jobs = plan_build(bundle, BuildConfig(precision="fp16"), "10.3.0", ORIN_NANO)
    assert [j.part for j in jobs] == ["trunk", *HEADS, "heads_all", "fused"]
    trunk = jobs[0]
    slug = "orin-nano-sm87-trt10.3.0"
    assert trunk.engine == bundle.root / "engines" / slug / "trunk.fp16.engine"
    assert by_part(jobs)["heads/mask"].engine == (
        bundle.root / "engines" / slug / "heads" / "mask.fp16.engine"
    )
    assert trunk.onnx == bundle.root / "trunk.onnx"
    assert (trunk.fp16_flag, trunk.int8_flag, trunk.strongly_typed) == (True, False, False)
    assert trunk.explicit_batch_flag is False  # TensorRT 10 removed implicit batch
    assert trunk.timing_cache == bundle.root / "engines" / slug / "timing.cache"
    assert trunk.flags() == ["FP16"]
    assert trunk.int8_mode is None and trunk.calibration_cache is None


@pytest.mark.parametrize("version", ["8.5.2", "8.6.2"])
def test_tensorrt_8_needs_the_explicit_batch_flag(bundle: Bundle, version: str) -> None:
    job = plan_build(bundle, BuildConfig(precision="fp32", parts=("trunk",)), version, None)[0]
    assert job.explicit_batch_flag and not job.fp16_flag and job.flags() == ["EXPLICIT_BATCH"]


def test_tensorrt_older_than_8_5_is_refused(bundle: Bundle) -> None:
    with pytest.raises(EngineBuildError, match=r"older than 8\.5"):
        plan_build(bundle, BuildConfig(), "8.2.1", NANO)


@pytest.mark.parametrize("version", ["11.0.0", "11.4.1"])
def test_fp16_on_tensorrt_11_is_refused_with_autocast_advice(bundle: Bundle, version: str) -> None:
    with pytest.raises(EngineBuildError, match="no FP16 builder flag") as e:
        plan_build(bundle, BuildConfig(precision="fp16"), version, AGX_ORIN)
    assert "modelopt.onnx.autocast" in str(e.value) and "int8" in str(e.value)


def test_fp32_on_tensorrt_11_is_strongly_typed_without_flags(bundle: Bundle) -> None:
    job = plan_build(bundle, BuildConfig(precision="fp32", parts=("trunk",)), "11.4.1", None)[0]
    assert job.strongly_typed and job.flags() == ["STRONGLY_TYPED"]


# ------------------------------------------------------------------ INT8


@pytest.mark.parametrize("version", ["8.5.2", "8.6.2", "10.3.0", "10.11.0"])
def test_int8_defaults_to_implicit_with_the_bundle_caches(bundle: Bundle, version: str) -> None:
    add_all_caches(bundle, version)
    jobs = plan_build(bundle, BuildConfig(precision="int8"), version, AGX_ORIN)
    assert [j.part for j in jobs] == ["trunk", *HEADS]  # no fused cache: fused is skipped
    assert any("fused skipped" in n for n in jobs[0].notes)
    trunk = by_part(jobs)["trunk"]
    assert trunk.int8_mode == "implicit"
    assert trunk.calibration_cache == bundle.root / "calib" / "trunk.cache"
    assert trunk.calibration_algorithm == "EntropyCalibration2"
    assert trunk.onnx == bundle.root / "trunk.onnx"  # the float model: TensorRT quantizes
    assert trunk.int8_flag and trunk.fp16_flag and not trunk.strongly_typed
    assert by_part(jobs)["heads/angle"].calibration_cache == (
        bundle.root / "calib" / "heads" / "angle.cache"
    )
    deprecated = TrtVersion.parse(version) >= TrtVersion(10, 1)
    assert any("deprecated" in n for n in trunk.notes) == deprecated


def test_implicit_int8_without_cache_says_what_to_do(bundle: Bundle) -> None:
    with pytest.raises(EngineBuildError, match="edge calibrate first") as e:
        plan_build(bundle, BuildConfig(precision="int8"), "10.3.0", ORIN_NANO)
    assert "--calibrate-data" in str(e.value) and "calib/trunk.cache" in str(e.value)


def test_fused_named_explicitly_without_cache_is_an_error(bundle: Bundle) -> None:
    add_all_caches(bundle, "10.3.0")
    with pytest.raises(EngineBuildError, match=r"calib/fused\.cache"):
        plan_build(bundle, BuildConfig(precision="int8", parts=("fused",)), "10.3.0", ORIN_NANO)


def test_calibrate_on_the_spot_when_no_cache(bundle: Bundle) -> None:
    cfg = BuildConfig(precision="int8", calibrate_data="synthetic:?frames=64", parts=("trunk",))
    job = plan_build(bundle, cfg, "10.3.0", ORIN_NANO)[0]
    assert job.calibration_cache is None
    assert job.calibrate_source == "synthetic:?frames=64"
    assert job.calibrate_cache == (
        bundle.root / "engines" / "orin-nano-sm87-trt10.3.0" / "calib" / "trunk.cache"
    )
    assert "calibrating from synthetic" in job.describe()


@pytest.mark.parametrize("version", ["11.0.0", "11.4.1"])
def test_implicit_int8_on_tensorrt_11_says_use_explicit(bundle: Bundle, version: str) -> None:
    add_all_caches(bundle, "10.3.0")
    with pytest.raises(EngineBuildError, match=r"removed in 11\.0; use --int8-mode explicit"):
        plan_build(bundle, BuildConfig(precision="int8", int8_mode="implicit"), version, None)


def test_int8_on_tensorrt_11_defaults_to_explicit_qdq(bundle: Bundle) -> None:
    add_qdq(bundle)
    jobs = plan_build(bundle, BuildConfig(precision="int8"), "11.4.1", AGX_ORIN)
    assert [j.part for j in jobs] == bundle.parts  # Q/DQ fused exists: nothing skipped
    trunk = jobs[0]
    assert trunk.int8_mode == "explicit" and trunk.onnx == bundle.root / "int8" / "trunk.onnx"
    assert trunk.strongly_typed and not trunk.int8_flag and not trunk.fp16_flag
    assert trunk.calibration_cache is None


def test_explicit_int8_on_tensorrt_10_is_weakly_typed_with_int8_flag(bundle: Bundle) -> None:
    add_qdq(bundle)
    cfg = BuildConfig(precision="int8", int8_mode="explicit", parts=("trunk",))
    job = plan_build(bundle, cfg, "10.3.0", ORIN_NANO)[0]
    assert job.onnx == bundle.root / "int8" / "trunk.onnx"
    assert job.int8_flag and job.fp16_flag and not job.strongly_typed
    strong = plan_build(
        bundle,
        BuildConfig(precision="int8", int8_mode="explicit", strongly_typed=True, parts=("trunk",)),
        "10.3.0",
        ORIN_NANO,
    )[0]
    assert strong.strongly_typed and not strong.int8_flag and not strong.fp16_flag


def test_qdq_model_changed_after_calibration_is_refused(bundle: Bundle) -> None:
    add_qdq(bundle)
    qdq = bundle.root / "int8" / "trunk.onnx"
    bundle.manifest = bundle.manifest.with_calibration(
        {"files": {"int8/trunk.onnx": {"sha256": sha256_file(qdq)}}}
    )
    cfg = BuildConfig(precision="int8", int8_mode="explicit", parts=("trunk",))
    assert plan_build(bundle, cfg, "10.3.0", None)[0].onnx == qdq
    qdq.write_bytes(qdq.read_bytes() + b"\0")
    with pytest.raises(EngineBuildError, match="changed after edge calibrate"):
        plan_build(bundle, cfg, "10.3.0", None)


def test_qdq_models_for_profile_must_be_listed_and_unchanged(bundle: Bundle) -> None:
    """Issue 13 item 9: ``edge profile --compare int8`` and ONNX Runtime's int8 check every
    int8/*.onnx they run with ``Bundle.check_calibrated(..., required=True)``: unlisted or
    changed files are refused."""
    add_qdq(bundle)
    qdq = bundle.root / "int8" / "trunk.onnx"
    with pytest.raises(BundleError, match="not listed in the manifest's calibration"):
        bundle.check_calibrated(qdq, required=True)
    bundle.check_calibrated(qdq)  # edge build: an unlisted file is not refused
    bundle.manifest = bundle.manifest.with_calibration(
        {"files": {"int8/trunk.onnx": {"sha256": sha256_file(qdq)}}}
    )
    bundle.check_calibrated(qdq, required=True)
    qdq.write_bytes(qdq.read_bytes() + b"\0")
    with pytest.raises(EngineBuildError, match="changed after edge calibrate"):
        bundle.check_calibrated(qdq, required=True, error=EngineBuildError)


def test_explicit_int8_without_qdq_models_says_calibrate(bundle: Bundle) -> None:
    with pytest.raises(EngineBuildError, match=r"int8/trunk\.onnx.*edge calibrate first"):
        plan_build(bundle, BuildConfig(precision="int8", int8_mode="explicit"), "10.3.0", None)


def test_strongly_typed_refused_where_it_cannot_work(bundle: Bundle) -> None:
    # issue 12 item 9: the message names the version the gate checks (STRONGLY_TYPED: 9.0 on)
    with pytest.raises(EngineBuildError, match="TensorRT 9 or later"):
        plan_build(bundle, BuildConfig(precision="fp32", strongly_typed=True), "8.6.2", None)
    (job, *_) = plan_build(bundle, BuildConfig(precision="fp32", strongly_typed=True), "9.0", None)
    assert job.strongly_typed
    add_all_caches(bundle, "10.3.0")
    with pytest.raises(EngineBuildError, match="weakly typed"):
        plan_build(
            bundle,
            BuildConfig(precision="int8", int8_mode="implicit", strongly_typed=True),
            "10.3.0",
            None,
        )


def test_no_int8_on_a_gpu_without_fast_int8(bundle: Bundle) -> None:
    add_all_caches(bundle, "8.5.2")
    with pytest.raises(EngineBuildError, match="no fast INT8"):
        plan_build(bundle, BuildConfig(precision="int8"), "8.5.2", NANO)


# ------------------------------------------------------------------ calibration cache checks


def test_cache_for_another_tensorrt_release_is_refused(bundle: Bundle) -> None:
    add_all_caches(bundle, "8.5.2")
    with pytest.raises(EngineBuildError, match=r"TensorRT 8\.5\.2.*re-run edge calibrate"):
        plan_build(bundle, BuildConfig(precision="int8"), "10.3.0", ORIN_NANO)
    cfg = BuildConfig(precision="int8", calibrate_data="synthetic:", parts=("trunk",))
    job = plan_build(bundle, cfg, "10.3.0", ORIN_NANO)[0]  # ... unless calibrating here
    assert job.calibration_cache is None and job.calibrate_source == "synthetic:"
    assert any("calibrating here instead" in n for n in job.notes)


def test_cache_of_another_patch_release_is_used_with_a_note(bundle: Bundle) -> None:
    add_cache(bundle, "trunk", "10.3.1")
    job = plan_build(bundle, BuildConfig(precision="int8", parts=("trunk",)), "10.3.0", None)[0]
    assert job.calibration_cache is not None
    assert any("10.3.1" in n and "rejects" in n for n in job.notes)


def test_cache_calibrated_for_another_model_is_refused(bundle: Bundle) -> None:
    add_cache(bundle, "trunk", "10.3.0", onnx_sha="0" * 64)
    with pytest.raises(EngineBuildError, match=r"another trunk\.onnx"):
        plan_build(bundle, BuildConfig(precision="int8", parts=("trunk",)), "10.3.0", None)


def test_dla_refuses_a_minmax_cache(bundle: Bundle) -> None:
    add_cache(bundle, "trunk", "10.3.0", algorithm="minmax")
    cfg = BuildConfig(precision="int8", dla_core=0, parts=("trunk",))
    with pytest.raises(EngineBuildError, match="DLA needs EntropyCalibration2"):
        plan_build(bundle, cfg, "10.3.0", AGX_ORIN)
    job = plan_build(bundle, BuildConfig(precision="int8", parts=("trunk",)), "10.3.0", AGX_ORIN)
    assert job[0].calibration_algorithm == "MinMaxCalibration"  # fine on the GPU


# ------------------------------------------------------------------ DLA


def test_dla_on_orin_nano_is_refused(bundle: Bundle) -> None:
    with pytest.raises(EngineBuildError, match="has no DLA"):
        plan_build(bundle, BuildConfig(precision="fp16", dla_core=0), "10.3.0", ORIN_NANO)


def test_dla_fp32_is_refused(bundle: Bundle) -> None:
    with pytest.raises(EngineBuildError, match="FP16 and INT8 only"):
        plan_build(bundle, BuildConfig(precision="fp32", dla_core=0), "10.3.0", AGX_ORIN)


def test_dla_core_index_beyond_the_module(bundle: Bundle) -> None:
    with pytest.raises(EngineBuildError, match="2 DLA cores"):
        plan_build(bundle, BuildConfig(precision="fp16", dla_core=2), "10.3.0", AGX_ORIN)


def test_dla_fp16_on_agx_orin_with_gpu_fallback(bundle: Bundle) -> None:
    job = plan_build(
        bundle, BuildConfig(precision="fp16", dla_core=1, parts=("trunk",)), "10.3.0", AGX_ORIN
    )[0]
    assert (job.dla_core, job.gpu_fallback) == (1, True)
    assert job.flags() == ["FP16", "DLA1", "GPU_FALLBACK"]
    assert job.engine.parent.name == "agx-orin-sm87-trt10.3.0"


def test_dla_and_gpu_engines_have_different_file_names(bundle: Bundle) -> None:
    """Issue 12 item 5: a DLA build must not overwrite (or be taken for) the GPU engine."""

    def engine(dla: int | None) -> Path:
        cfg = BuildConfig(precision="fp16", dla_core=dla, parts=("trunk", "defect"))
        return plan_build(bundle, cfg, "10.3.0", AGX_ORIN)[1].engine

    names = {engine(None), engine(0), engine(1)}
    assert len(names) == 3
    assert engine(0).name == "defect.fp16.dla0.engine" and engine(None).name == "defect.fp16.engine"


def test_sidecar_records_whether_the_board_has_dla(bundle: Bundle) -> None:
    """Issue 12 item 5: the sidecar says how many DLA cores the board has (0: none)."""
    for board_info, cores in ((AGX_ORIN, 2), (ORIN_NANO, 0), (None, 0)):
        cfg = BuildConfig(precision="fp16", parts=("trunk",))
        job = plan_build(bundle, cfg, "10.3.0", board_info)[0]
        info = _sidecar_info(job, {}, [], 1.0)
        assert info["device"]["dla_cores"] == cores and info["dla_core"] is None
    dla = plan_build(bundle, BuildConfig(precision="fp16", dla_core=1), "10.3.0", AGX_ORIN)[0]
    assert _sidecar_info(dla, {}, [], 1.0)["dla_core"] == 1


def test_dla_on_tensorrt_11_0_is_refused(bundle: Bundle) -> None:
    add_qdq(bundle)
    with pytest.raises(EngineBuildError, match="cannot build DLA engines"):
        plan_build(bundle, BuildConfig(precision="int8", dla_core=0), "11.0.0", AGX_ORIN)


# ------------------------------------------------------------------ shapes, parts, options


def test_static_bundle_has_fixed_shapes(bundle: Bundle) -> None:
    jobs = by_part(plan_build(bundle, BuildConfig(precision="fp32"), "10.3.0", None))
    image = jobs["trunk"].inputs[0]
    assert image.name == "image" and image.min == image.max == (1, 32, 32, 3)
    assert not jobs["trunk"].dynamic
    head = {s.name: s for s in jobs["heads/defect"].inputs}
    assert set(head) == {t.name for t in bundle.taps}
    assert head["shared_4"].opt == (1, 12, 4, 4)
    assert jobs["heads/defect"].outputs == ("defect_logits",)


def test_dynamic_batch_profile_from_the_manifest(dynamic_bundle: Bundle) -> None:
    assert dynamic_bundle.batch == {"dynamic": True, "min": 1, "opt": 1, "max": 4}
    jobs = by_part(plan_build(dynamic_bundle, BuildConfig(precision="fp16"), "10.3.0", None))
    image = jobs["trunk"].inputs[0]
    assert (image.min, image.opt, image.max) == ((1, 32, 32, 3), (1, 32, 32, 3), (4, 32, 32, 3))
    assert jobs["trunk"].dynamic and jobs["fused"].dynamic
    taps = {s.name: s for s in jobs["heads/mask"].inputs}
    assert (taps["shared_2"].min, taps["shared_2"].max) == ((1, 12, 8, 8), (4, 12, 8, 8))
    assert not jobs["trunk"].calibration_profile  # only implicit INT8 calibrates


def test_dynamic_implicit_int8_sets_a_calibration_profile(dynamic_bundle: Bundle) -> None:
    cfg = BuildConfig(precision="int8", calibrate_data="synthetic:", parts=("trunk",))
    assert plan_build(dynamic_bundle, cfg, "8.6.2", None)[0].calibration_profile
    assert not capabilities("11.4.1").calibration_profile


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("trunk",), ["trunk"]),
        (("heads",), [*HEADS, "heads_all"]),  # the per-task heads and the merged one
        (("defect", "fused"), ["heads/defect", "fused"]),
        ("heads/angle,trunk", ["trunk", "heads/angle"]),
    ],
)
def test_part_selection(bundle: Bundle, parts: tuple[str, ...] | str, expected: list[str]) -> None:
    cfg = BuildConfig(precision="fp32", parts=parts)  # type: ignore[arg-type]
    assert [j.part for j in plan_build(bundle, cfg, "10.3.0", None)] == expected


def test_unknown_part_lists_the_bundle_parts(bundle: Bundle) -> None:
    with pytest.raises(EngineBuildError, match=r"'wheel' is not a part.*heads/defect"):
        plan_build(bundle, BuildConfig(parts=("wheel",)), "10.3.0", None)


def test_builder_options_are_carried_and_checked(bundle: Bundle) -> None:
    cfg = BuildConfig(
        precision="fp32",
        workspace_mib=256,
        builder_optimization_level=0,
        timing_cache=bundle.root / "tc.bin",
        parts=("trunk",),
    )
    job = plan_build(bundle, cfg, "10.3.0", None)[0]
    assert job.workspace_bytes == 256 * 1024 * 1024
    assert job.optimization_level == 0 and job.timing_cache == bundle.root / "tc.bin"
    assert any("does not use the timing cache" in n for n in job.notes)
    assert (
        plan_build(bundle, BuildConfig(use_timing_cache=False, precision="fp32"), "10.3.0", None)[
            0
        ].timing_cache
        is None
    )
    assert plan_build(bundle, cfg, "8.5.2", None)[0].optimization_level is None  # 8.6+
    for bad in (
        dict(workspace_mib=0),
        dict(builder_optimization_level=6),
        dict(calibrate_frames=0),
        dict(calibration_algorithm="percentile"),
    ):
        with pytest.raises(EngineBuildError):
            BuildConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(EngineBuildError, match="unknown precision"):
        plan_build(bundle, BuildConfig(precision="fp8"), "10.3.0", None)


# ------------------------------------------------------------------ calibrating on the spot


def test_calibration_feeds_go_through_the_runtime_preprocessing(dynamic_bundle: Bundle) -> None:
    from edge.convert.engine.calibrators import calibration_batches
    from edge.runtime.backends.registry import create_backend

    cfg = BuildConfig(
        precision="int8",
        calibrate_data="synthetic:?frames=5",
        calibrate_frames=3,
        parts=("trunk", "mask"),
    )
    trunk, head = plan_build(dynamic_bundle, cfg, "10.3.0", AGX_ORIN)
    feeds = list(calibration_batches(trunk))
    assert len(feeds) == 3  # opt batch 1, stopped at calibrate_frames
    assert set(feeds[0]) == {"image"}
    assert feeds[0]["image"].shape == (1, 32, 32, 3) and feeds[0]["image"].dtype == np.uint8
    head_feeds = list(calibration_batches(head))
    assert set(head_feeds[0]) == {s.name for s in head.inputs}  # the trunk's taps
    with create_backend("onnxruntime").load(dynamic_bundle.path("trunk")) as ort:
        taps = ort.run(feeds[1])
    for name, value in head_feeds[1].items():
        np.testing.assert_array_equal(value, taps[name])


# ------------------------------------------------------------------ up-to-date check


def test_engine_is_current_follows_the_sidecar(bundle: Bundle) -> None:
    gpu = GpuIdentity("Orin", "8.7", "pycuda")
    job = plan_build(
        bundle, BuildConfig(precision="fp16", parts=("trunk",)), "10.3.0", ORIN_NANO, gpu=gpu
    )[0]
    assert not engine_is_current(job)  # nothing built yet
    job.engine.parent.mkdir(parents=True)
    job.engine.write_bytes(b"engine bytes as TensorRT would have written them")
    info = {
        "part": "trunk",
        "precision": "fp16",
        "tensorrt": "10.3.0",
        "device": {"name": "Orin", "compute_capability": "8.7"},
        "onnx_sha256": sha256_file(job.onnx),
        "strongly_typed": False,
    }
    write_sidecar(job.engine, info)
    assert engine_is_current(job)
    other = plan_build(
        bundle, BuildConfig(precision="fp16", parts=("trunk",)), "10.3.1", ORIN_NANO, gpu=gpu
    )[0]
    assert other.engine != job.engine  # another TensorRT builds into another folder
    write_sidecar(job.engine, {**info, "precision": "fp32"})
    assert not engine_is_current(job)
    write_sidecar(job.engine, info)
    job.engine.write_bytes(b"replaced")
    assert not engine_is_current(job)


def test_another_tensorrt_build_number_is_not_up_to_date(bundle: Bundle) -> None:
    """Issue 12 item 4: after 8.6.1.4 -> 8.6.1.6 the engine no longer deserializes, so edge build
    must not call it current, and builds into another folder."""
    gpu = GpuIdentity("Orin", "8.7", "pycuda")
    cfg = BuildConfig(precision="fp16", parts=("trunk",))
    old = plan_build(bundle, cfg, "8.6.1.4", ORIN_NANO, gpu=gpu)[0]
    new = plan_build(bundle, cfg, "8.6.1.6", ORIN_NANO, gpu=gpu)[0]
    assert old.engine.parent.name == "orin-nano-sm87-trt8.6.1.4"
    assert new.engine.parent != old.engine.parent
    new.engine.parent.mkdir(parents=True)
    new.engine.write_bytes(b"an engine of 8.6.1.4 copied into the new folder")
    info = {
        "part": "trunk",
        "precision": "fp16",
        "tensorrt": "8.6.1.4",
        "device": {"name": "Orin", "compute_capability": "8.7"},
        "onnx_sha256": sha256_file(new.onnx),
        "strongly_typed": False,
    }
    write_sidecar(new.engine, info)
    assert not engine_is_current(new)
    write_sidecar(new.engine, {**info, "tensorrt": "8.6.1.6"})
    assert engine_is_current(new)


def test_deprecated_precision_flags_are_said_once_and_strong_typing_preferred(
    bundle: Bundle,
) -> None:
    """Issue 12 item 8: TensorRT 10.12+ deprecates BuilderFlag.FP16/INT8 ("Superseded by strong
    typing", NvInfer.h 10.12): FP16 still uses the flag and says so on the first job only;
    INT8 defaults to the explicit Q/DQ models on a strongly typed network; FP32 is strongly
    typed. 10.3 is unchanged."""
    fp16 = plan_build(bundle, BuildConfig(precision="fp16"), "10.13.0", AGX_ORIN)
    said = [n for j in fp16 for n in j.notes if "BuilderFlag.FP16 is deprecated" in n]
    assert len(said) == 1 and said[0] in fp16[0].notes
    assert fp16[0].fp16_flag and not fp16[0].strongly_typed
    add_qdq(bundle)
    int8 = plan_build(bundle, BuildConfig(precision="int8"), "10.13.0", AGX_ORIN)[0]
    assert int8.int8_mode == "explicit" and int8.strongly_typed
    assert not (int8.int8_flag or int8.fp16_flag) and int8.onnx.parent.name == "int8"
    assert not any("deprecated" in n for n in int8.notes)
    fp32 = plan_build(bundle, BuildConfig(precision="fp32", parts=("trunk",)), "10.13.0", None)
    assert fp32[0].strongly_typed
    weak = BuildConfig(precision="int8", strongly_typed=False)
    assert plan_build(bundle, weak, "10.13.0", AGX_ORIN)[0].int8_flag  # told: weakly typed
    old = plan_build(bundle, BuildConfig(precision="fp16"), "10.3.0", AGX_ORIN)
    assert not any("BuilderFlag" in n for j in old for n in j.notes)
    assert not plan_build(bundle, BuildConfig(precision="fp32"), "10.3.0", None)[0].strongly_typed


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is here")
def test_build_engines_without_tensorrt_says_where_to_build(bundle: Bundle) -> None:
    with pytest.raises(MissingDependencyError, match="on the device"):
        build_engines(bundle.root, BuildConfig())
