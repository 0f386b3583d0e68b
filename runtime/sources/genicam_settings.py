"""``genicam://`` URI options: parsed without a camera, validated against the camera's feature tree.

:func:`parse_genicam_uri` turns ``genicam://[DEVICE-ID]?Width=640&ExposureTime=5000&trigger=software
&feature.GainAuto=Off`` into a :class:`GenICamSettings` (bad syntax is a :class:`SourceError` before
any camera is contacted). :func:`apply_settings` then writes each setting through an Aravis camera,
checking it first against the node's type, access mode, range/increment or enumeration, and reads
it back; any mismatch is a :class:`SourceError` naming the valid values.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from edge.core.errors import SourceError, SourceSettingError

STANDARD_FEATURES: dict[str, tuple[str, ...]] = {
    # URI key -> the camera nodes tried in order (SFNC name first, then older GigE Vision names)
    "PixelFormat": ("PixelFormat",),
    "Width": ("Width",),
    "Height": ("Height",),
    "OffsetX": ("OffsetX",),
    "OffsetY": ("OffsetY",),
    "ExposureTime": ("ExposureTime", "ExposureTimeAbs"),
    "Gain": ("Gain", "GainRaw"),
    "AcquisitionFrameRate": ("AcquisitionFrameRate", "AcquisitionFrameRateAbs"),
}
ROI_ORDER = ("PixelFormat", "Width", "Height", "OffsetX", "OffsetY")
OTHER_KEYS = ("trigger", "buffers", "timeout_ms")
FORMS = (
    "genicam://[DEVICE-ID]?KEY=VALUE&... with DEVICE-ID an IP address, an Aravis id "
    "(arv-tool-0.8 lists them) or a serial number (empty: the first camera); KEY one of "
    + ", ".join((*STANDARD_FEATURES, *OTHER_KEYS))
    + " or feature.NAME for any GenICam feature"
)


@dataclass(frozen=True)
class GenICamSettings:
    """What a ``genicam://`` URI asks for.

    ``features``: (URI key, candidate node names, value text) in the order they are applied (ROI
    first: pixel format, size, then offsets; then the rest as written). ``trigger``: None (free
    run), "Software" or a line name such as "Line1". ``buffers``: the stream buffer pool size.
    ``timeout_ms``: how long one ``read()`` waits for a buffer.
    """

    device_id: str | None
    features: tuple[tuple[str, tuple[str, ...], str], ...] = ()
    trigger: str | None = None
    buffers: int = 8
    timeout_ms: int = 200


def _bad(uri: str, problem: str) -> SourceError:
    return SourceError(f"{uri!r}: {problem}. Expected {FORMS}")


def parse_genicam_uri(uri: str) -> GenICamSettings:
    """Parse a ``genicam:`` URI (syntax only; :func:`apply_settings` checks the camera)."""
    parts = urlsplit(uri)
    if parts.path not in ("", "/"):
        raise _bad(uri, f"unexpected path {parts.path!r} after the device id")
    device = unquote(parts.netloc) or None
    standard = {k.lower(): k for k in STANDARD_FEATURES}
    found: dict[str, tuple[str, ...]] = {}
    values: dict[str, str] = {}
    trigger, buffers, timeout_ms = None, 8, 200
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if standard.get(key.lower(), key) in values:
            raise _bad(uri, f"option {key!r} given twice")
        if key.startswith("feature."):
            name = key[len("feature.") :]
            if not name.replace("_", "").isalnum():
                raise _bad(uri, f"{key!r}: a GenICam feature name is letters, digits and _")
            found[key], values[key] = (name,), value
        elif key.lower() in standard:
            canon = standard[key.lower()]
            found[canon], values[canon] = STANDARD_FEATURES[canon], value
        elif key == "trigger":
            trigger = _trigger_source(uri, value)
            values[key] = value
        elif key in ("buffers", "timeout_ms"):
            lo, hi = (2, 256) if key == "buffers" else (10, 60_000)
            if not value.isdigit() or not lo <= int(value) <= hi:
                raise _bad(uri, f"{key}={value!r} must be an integer in [{lo}, {hi}]")
            buffers, timeout_ms = (
                (int(value), timeout_ms) if key == "buffers" else (buffers, int(value))
            )
            values[key] = value
        else:
            close = difflib.get_close_matches(key, [*STANDARD_FEATURES, *OTHER_KEYS], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _bad(uri, f"unknown option {key!r}{hint}")
    roi = [k for k in ROI_ORDER if k in found]
    rest = [k for k in found if k not in ROI_ORDER]
    features = tuple((k, found[k], values[k]) for k in (*roi, *rest))
    return GenICamSettings(device, features, trigger, buffers, timeout_ms)


def _trigger_source(uri: str, value: str) -> str:
    v = value.strip().lower()
    if v == "software":
        return "Software"
    if v.startswith("line") and v[4:].isdigit():
        return f"Line{int(v[4:])}"
    raise _bad(uri, f"trigger={value!r}: expected software or lineN (a hardware input, e.g. line1)")


# -- against a camera (Aravis objects are duck-typed: the gi module is passed in) ---------------


def _node_kind(arv: Any, node: Any) -> str:
    for cls, kind in (
        ("GcEnumeration", "enum"),
        ("GcBoolean", "bool"),
        ("GcCommand", "command"),
        ("GcFloat", "float"),
        ("GcInteger", "int"),
        ("GcString", "string"),
    ):
        if isinstance(node, getattr(arv, cls)):
            return kind
    return "other"


def feature_names(device: Any) -> list[str]:
    """Every feature reachable from the camera's category tree (for "did you mean")."""
    genicam, out, todo = device.get_genicam(), [], ["Root"]
    seen: set[str] = set()
    while todo and len(seen) < 5000:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        node = genicam.get_node(name)
        if node is None:
            continue
        children = node.get_features() if hasattr(node, "get_features") else None
        if children is not None and type(node).__name__ == "GcCategory":
            todo.extend(children)
        else:
            out.append(name)
    return sorted(out)


