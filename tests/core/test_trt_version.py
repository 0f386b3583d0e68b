"""TensorRT version handling: parsing, cache tags, capability decisions and build-option checks."""

from __future__ import annotations

import importlib.util

import pytest

from edge.core.board import JetsonInfo
from edge.core.errors import ConfigError, EdgeError, EngineBuildError
from edge.core.lazy_trt import installed_tensorrt
from edge.core.trt_version import (
    DEFAULT_TARGET,
    Capabilities,
    TrtVersion,
    capabilities,
    feature_check,
    validate_build_options,
)

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


def _jetson(module: str, dla: int, fast_int8: bool = True, model: str = "") -> JetsonInfo:
    return JetsonInfo(
        model=model or f"NVIDIA Jetson {module}",
        module=module,
        soc="tegra234",
        l4t="36.4.3",
        jetpack="6.2",
        dla_cores=dla,
        fast_int8=fast_int8,
        compute_capability="8.7",
        tensorrt_default="10.3.0",
    )


ORIN_NANO = _jetson("orin-nano", 0, model="NVIDIA Jetson Orin Nano Developer Kit")
ORIN_NX_8GB = _jetson("orin-nx-8gb", 1)
AGX_ORIN = _jetson("agx-orin", 2)
NANO = _jetson("nano", 0, fast_int8=False, model="NVIDIA Jetson Nano Developer Kit")
TX2 = _jetson("tx2", 0, fast_int8=False)
THOR = _jetson("thor", 0)


# ---------------------------------------------------------------- TrtVersion (existing behaviour)


def test_parse_and_compare_as_versions() -> None:
    assert TrtVersion.parse("10.3.0.30") == TrtVersion(10, 3, 0)
    assert TrtVersion.parse("8.6.1.post1") == TrtVersion(8, 6, 1)
    assert TrtVersion.parse("10.0") > TrtVersion.parse("5.1")  # "10.0" < "5.1" as strings
    assert TrtVersion.parse("10.13") > TrtVersion.parse("10.3")
    assert str(TrtVersion.parse("10.3")) == "10.3.0"
    with pytest.raises(ConfigError):
        TrtVersion.parse("ten")


def test_nv_tensorrt_version_round_trip() -> None:
    assert TrtVersion(8, 6, 1).nv_tensorrt_version == 8601
    assert TrtVersion(10, 3, 0).nv_tensorrt_version == 100300
    assert TrtVersion(10, 13, 0).nv_tensorrt_version == 101300
    for v in ("8.5.2", "8.6.1", "10.3.0", "10.9.0", "10.13.0", "11.4.1"):
        parsed = TrtVersion.parse(v)
        assert TrtVersion.from_nv_tensorrt_version(parsed.nv_tensorrt_version) == parsed
    assert TrtVersion(10, 3, 0) == DEFAULT_TARGET


# ---------------------------------------------------------------- capabilities


def test_capabilities_trt_8_5() -> None:
    c = capabilities("8.5.2")
    assert c.implicit_int8 and not c.implicit_int8_deprecated
    assert c.builder_precision_flags and c.calibration_profile
    assert not c.strongly_typed_available and not c.strongly_typed_only
    assert c.explicit_batch_flag_needed
    assert c.tensor_api and c.memory_pool_limit
    assert not c.builder_optimization_level and not c.version_compatible_flag
    assert c.dla_supported and not c.dla_requires_strongly_typed
    assert not c.precision_flags_deprecated
    assert c.default_int8_mode == "implicit"
    assert c.source == "version table"


def test_capabilities_trt_8_6() -> None:
    c = capabilities("8.6.2")
    assert c.builder_optimization_level and c.version_compatible_flag
    assert c.explicit_batch_flag_needed and not c.strongly_typed_available
    assert c.implicit_int8 and not c.implicit_int8_deprecated


