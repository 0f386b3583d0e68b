"""The TensorRT INT8 calibration cache: the text file of scales that implicit INT8 reads and writes.

Format (verified on caches written by TensorRT 7.0 .. 10.9)::

    TRT-8502-EntropyCalibration2
    input: 3c010a16
    /0/model.0/conv/Conv_output_0: 3e6e18b7
    (Unnamed Layer* 64) [Shuffle]_output: 3c010a14
    ONNXTRT_Broadcast_1855_output: 0

Line 1 is ``TRT-<NV_TENSORRT_VERSION>-<algorithm>`` (8.5.2 -> 8502, 10.9.0 -> 100900). Every
other line is ``<tensor name>: <hex>``: the big-endian IEEE-754 bits of the float32 *scale*
``amax / 127``, without ``0x``. TensorRT writes the hex unpadded (``0`` for some shape tensors),
and tensor names may contain spaces, colons, brackets and asterisks, so a line is split on its
last ``": "``.

We write 8 hex digits for the scales we compute (``struct.pack('>f', s).hex()``; identical to
TensorRT's output for every scale above ~1e-28, and ``00000000`` for zero) because ModelOpt's
``import_scales_from_calib_cache`` decodes with ``bytes.fromhex`` and fails on odd-length hex. A
cache that was read keeps each line's hex text as written, so any cache TensorRT wrote (unpadded
``0`` included) is written back byte for byte (LF line ends).

Every cache TensorRT writes is read: TensorRT records ``7f800000`` (+inf) for a tensor whose range
is unbounded (a Log output that saw 0); such entries are kept (``infinite_tensors``) and reported,
never refused. TensorRT 10's parser names tensors it creates after the ONNX node or tensor they
come from (``<name>_output``, ``<name>_output_0_output``, ``<name>_1``), after the initializers it
turns into constant layers (the initializer's name), or ``ONNXTRT_*`` / ``(Unnamed Layer* N)``;
``trt_tensor_origin`` maps such names back to the graph, so ``check_cache_matches`` does not
report them as "not in the graph".
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.calib.algorithms import scale_from_amax
from edge.core.errors import CalibrationError
from edge.core.files import write_bytes
from edge.core.trt_version import TrtVersion

TRT_ALGORITHMS = (
    "EntropyCalibration2",
    "MinMaxCalibration",
    "EntropyCalibration",
    "LegacyCalibration",
)
"""Algorithm names a cache header may carry (the last two: legacy calibrators, read only)."""

ALGORITHM_NAMES: Mapping[str, str] = {
    "entropy": "EntropyCalibration2",
    "minmax": "MinMaxCalibration",
    "percentile": "EntropyCalibration2",
    "mse": "EntropyCalibration2",
}
"""etr-edge algorithm -> the header's algorithm name.