def _resolve(camera: Any, where: str, key: str, candidates: tuple[str, ...]) -> str:
    device = camera.get_device()
    for name in candidates:
        node = device.get_feature(name)
        if node is not None and node.is_implemented() and node.is_available():
            return name
    known = feature_names(device)
    close = difflib.get_close_matches(candidates[0], known, n=3)
    tried = " or ".join(candidates)
    hint = f"; similar features: {', '.join(close)}" if close else ""
    raise SourceSettingError(
        f"{where}: the camera has no available feature {tried} (URI option {key}){hint}. "
        "List them with: arv-tool-0.8 -a ADDRESS features"
    )


def apply_settings(arv: Any, camera: Any, settings: GenICamSettings, where: str) -> dict[str, Any]:
    """Check and write every feature of ``settings``; {URI key: {"feature", "value"}} read back."""
    actual: dict[str, Any] = {}
    keys = [k for k, _, _ in settings.features]
    if any(k in keys for k in ("Width", "Height", "OffsetX", "OffsetY")):
        for name in ("OffsetX", "OffsetY"):  # offsets to 0 first, so the largest sizes are valid
            node = camera.get_device().get_feature(name)
            if node is not None and node.is_available() and "W" in str(_access(node)):
                camera.set_integer(name, 0)
    for key, candidates, text in settings.features:
        name = _resolve(camera, where, key, candidates)
        if key == "AcquisitionFrameRate":
            enable = camera.get_device().get_feature("AcquisitionFrameRateEnable")
            if enable is not None and enable.is_available():
                camera.set_boolean("AcquisitionFrameRateEnable", True)
        actual[key] = {"feature": name, "value": set_feature(arv, camera, name, text, where)}
    return actual


def _access(node: Any) -> str:
    mode = node.get_actual_access_mode()
    return getattr(mode, "value_nick", str(mode)).upper()


def set_feature(arv: Any, camera: Any, name: str, text: str, where: str) -> Any:
    """Write one feature from its URI text after checking it; returns the value read back."""
    node = camera.get_device().get_feature(name)
    kind = _node_kind(arv, node)
    what = f"{where}: feature {name}={text!r}"
    access = _access(node)
    if "W" not in access:
        raise SourceSettingError(
            f"{what}: {name} is read-only (access {access}); remove it from the URI"
        )
    if kind == "enum":
        options = list(camera.dup_available_enumerations_as_strings(name) or [])
        if text not in options:
            raise SourceSettingError(
                f"{what} is not one of the camera's values: {', '.join(options)}"
            )
        camera.set_string(name, text)
        back: Any = camera.get_string(name)
        ok = back == text
    elif kind == "bool":
        flag = {"1": True, "true": True, "on": True, "0": False, "false": False, "off": False}
        if text.lower() not in flag:
            raise SourceSettingError(f"{what}: expected true or false")
        camera.set_boolean(name, flag[text.lower()])
        back = camera.get_boolean(name)
        ok = back == flag[text.lower()]
    elif kind == "float":
        value = _number(text, float, what)
        lo, hi = camera.get_float_bounds(name)
        if not lo <= value <= hi:
            raise SourceSettingError(f"{what} is out of range: the camera accepts [{lo:g}, {hi:g}]")
        camera.set_float(name, value)
        back = camera.get_float(name)
        ok = abs(back - value) <= max(1e-6, 0.01 * abs(value))
    elif kind == "int":
        value = _number(text, int, what)
        lo, hi = camera.get_integer_bounds(name)
        inc = max(1, int(camera.get_integer_increment(name)))
        if not lo <= value <= hi or (value - lo) % inc:
            step = f" in steps of {inc}" if inc > 1 else ""
            raise SourceSettingError(
                f"{what} is out of range: the camera accepts [{lo}, {hi}]{step}"
            )
        camera.set_integer(name, value)
        back = camera.get_integer(name)
        ok = back == value
    elif kind == "string":
        camera.set_string(name, text)
        back = camera.get_string(name)
        ok = back == text
    else:
        raise SourceSettingError(f"{what}: {name} is a {type(node).__name__}, not a settable value")
    if not ok:
        raise SourceSettingError(f"{what}: the camera kept {back!r}; it did not accept the value")
    return back


def _number(text: str, kind: type, what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise SourceSettingError(
            f"{what}: expected {'an integer' if kind is int else 'a number'}"
        ) from None