@pytest.mark.parametrize("version", ["10.3.0", "10.13.0"])
def test_capabilities_trt_10(version: str) -> None:
    c = capabilities(version)
    assert c.implicit_int8 and c.implicit_int8_deprecated  # deprecated since 10.1, still there
    assert c.builder_precision_flags and c.calibration_profile
    assert c.strongly_typed_available and not c.strongly_typed_only
    assert not c.explicit_batch_flag_needed
    assert c.tensor_api and c.memory_pool_limit and c.builder_optimization_level
    assert c.dla_supported and not c.dla_requires_strongly_typed
    # 10.12+ deprecates BuilderFlag.FP16/INT8 (superseded by strong typing): explicit by default
    late = TrtVersion.parse(version) >= TrtVersion(10, 12)
    assert c.precision_flags_deprecated == late
    assert c.default_int8_mode == ("explicit" if late else "implicit")


def test_capabilities_trt_11_0_has_no_weak_typing_and_no_dla() -> None:
    c = capabilities("11.0.0")
    assert not c.implicit_int8 and not c.implicit_int8_deprecated
    assert not c.builder_precision_flags and not c.calibration_profile
    assert c.strongly_typed_available and c.strongly_typed_only
    assert not c.explicit_batch_flag_needed
    assert not c.dla_supported
    assert c.default_int8_mode == "explicit"


def test_capabilities_trt_11_4_1_dla_returns_strongly_typed_only() -> None:
    assert not capabilities("11.4.0").dla_supported
    c = capabilities("11.4.1")
    assert c.dla_supported and c.dla_requires_strongly_typed
    assert not c.implicit_int8 and c.strongly_typed_only


def test_capability_boundaries() -> None:
    assert not capabilities("10.0").implicit_int8_deprecated
    assert capabilities("10.1").implicit_int8_deprecated
    assert not capabilities("8.3").memory_pool_limit and capabilities("8.4").memory_pool_limit
    assert not capabilities("8.4").tensor_api and capabilities("8.5").tensor_api
    assert capabilities("9.9").explicit_batch_flag_needed
    assert not capabilities("10.0").explicit_batch_flag_needed


def test_installed_tensorrt_matches_environment() -> None:
    found = installed_tensorrt()
    if HAVE_TRT:
        assert isinstance(found, TrtVersion)
    else:
        assert found is None


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAVE_TRT, reason="TensorRT is not installed here")
def test_feature_check_agrees_with_version_table_on_real_tensorrt() -> None:
    import importlib

    trt = importlib.import_module("tensorrt")
    probed = feature_check(trt)
    table = capabilities(trt.__version__)
    assert probed.source == "feature test"
    for name in (
        "implicit_int8",
        "builder_precision_flags",
        "strongly_typed_available",
        "strongly_typed_only",
        "tensor_api",
        "memory_pool_limit",
        "builder_optimization_level",
        "version_compatible_flag",
        "calibration_profile",
    ):
        assert getattr(probed, name) == getattr(table, name), name


# ---------------------------------------------------------------- validate_build_options


def _check(version: str | Capabilities = "10.3.0", **kw: object) -> None:
    opts: dict[str, object] = {"precision": "fp16", "int8_mode": None, "dla_core": None}
    opts.update(kw)
    opts.setdefault("device", None)
    validate_build_options(version, **opts)  # type: ignore[arg-type]


def test_valid_options_pass() -> None:
    _check(precision="fp32")
    _check(precision="FP16", device=ORIN_NANO)
    _check(precision="int8", int8_mode="implicit", device=ORIN_NANO)
    _check(precision="int8", int8_mode="explicit", device=AGX_ORIN, dla_core=1)
    _check("11.0.0", precision="int8")  # default mode on TRT 11 is explicit
    _check("11.0.0", precision="int8", int8_mode="explicit", device=THOR)
    _check("11.4.1", precision="fp16", dla_core=0, device=AGX_ORIN)
    _check("8.2.1", precision="fp16", device=NANO)


