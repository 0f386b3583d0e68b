"""All TensorRT version handling lives here: parsing, comparison, the calibration-cache version tag,
and (see ``capabilities``) what a given TensorRT supports.

Versions are compared as versions (tuples), never as strings: ``"10.0" < "5.1"`` as strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering
from typing import TYPE_CHECKING

from edge.core.errors import ConfigError, EngineBuildError

if TYPE_CHECKING:
    from edge.core.board import JetsonInfo

_VERSION_RE = re.compile(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:\.(\d+))?")


@total_ordering
@dataclass(frozen=True)
class TrtVersion:
    """A TensorRT version: major.minor.patch, and the build number where it is known.

    Ordering and ``==`` use major.minor.patch (the release: what capabilities and calibration
    caches depend on); ``same_build`` also compares the build, which is what deserializing an
    engine checks ("expecting library version 8.6.1.6 got 8.6.1.4"). ``str`` gives all the
    parts that are known.
    """

    major: int
    minor: int = 0
    patch: int = 0
    build: int | None = None

    @classmethod
    def parse(cls, text: str | TrtVersion) -> TrtVersion:
        """Parse '10.3', '10.3.0', '10.3.0.30', '8.6.1.post1' ... into a TrtVersion."""
        if isinstance(text, TrtVersion):
            return text
        m = _VERSION_RE.match(str(text))
        if not m:
            raise ConfigError(
                f"'{text}' is not a TensorRT version; expected MAJOR.MINOR[.PATCH], e.g. 10.3.0"
            )
        major, minor, patch, build = (int(g) if g is not None else None for g in m.groups())
        return cls(major or 0, minor or 0, patch or 0, build)

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, TrtVersion):
            return NotImplemented
        return self.key < other.key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrtVersion):
            return NotImplemented
        return self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __str__(self) -> str:
        build = "" if self.build is None else f".{self.build}"
        return f"{self.major}.{self.minor}.{self.patch}{build}"

    @property
    def release(self) -> TrtVersion:
        """This version without its build number."""
        return TrtVersion(self.major, self.minor, self.patch)

    def same_build(self, other: TrtVersion) -> bool:
        """Whether an engine built with one can be deserialized by the other: the same release
        and, where both know it, the same build."""
        if self.key != other.key:
            return False
        return self.build is None or other.build is None or self.build == other.build

    @property
    def nv_tensorrt_version(self) -> int:
        """NV_TENSORRT_VERSION as TensorRT computes it, the number in a calibration-cache header.

        TensorRT 8.x and earlier: M*1000 + m*100 + p (8.6.1 -> 8601).
        TensorRT 10 and later: M*10000 + m*100 + p (10.3.0 -> 100300, 10.13.0 -> 101300).
        """
        if self.major >= 10:
            return self.major * 10000 + self.minor * 100 + self.patch
        return self.major * 1000 + self.minor * 100 + self.patch

    @classmethod
    def from_nv_tensorrt_version(cls, number: int) -> TrtVersion:
        """Inverse of ``nv_tensorrt_version`` (8601 -> 8.6.1, 100300 -> 10.3.0)."""
        if number >= 100000:
            return cls(number // 10000, (number // 100) % 100, number % 100)
        return cls(number // 1000, (number // 100) % 10, number % 100)


DEFAULT_TARGET = TrtVersion(10, 3, 0)
"""The TensorRT of JetPack 6.1/6.2 (Orin), the default target for caches and engines."""


# --------------------------------------------------------------------------------------------
# What a TensorRT version can do (decided from the version; see ``feature_check`` for a module)
# --------------------------------------------------------------------------------------------

PRECISIONS = ("fp32", "fp16", "int8")
INT8_MODES = ("implicit", "explicit")

_V8_4 = TrtVersion(8, 4)
_V8_5 = TrtVersion(8, 5)
_V8_6 = TrtVersion(8, 6)
_V9 = TrtVersion(9)
_V10 = TrtVersion(10)
_V10_1 = TrtVersion(10, 1)
_V10_12 = TrtVersion(10, 12)
_V11 = TrtVersion(11)
_V11_4_1 = TrtVersion(11, 4, 1)


@dataclass(frozen=True)
class Capabilities:
    """What the engine builder may use with one TensorRT version.

    Sources (NVIDIA deprecated-API lists and the 10.x -> 11.x migration guide):

    - ``implicit_int8``: calibrator INT8 (``IInt8EntropyCalibrator2`` + ``BuilderFlag.INT8``);
      deprecated in 10.1, removed in 11.0.
    - ``builder_precision_flags``: ``BuilderFlag.FP16``/``INT8`` exist (weak typing); gone in 11.
      ``precision_flags_deprecated``: 10.12+ deprecates them "Superseded by strong typing"
      (NvInfer.h), so there explicit INT8 on a strongly typed network is the default.
    - ``strongly_typed_available``: ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``. Absent from
      the 8.x API (8.6 lists only EXPLICIT_BATCH/EXPLICIT_PRECISION); present from 9.x on (ONNX
      Runtime's TensorRT provider sets it under ``NV_TENSORRT_MAJOR > 8``; the exact 9.x minor is
      unverified). 9.x never shipped for Jetson, so on a Jetson this means 10.x and later.
    - ``strongly_typed_only``: 11.x, every network is strongly typed (the flag is ignored).
    - ``explicit_batch_flag_needed``: < 10 networks must be created with EXPLICIT_BATCH; 10.0
      removed implicit batch and deprecated the flag.
    - ``tensor_api``: ``set_tensor_address`` + ``execute_async_v3`` (8.5+).
    - ``memory_pool_limit``: ``set_memory_pool_limit`` (8.4+), else ``max_workspace_size``.
    - ``builder_optimization_level`` and ``version_compatible_flag``: 8.6+.
    - ``dla_supported``: 8.x-10.x; in 11.x only from 11.4.1, on AGX Orin, with strongly typed
      networks (``dla_requires_strongly_typed``). 11.0-11.3 had no Jetson support at all.
    - ``calibration_profile``: ``set_calibration_profile`` exists (< 11).
    """

    version: TrtVersion
    implicit_int8: bool
    implicit_int8_deprecated: bool
    builder_precision_flags: bool
    precision_flags_deprecated: bool
    strongly_typed_available: bool
    strongly_typed_only: bool
    explicit_batch_flag_needed: bool
    tensor_api: bool
    memory_pool_limit: bool
    builder_optimization_level: bool
    dla_supported: bool
    dla_requires_strongly_typed: bool
    version_compatible_flag: bool
    calibration_profile: bool
    source: str = "version table"
    """'version table' (decided from the number) or 'feature test' (probed on a real module)."""

    @property
    def default_int8_mode(self) -> str:
        """The INT8 path to use when the user did not choose: implicit while it exists and
        its builder flag is not deprecated (before 10.12), else explicit."""
        return (
            "implicit" if self.implicit_int8 and not self.precision_flags_deprecated else "explicit"
        )


def capabilities(version: str | TrtVersion) -> Capabilities:
    """Decide from the version number alone what TensorRT ``version`` supports."""
    v = TrtVersion.parse(version)
    weak_typing = v < _V11
    return Capabilities(
        version=v,
        implicit_int8=weak_typing,
        implicit_int8_deprecated=_V10_1 <= v < _V11,
        builder_precision_flags=weak_typing,
        precision_flags_deprecated=_V10_12 <= v < _V11,
        strongly_typed_available=v >= _V9,
        strongly_typed_only=v >= _V11,
        explicit_batch_flag_needed=v < _V10,
        tensor_api=v >= _V8_5,
        memory_pool_limit=v >= _V8_4,
        builder_optimization_level=v >= _V8_6,
        dla_supported=v < _V11 or v >= _V11_4_1,
        dla_requires_strongly_typed=v >= _V11,
        version_compatible_flag=v >= _V8_6,
        calibration_profile=weak_typing,
    )


def feature_check(trt_module: object, version: str | TrtVersion | None = None) -> Capabilities:
    """Capabilities of a real, imported ``tensorrt`` module, probed by feature where possible.

    The version table answers only what cannot be probed (whether an API is *deprecated*, whether
    DLA is allowed in this release). Everything that is an attribute is looked up on the module, so
    a TensorRT release whose API differs from the table is judged by what it really has.
    ``version`` defaults to ``trt_module.__version__``.
    """
    if version is None:
        version = str(getattr(trt_module, "__version__", ""))
    table = capabilities(version)

    def has(owner: str, name: str) -> bool:
        obj = getattr(trt_module, owner, None)
        return obj is not None and hasattr(obj, name)

    implicit_int8 = has("BuilderFlag", "INT8") and hasattr(trt_module, "IInt8EntropyCalibrator2")
    precision_flags = has("BuilderFlag", "FP16") and has("BuilderFlag", "INT8")
    strongly_typed = has("NetworkDefinitionCreationFlag", "STRONGLY_TYPED")
    dla_api = has("DeviceType", "DLA")
    return Capabilities(
        version=table.version,
        implicit_int8=implicit_int8,
        implicit_int8_deprecated=implicit_int8 and table.implicit_int8_deprecated,
        builder_precision_flags=precision_flags,
        precision_flags_deprecated=precision_flags and table.precision_flags_deprecated,
        strongly_typed_available=strongly_typed,
        strongly_typed_only=strongly_typed and (table.strongly_typed_only or not precision_flags),
        explicit_batch_flag_needed=(
            table.explicit_batch_flag_needed
            and has("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH")
        ),
        tensor_api=has("IExecutionContext", "execute_async_v3"),
        memory_pool_limit=has("IBuilderConfig", "set_memory_pool_limit"),
        builder_optimization_level=has("IBuilderConfig", "builder_optimization_level"),
        dla_supported=dla_api and table.dla_supported,
        dla_requires_strongly_typed=table.dla_requires_strongly_typed,
        version_compatible_flag=has("BuilderFlag", "VERSION_COMPATIBLE"),
        calibration_profile=has("IBuilderConfig", "set_calibration_profile"),
        source="feature test",
    )


def validate_build_options(
    version: str | TrtVersion | Capabilities,
    *,
    precision: str,
    int8_mode: str | None,
    dla_core: int | None,
    device: JetsonInfo | None,
) -> None:
    """Refuse engine-build options that cannot work, before any TensorRT call.

    ``version`` may be a version, or the ``Capabilities`` of the installed module
    (``feature_check``).
    ``int8_mode=None`` with ``precision='int8'`` means the default for that TensorRT (implicit while
    it exists, explicit from TensorRT 11). ``device`` is the probed Jetson (None: not a Jetson or
    unknown, and the device checks are skipped). Raises EngineBuildError saying what to change.
    """
    caps = version if isinstance(version, Capabilities) else capabilities(version)
    trt = f"TensorRT {caps.version}"
    prec = str(precision).strip().lower()
    if prec not in PRECISIONS:
        raise EngineBuildError(
            f"unknown precision '{precision}'; expected one of {', '.join(PRECISIONS)} "
            "(--precision fp16 is the usual choice on a Jetson)"
        )
    mode = None if int8_mode is None else str(int8_mode).strip().lower()
    if mode is not None and mode not in INT8_MODES:
        raise EngineBuildError(
            f"unknown INT8 mode '{int8_mode}'; expected 'implicit' (TensorRT calibration cache "
            "from edge calibrate) or 'explicit' (Q/DQ models from edge calibrate)"
        )
    if mode is not None and prec != "int8":
        raise EngineBuildError(
            f"--int8-mode {mode} was given with --precision {prec}; the INT8 mode applies only "
            "to --precision int8: drop --int8-mode or use --precision int8"
        )
    if prec == "int8":
        mode = mode or caps.default_int8_mode
        if mode == "implicit" and not caps.implicit_int8:
            raise EngineBuildError(
                f"implicit INT8 (calibrator + calibration cache) does not exist in {trt}: it was "
                "deprecated in 10.1 and removed in 11.0; use --int8-mode explicit (Q/DQ models "
                "from edge calibrate)"
            )
    name = _device_label(device)
    if prec == "int8" and device is not None and not getattr(device, "fast_int8", True):
        raise EngineBuildError(
            f"the {name} GPU has no fast INT8 (no INT8 tensor instructions): an INT8 engine "
            "would be no faster than FP32 there; use --precision fp16"
        )
    if dla_core is None:
        return
    if dla_core < 0:
        raise EngineBuildError(f"--dla-core {dla_core} is not a DLA core index; use 0 or 1")
    if not caps.dla_supported:
        raise EngineBuildError(
            f"{trt} cannot build DLA engines (DLA returned in TensorRT 11.4.1, for AGX Orin with "
            "strongly typed networks only); drop --dla-core or use the TensorRT 10.x of JetPack 6"
        )
    if prec == "fp32":
        raise EngineBuildError(
            "DLA runs FP16 and INT8 only, not FP32; use --precision fp16 or --precision int8 "
            "with --dla-core, or drop --dla-core to build for the GPU"
        )
    if device is not None:
        cores = int(getattr(device, "dla_cores", 0))
        if cores == 0:
            raise EngineBuildError(
                f"the {name} has no DLA (DLA exists on AGX Orin, Orin NX, AGX Xavier and Xavier "
                "NX); drop --dla-core to build for the GPU"
            )
        module = str(getattr(device, "module", ""))
        if caps.dla_requires_strongly_typed and module != "agx-orin":
            raise EngineBuildError(
                f"{trt} builds DLA engines for AGX Orin only, not for the {name}; drop --dla-core "
                "or build with the TensorRT 10.x of JetPack 6"
            )
        if dla_core >= cores:
            raise EngineBuildError(
                f"the {name} has {cores} DLA core{'s' if cores > 1 else ''} "
                f"(index 0..{cores - 1}); --dla-core {dla_core} does not exist: use --dla-core 0"
            )


def _device_label(device: object | None) -> str:
    if device is None:
        return "device"
    model = str(getattr(device, "model", "") or "").strip()
    module = str(getattr(device, "module", "") or "").strip()
    if model and module and module != "unknown":
        return f"{model} ({module})"
    return model or module or "device"
