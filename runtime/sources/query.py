"""Camera settings in a source URI's query, checked before anything is opened.

``usb:0?width=1280&height=720&fps=30&fourcc=MJPG``, ``csi://0?sensor-mode=2&exposure=20000-
1000000&left=100&right=1380`` and ``rtsp://cam/stream?latency=100&transport=udp``: each kind
accepts exactly the keys in :data:`KEYS`; any other key is an error (never ignored). The values'
syntax and ranges are checked here; whether a USB camera honours them is checked by the source
after ``open()`` (read back through OpenCV).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from edge.core.errors import SourceError
from edge.runtime.sources.base import redact_uri

KEYS = {
    "usb": ("width", "height", "fps", "fourcc"),
    "csi": (
        "sensor-id",
        "sensor-mode",
        "width",
        "height",
        "fps",
        "flip",
        "exposure",
        "gain",
        "wbmode",
        "aelock",
        "awblock",
        "left",
        "right",
        "top",
        "bottom",
    ),
    "rtsp": ("latency", "transport"),
}
"""URI query keys per source kind (``v4l2:`` takes the ``usb`` keys). For ``rtsp`` only these
are taken out of the URL; every other query parameter stays in the URL sent to the camera."""


def split_query(uri: str, kind: str) -> tuple[str, dict[str, str]]:
    """(the URI without the query, {key: value}); unknown keys raise :class:`SourceError`.

    For ``rtsp`` the keys not in :data:`KEYS` stay in the returned URL.
    """
    parts = urlsplit(uri)
    if not parts.query:
        return uri, {}
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    allowed = KEYS[kind]
    ours = {k: v for k, v in pairs if k in allowed}
    if len(ours) != sum(k in allowed for k, _ in pairs):
        raise _bad(uri, kind, "an option is given twice")
    rest = [(k, v) for k, v in pairs if k not in allowed]
    if rest and kind != "rtsp":
        raise _bad(uri, kind, f"unknown option(s) {sorted(k for k, _ in rest)}")
    return urlunsplit(parts._replace(query=urlencode(rest))), ours


def _bad(uri: str, kind: str, problem: str) -> SourceError:
    return SourceError(
        f"{redact_uri(uri)!r}: {problem}; a {kind} source accepts {', '.join(KEYS[kind])} "
        "(see the README's table of source options)"
    )


def _int(uri: str, kind: str, q: dict[str, str], key: str, lo: int, hi: int) -> int | None:
    if key not in q:
        return None
    text = q[key]
    if not text.lstrip("-").isdigit() or not lo <= int(text) <= hi:
        raise _bad(uri, kind, f"{key}={text!r} must be an integer in [{lo}, {hi}]")
    return int(text)


def _fps(uri: str, kind: str, q: dict[str, str]) -> float | None:
    if "fps" not in q:
        return None
    try:
        fps = float(q["fps"])
    except ValueError:
        fps = -1.0
    if not 0 < fps <= 1000:
        raise _bad(uri, kind, f"fps={q['fps']!r} must be a number in (0, 1000]")
    return fps


def _flag(uri: str, kind: str, q: dict[str, str], key: str) -> bool | None:
    if key not in q:
        return None
    v = q[key].lower()
    if v not in ("0", "1", "true", "false"):
        raise _bad(uri, kind, f"{key}={q[key]!r} must be 0 or 1")
    return v in ("1", "true")


def _range(uri: str, kind: str, q: dict[str, str], key: str, cast: type) -> Any:
    if key not in q:
        return None
    lo_text, sep, hi_text = q[key].partition("-")
    try:
        lo, hi = cast(lo_text), cast(hi_text)
    except ValueError:
        lo = hi = None
    if not sep or lo is None or not 0 <= lo <= hi:
        raise _bad(uri, kind, f"{key}={q[key]!r} must be a range LOW-HIGH with 0 <= LOW <= HIGH")
    return (lo, hi)


def usb_settings(uri: str, q: dict[str, str]) -> dict[str, Any]:
    """{width, height, fps, fourcc} requested by a ``usb:``/``v4l2:`` query (only those given)."""
    out: dict[str, Any] = {
        "width": _int(uri, "usb", q, "width", 1, 16384),
        "height": _int(uri, "usb", q, "height", 1, 16384),
        "fps": _fps(uri, "usb", q),
    }
    if "fourcc" in q:
        if len(q["fourcc"]) != 4 or not q["fourcc"].isprintable():
            raise _bad(uri, "usb", f"fourcc={q['fourcc']!r} must be 4 characters, e.g. MJPG, YUYV")
        out["fourcc"] = q["fourcc"]
    return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class CsiSettings:
    """A ``csi://`` query, as :func:`~edge.runtime.sources.uri.csi_pipeline` arguments."""

    sensor_mode: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    flip: int = 0
    exposure_ns: tuple[int, int] | None = None
    gain: tuple[float, float] | None = None
    wbmode: int | None = None
    aelock: bool | None = None
    awblock: bool | None = None
    crop: tuple[int | None, int | None, int | None, int | None] = (None, None, None, None)
    """left, right, top, bottom in capture pixels (None: the edge of the capture)."""


def csi_settings(uri: str, q: dict[str, str]) -> tuple[int | None, CsiSettings]:
    """(the ``sensor-id`` option or None, the rest) from a ``csi://`` query."""
    k = "csi"
    crop = tuple(_int(uri, k, q, side, 0, 16384) for side in ("left", "right", "top", "bottom"))
    s = CsiSettings(
        sensor_mode=_int(uri, k, q, "sensor-mode", 0, 64),
        width=_int(uri, k, q, "width", 1, 16384),
        height=_int(uri, k, q, "height", 1, 16384),
        fps=_fps(uri, k, q),
        flip=_int(uri, k, q, "flip", 0, 7) or 0,
        exposure_ns=_range(uri, k, q, "exposure", int),
        gain=_range(uri, k, q, "gain", float),
        wbmode=_int(uri, k, q, "wbmode", 0, 9),
        aelock=_flag(uri, k, q, "aelock"),
        awblock=_flag(uri, k, q, "awblock"),
        crop=crop,  # type: ignore[arg-type]
    )
    return _int(uri, k, q, "sensor-id", 0, 64), s


def crop_box(
    uri: str, crop: tuple[int | None, ...], width: int, height: int
) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) filled in and checked against the capture size."""
    left, right, top, bottom = crop
    box = (
        left or 0,
        width if right is None else right,
        top or 0,
        height if bottom is None else bottom,
    )
    if not (0 <= box[0] < box[1] <= width and 0 <= box[2] < box[3] <= height):
        raise _bad(
            uri,
            "csi",
            f"crop left={box[0]} right={box[1]} top={box[2]} bottom={box[3]} must satisfy "
            f"0 <= left < right <= width ({width}) and 0 <= top < bottom <= height ({height})",
        )
    return box


def rtsp_settings(uri: str, q: dict[str, str]) -> dict[str, Any]:
    """{latency_ms, transport} from an ``rtsp://`` query (only those given)."""
    out: dict[str, Any] = {}
    latency = _int(uri, "rtsp", q, "latency", 0, 60_000)
    if latency is not None:
        out["latency_ms"] = latency
    if "transport" in q:
        if q["transport"] not in ("tcp", "udp"):
            raise _bad(uri, "rtsp", f"transport={q['transport']!r} must be tcp or udp")
        out["transport"] = q["transport"]
    return out