def test_unknown_precision_and_mode() -> None:
    with pytest.raises(EngineBuildError, match=r"unknown precision 'bf16'.*fp32, fp16, int8"):
        _check(precision="bf16")
    with pytest.raises(EngineBuildError, match="unknown INT8 mode 'qdq'"):
        _check(precision="int8", int8_mode="qdq")
    with pytest.raises(EngineBuildError, match="applies only to --precision int8"):
        _check(precision="fp16", int8_mode="explicit")


def test_implicit_int8_on_trt_11_says_use_explicit() -> None:
    with pytest.raises(EngineBuildError) as e:
        _check("11.0.0", precision="int8", int8_mode="implicit")
    msg = str(e.value)
    assert "TensorRT 11.0.0" in msg
    assert "use --int8-mode explicit (Q/DQ models from edge calibrate)" in msg
    assert isinstance(e.value, EdgeError) and msg.startswith("build: ")


@pytest.mark.parametrize("device", [ORIN_NANO, NANO, TX2, THOR], ids=lambda d: d.module)
def test_dla_on_module_without_dla(device: JetsonInfo) -> None:
    with pytest.raises(EngineBuildError, match=rf"\({device.module}\) has no DLA"):
        _check("10.3.0", precision="fp16", dla_core=0, device=device)


def test_dla_core_index_beyond_module_count() -> None:
    _check(precision="fp16", dla_core=0, device=ORIN_NX_8GB)
    with pytest.raises(EngineBuildError, match=r"has 1 DLA core \(index 0\.\.0\)"):
        _check(precision="fp16", dla_core=1, device=ORIN_NX_8GB)
    with pytest.raises(EngineBuildError, match=r"has 2 DLA cores \(index 0\.\.1\)"):
        _check(precision="int8", dla_core=2, device=AGX_ORIN)
    with pytest.raises(EngineBuildError, match="not a DLA core index"):
        _check(precision="fp16", dla_core=-1)


def test_dla_with_fp32() -> None:
    with pytest.raises(EngineBuildError, match="DLA runs FP16 and INT8 only"):
        _check(precision="fp32", dla_core=0, device=AGX_ORIN)


def test_dla_on_trt_without_dla() -> None:
    with pytest.raises(EngineBuildError, match="cannot build DLA engines"):
        _check("11.0.0", precision="fp16", dla_core=0, device=AGX_ORIN)
    with pytest.raises(EngineBuildError, match="AGX Orin only"):
        _check("11.4.1", precision="fp16", dla_core=0, device=ORIN_NX_8GB)


@pytest.mark.parametrize("device", [NANO, TX2], ids=lambda d: d.module)
def test_int8_on_gpu_without_fast_int8(device: JetsonInfo) -> None:
    with pytest.raises(EngineBuildError, match=r"no fast INT8.*use --precision fp16"):
        _check("8.2.1", precision="int8", int8_mode="implicit", device=device)


def test_validate_accepts_probed_capabilities() -> None:
    caps = capabilities("11.0.0")
    with pytest.raises(EngineBuildError, match="--int8-mode explicit"):
        _check(caps, precision="int8", int8_mode="implicit")


def test_full_version_keeps_the_build_number() -> None:
    """Issue 12 item 4: TensorRT refuses an engine of another build ("expecting library version
    8.6.1.6 got 8.6.1.4"), so the fourth part is kept, printed and compared."""
    built, here = TrtVersion.parse("8.6.1.6"), TrtVersion.parse("8.6.1.4")
    assert str(built) == "8.6.1.6" and built.build == 6
    assert not built.same_build(here)
    assert built == here  # the same release: capabilities and calibration caches agree
    assert built.same_build(TrtVersion.parse("8.6.1"))  # a side without a build: release only
    assert not built.same_build(TrtVersion.parse("8.6.2.6"))
    assert str(TrtVersion.parse("10.3")) == "10.3.0" and TrtVersion.parse("10.3").build is None
    assert capabilities("8.6.1.6").version.build == 6