TensorRT has no percentile (or mse) calibrator. When a builder is given a calibrator and a cache,
it only checks the cache header (version and algorithm) against the calibrator reading it; if they
match, the scales are used as they are and nothing is recalibrated. So a percentile (or mse) cache
is labelled ``EntropyCalibration2``: that is the calibrator etr-edge uses on the device
(TensorRT's preferred one, calibrating before fusion, and the one DLA requires), so the cache is
accepted and its scales are what the engine gets. ``MinMaxCalibration`` would claim "full
range", which percentile is not; both labels are equally foreign to TensorRT. The true algorithm
(and the percentile) is recorded in the cache's sidecar JSON, which is what etr-edge checks.
"""

INTERNAL_PREFIXES = ("(Unnamed Layer", "ONNXTRT_")
"""Tensor names TensorRT invents itself; they are never in the ONNX graph."""

_TRT_SUFFIX_RE = re.compile(r"(_output(_\d+)?|_\d+)$")
"""What TensorRT appends to a layer or ONNX name for the tensors it creates (one at a time)."""

_HEADER_RE = re.compile(r"^TRT-(\d+)-([A-Za-z0-9_]+)$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]{1,8}$")
_MAX_LISTED = 5


def trt_algorithm_name(algorithm: str) -> str:
    """Header name for an etr-edge algorithm ('entropy') or a TensorRT one (passed through)."""
    if algorithm in TRT_ALGORITHMS:
        return algorithm
    if algorithm in ALGORITHM_NAMES:
        return ALGORITHM_NAMES[algorithm]
    raise CalibrationError(
        f"unknown calibration algorithm '{algorithm}'; expected one of "
        f"{', '.join(list(ALGORITHM_NAMES) + list(TRT_ALGORITHMS))}"
    )


def is_internal_tensor(name: str) -> bool:
    """True for TensorRT-internal tensor names such as ``(Unnamed Layer* 64) [Shuffle]_output``."""
    return name.startswith(INTERNAL_PREFIXES)


def trt_tensor_origin(name: str, graph_names: Collection[str]) -> str | None:
    """The graph name (tensor, initializer or node) a TensorRT cache name comes from, or None.

    ``graph_names``: every tensor, initializer and node name of the ONNX graph. A name is its own
    origin; else TensorRT's suffixes (``_output``, ``_output_<k>``, ``_<k>``) are stripped one at a
    time until a graph name is left (``/fc/Gemm_output`` -> the Gemm node ``/fc/Gemm``, the
    pre-bias MatMul output; ``/a/Conv_output_0_output`` -> ``/a/Conv_output_0``)."""
    names = graph_names if isinstance(graph_names, (set, frozenset, dict)) else set(graph_names)
    base = name
    while True:
        if base in names:
            return base
        stripped = _TRT_SUFFIX_RE.sub("", base)
        if stripped == base or not stripped:
            return None
        base = stripped


def _check_scale(name: str, scale: float, where: str) -> None:
    # +inf is what TensorRT itself writes for an unbounded range (kept, see the module doc)
    if math.isnan(scale) or scale == -math.inf or math.copysign(1.0, scale) < 0:
        raise CalibrationError(
            f"{where}: tensor '{name}' has scale {scale}; expected a non-negative float32 "
            "(scale = amax/127; TensorRT writes +inf for an unbounded range); the cache is "
            "corrupt or not written by TensorRT: re-run edge calibrate"
        )


@dataclass(frozen=True)
class CalibrationCache:
    """One calibration cache: TensorRT version, algorithm (header name) and per-tensor scales.

    ``scales`` keep their insertion order (the file's line order) and are rounded to float32 on
    construction, i.e. to exactly what the file holds, so write -> read round trips bit for bit.
    """

    version: TrtVersion
    algorithm: str
    scales: dict[str, float] = field(default_factory=dict)
    hex_text: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    """The hex text each scale was read as (``parse_cache``), written back unchanged."""

    def __post_init__(self) -> None:
        if not isinstance(self.version, TrtVersion):
            object.__setattr__(self, "version", TrtVersion.parse(self.version))
        if self.algorithm not in TRT_ALGORITHMS:
            raise CalibrationError(
                f"calibration cache algorithm '{self.algorithm}'; expected one of "
                f"{', '.join(TRT_ALGORITHMS)} (see ALGORITHM_NAMES for etr-edge's names)"
            )
        rounded: dict[str, float] = {}
        for name, scale in self.scales.items():
            if not name or "\n" in name or "\r" in name:
                raise CalibrationError(
                    f"calibration cache: tensor name {name!r} cannot be written (empty or "
                    "contains a line break)"
                )
            s = float(scale)
            _check_scale(name, s, "calibration cache")
            try:
                rounded[name] = struct.unpack(">f", struct.pack(">f", s))[0]
            except OverflowError:
                raise CalibrationError(
                    f"calibration cache: tensor '{name}' has scale {s}, beyond float32; "
                    "expected amax/127 of a finite activation range"
                ) from None
        object.__setattr__(self, "scales", rounded)
        kept = {
            n: h
            for n, h in self.hex_text.items()
            if n in rounded and _HEX_RE.match(h) and _same_bits(hex_to_scale(h), rounded[n])
        }
        object.__setattr__(self, "hex_text", kept)

    def infinite_tensors(self) -> list[str]:
        """Tensors whose scale is +inf (TensorRT's mark of an unbounded range), in file order."""
        return [n for n, s in self.scales.items() if math.isinf(s)]

    @classmethod
    def from_amaxes(
        cls, version: TrtVersion, algorithm: str, amaxes: Mapping[str, float]
    ) -> CalibrationCache:
        """Build a cache from per-tensor amax (scale = amax/127, see ``scale_from_amax``).

        ``algorithm`` may be an etr-edge name ('entropy', 'minmax', 'percentile') or a header name.
        """
        return cls(
            version,
            trt_algorithm_name(algorithm),
            {name: scale_from_amax(a) for name, a in amaxes.items()},
        )

    @property
    def header(self) -> str:
        return f"TRT-{self.version.nv_tensorrt_version}-{self.algorithm}"

    def amax(self, name: str) -> float:
        """amax of one tensor (scale * 127)."""
        try:
            return self.scales[name] * 127.0
        except KeyError:
            raise CalibrationError(
                f"calibration cache ({self.header}, {len(self.scales)} tensors) has no tensor "
                f"'{name}'; re-run edge calibrate for this model"
            ) from None

    def amaxes(self) -> dict[str, float]:
        return {name: s * 127.0 for name, s in self.scales.items()}


def _same_bits(a: float, b: float) -> bool:
    return struct.pack(">f", a) == struct.pack(">f", b)


def scale_to_hex(scale: float) -> str:
    """Big-endian float32 bits of ``scale``, 8 lowercase hex digits."""
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    """Decode TensorRT's (possibly unpadded) hex: ``'3c010a14'`` -> 0.00787..., ``'0'`` -> 0.0."""
    return float(struct.unpack(">f", bytes.fromhex(text.zfill(8)))[0])


def format_cache(cache: CalibrationCache) -> str:
    """The cache file's text: header, then one ``name: hex`` line per tensor, newline-terminated."""
    lines = [cache.header]
    lines += [
        f"{name}: {cache.hex_text.get(name) or scale_to_hex(s)}" for name, s in cache.scales.items()
    ]
    return "\n".join(lines) + "\n"


def write_cache(path: str | Path, cache: CalibrationCache) -> Path:
    """Write ``cache`` to ``path`` atomically (temporary file, then os.replace)."""
    path = Path(path)
    write_bytes(path, format_cache(cache).encode("utf-8"))
    return path


def parse_cache(text: str, *, source: str = "<text>") -> CalibrationCache:
    """Parse a TensorRT calibration cache (TensorRT 7.x .. 10.x, LF or CRLF, any final newline).

    Every problem raises CalibrationError naming ``source`` and the line number.
    """
    lines = text.splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        raise CalibrationError(
            f"{source}: empty calibration cache; expected a first line like "
            "'TRT-100300-EntropyCalibration2': re-run edge calibrate"
        )
    header = lines[0].strip().lstrip("\ufeff")
    lineno_offset = len(text.splitlines()) - len(lines)
    m = _HEADER_RE.match(header)
    if not m:
        raise CalibrationError(
            f"{source}:{lineno_offset + 1}: bad header {header[:80]!r}; expected "
            "'TRT-<version number>-<algorithm>' such as 'TRT-8502-EntropyCalibration2' "
            "(is this a TensorRT calibration cache?)"
        )
    if m.group(2) not in TRT_ALGORITHMS:
        raise CalibrationError(
            f"{source}:{lineno_offset + 1}: unknown calibration algorithm '{m.group(2)}' in the "
            f"header; expected one of {', '.join(TRT_ALGORITHMS)}"
        )
    version = TrtVersion.from_nv_tensorrt_version(int(m.group(1)))
    scales: dict[str, float] = {}
    hex_text: dict[str, str] = {}
    for n, raw in enumerate(lines[1:], start=lineno_offset + 2):
        line = raw.rstrip()
        if not line:
            continue
        name, sep, value = line.rpartition(": ")
        if not sep or not name:
            raise CalibrationError(
                f"{source}:{n}: {line[:80]!r} is not a '<tensor name>: <hex scale>' line"
            )
        value = value.strip()
        if not _HEX_RE.match(value):
            raise CalibrationError(
                f"{source}:{n}: tensor '{name}' has value {value[:20]!r}; expected the float32 "
                "scale as 1 to 8 hex digits, e.g. 3c010a14"
            )
        if name in scales:
            raise CalibrationError(
                f"{source}:{n}: tensor '{name}' appears twice; expected one line per tensor"
            )
        scale = hex_to_scale(value)
        _check_scale(name, scale, f"{source}:{n}")
        scales[name] = scale
        hex_text[name] = value
    return CalibrationCache(version, m.group(2), scales, hex_text)


def read_cache(path: str | Path) -> CalibrationCache:
    """Read and parse a calibration cache file (CalibrationError if missing or malformed)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CalibrationError(
            f"{path}: cannot read the calibration cache ({e.strerror or e}); run edge calibrate "
            "to create it"
        ) from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CalibrationError(
            f"{path}: not a text file (byte {e.start} is not UTF-8); expected a TensorRT "
            "calibration cache"
        ) from e
    return parse_cache(text, source=str(path))


def _listed(names: list[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def check_cache_matches(
    cache: CalibrationCache,
    *,
    expected_tensors: set[str],
    target: TrtVersion | None = None,
    algorithm: str | None = None,
    source: str,
    graph_names: Collection[str] = (),
) -> None:
    """Raise CalibrationError if ``cache`` does not fit the graph, TensorRT version or algorithm.

    Checks: every expected tensor has a scale; no cache tensor is unknown to the graph (TensorRT
    internal names, ``INTERNAL_PREFIXES``, are ignored, and so are names TensorRT derives from
    ``graph_names``, every tensor, initializer and node name of the graph: ``trt_tensor_origin``;
    +inf scales are accepted: ``infinite_tensors``); the header's version equals ``target``;
    the header's algorithm equals ``algorithm`` (an etr-edge or a header name). Every problem is
    listed in one message.
    """
    problems: list[str] = []
    missing = [n for n in sorted(expected_tensors) if n not in cache.scales]
    if missing:
        problems.append(f"{len(missing)} graph tensor(s) have no scale: {_listed(missing)}")
    known = set(graph_names) | set(expected_tensors)
    unknown = [
        n
        for n in cache.scales
        if n not in known and not is_internal_tensor(n) and trt_tensor_origin(n, known) is None
    ]
    if unknown:
        problems.append(f"{len(unknown)} cache tensor(s) are not in the graph: {_listed(unknown)}")
    if target is not None and cache.version != target:
        problems.append(
            f"it is for TensorRT {cache.version} (header {cache.header}), not {target} "
            f"(expected TRT-{target.nv_tensorrt_version}-...)"
        )
    if algorithm is not None:
        wanted = trt_algorithm_name(algorithm)
        if wanted != cache.algorithm:
            problems.append(f"its algorithm is {cache.algorithm}, not {wanted}")
    if problems:
        raise CalibrationError(
            f"{source}: the calibration cache does not match: {'; '.join(problems)}. "
            "Re-run `edge calibrate` for this model and TensorRT version."
        )


def cache_summary(cache: CalibrationCache, graph_names: Collection[str] = ()) -> dict[str, Any]:
    """What a cache holds, for a report: its header, tensor count, the +inf entries, TensorRT's
    own names and the names TensorRT derived from ``graph_names`` (name -> graph name)."""
    names = set(graph_names)
    derived = {}
    for n in cache.scales:
        if n not in names and not is_internal_tensor(n):
            origin = trt_tensor_origin(n, names)
            if origin is not None:
                derived[n] = origin
    return {
        "header": cache.header,
        "tensors": len(cache.scales),
        "infinite": cache.infinite_tensors(),
        "internal": [n for n in cache.scales if is_internal_tensor(n)],
        "derived": derived,
    }


def sidecar_path(cache_path: str | Path) -> Path:
    """``<cache>.json`` next to the cache file."""
    p = Path(cache_path)
    return p.with_name(p.name + ".json")


def write_cache_sidecar(cache_path: str | Path, meta: dict[str, Any]) -> Path:
    """Write the caller's metadata (onnx sha256, algorithm, frames, seed...) as ``<cache>.json``."""
    path = sidecar_path(cache_path)
    try:
        text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise CalibrationError(
            f"{path}: calibration metadata is not JSON-serialisable ({e})"
        ) from e
    write_bytes(path, text.encode("utf-8"))
    return path


def read_cache_sidecar(cache_path: str | Path) -> dict[str, Any]:
    """Read ``<cache>.json``; CalibrationError if missing, not JSON, or not a JSON object."""
    path = sidecar_path(cache_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise CalibrationError(
            f"{path}: missing; the calibration cache {Path(cache_path).name} cannot be checked "
            "against the model without it: re-run edge calibrate"
        ) from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CalibrationError(
            f"{path}: unreadable calibration metadata ({e}); re-run edge calibrate"
        ) from e
    if not isinstance(data, dict):
        raise CalibrationError(
            f"{path}: expected a JSON object of calibration metadata, got {type(data).__name__}; "
            "re-run edge calibrate"
        )
    return data
