"""GenICam cameras (GigE Vision, USB3 Vision) through Aravis: ``genicam://[DEVICE-ID]?...``.

Needs the Aravis GObject bindings: apt ``gir1.2-aravis-0.8`` (Debian/Ubuntu/JetPack) and
``pip install 'etr-edge[genicam]'`` (PyGObject). The binding is imported only by ``open()``.

Each ``open()`` connects, applies the URI's settings (validated; see
:mod:`edge.runtime.sources.genicam_settings`), configures the trigger, and starts acquisition into
a fixed pool of ``buffers`` stream buffers. ``read()`` pops one buffer, converts it straight from
the buffer's memory (no copy of the raw data) into a new BGR image, and pushes the buffer back.
Incomplete buffers (missing packets, timeouts) are counted and skipped; the next frame's
``meta["genicam"]`` says how many were skipped before it and how many packets were resent or
missing. A reopen (after the camera was lost) creates a new connection and re-applies everything.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from typing import Any

import cv2
import numpy as np

from edge.core.errors import SourceError, import_optional
from edge.runtime.sources.base import RawFrame, Source, SourceOptions
from edge.runtime.sources.genicam_settings import (
    GenICamSettings,
    apply_settings,
    parse_genicam_uri,
)

_BAYER = {  # GenICam names the top-left 2x2; OpenCV's BayerXY2BGR names the second row
    "RG": cv2.COLOR_BayerBG2BGR,
    "GR": cv2.COLOR_BayerGB2BGR,
    "GB": cv2.COLOR_BayerGR2BGR,
    "BG": cv2.COLOR_BayerRG2BGR,
}
PIXEL_FORMATS: dict[int, tuple[str, int, int | None]] = {
    # PFNC code -> (name, significant bits, cv2 conversion to BGR; None = already BGR)
    0x01080001: ("Mono8", 8, cv2.COLOR_GRAY2BGR),
    0x01100003: ("Mono10", 10, cv2.COLOR_GRAY2BGR),
    0x01100005: ("Mono12", 12, cv2.COLOR_GRAY2BGR),
    0x01100007: ("Mono16", 16, cv2.COLOR_GRAY2BGR),
    0x01080008: ("BayerGR8", 8, _BAYER["GR"]),
    0x01080009: ("BayerRG8", 8, _BAYER["RG"]),
    0x0108000A: ("BayerGB8", 8, _BAYER["GB"]),
    0x0108000B: ("BayerBG8", 8, _BAYER["BG"]),
    0x0110000C: ("BayerGR10", 10, _BAYER["GR"]),
    0x0110000D: ("BayerRG10", 10, _BAYER["RG"]),
    0x0110000E: ("BayerGB10", 10, _BAYER["GB"]),
    0x0110000F: ("BayerBG10", 10, _BAYER["BG"]),
    0x01100010: ("BayerGR12", 12, _BAYER["GR"]),
    0x01100011: ("BayerRG12", 12, _BAYER["RG"]),
    0x01100012: ("BayerGB12", 12, _BAYER["GB"]),
    0x01100013: ("BayerBG12", 12, _BAYER["BG"]),
    0x0110002E: ("BayerGR16", 16, _BAYER["GR"]),
    0x0110002F: ("BayerRG16", 16, _BAYER["RG"]),
    0x01100030: ("BayerGB16", 16, _BAYER["GB"]),
    0x01100031: ("BayerBG16", 16, _BAYER["BG"]),
    0x02180014: ("RGB8", 8, cv2.COLOR_RGB2BGR),
    0x02180015: ("BGR8", 8, None),
    0x0210001F: ("YUV422_8_UYVY", 8, cv2.COLOR_YUV2BGR_UYVY),
    0x02100032: ("YUV422_8", 8, cv2.COLOR_YUV2BGR_YUYV),
}
SYNC_TOLERANCE_NS = 1_000_000_000
"""The camera clock counts as host-synchronised when it is this close to the host wall clock."""


def bits_per_pixel(pixel_format: int) -> int:
    """PFNC: bits 16..23 of the code hold the bits per pixel."""
    return (pixel_format >> 16) & 0xFF


def to_bgr(data: np.ndarray, width: int, height: int, pixel_format: int) -> np.ndarray:
    """Raw buffer bytes (uint8, possibly a view of the camera's buffer) -> a new HxWx3 BGR image.

    10/12/16-bit formats are scaled to 8 bits (rounded). Raises :class:`SourceError` for formats
    not in :data:`PIXEL_FORMATS` or a buffer smaller than the image.
    """
    if pixel_format not in PIXEL_FORMATS:
        names = ", ".join(n for n, _, _ in PIXEL_FORMATS.values())
        raise SourceError(
            f"genicam pixel format 0x{pixel_format:08x} is not supported: set PixelFormat= one "
            f"of {names}"
        )
    name, bits, code = PIXEL_FORMATS[pixel_format]
    bpp = bits_per_pixel(pixel_format)
    need = width * height * bpp // 8
    if data.size < need:
        raise SourceError(
            f"genicam {name} buffer holds {data.size} bytes, {width}x{height} needs {need}"
        )
    raw = data[:need]
    if bpp == 16:  # scale to 8 bits, rounded, in one pass
        u16 = raw.view("<u2").reshape(height, width)
        img = cv2.convertScaleAbs(u16, alpha=1.0 / (1 << (bits - 8)))
    elif name.startswith("YUV"):
        img = raw.reshape(height, width, 2)
    else:
        img = raw.reshape(height, width, bpp // 8) if bpp > 8 else raw.reshape(height, width)
    if code is None:
        return img.copy()
    return cv2.cvtColor(img, code)


class _BufferMemory:
    """A numpy view of an Aravis buffer's memory (no copy) via libaravis' ``arv_buffer_get_data``;
    falls back to ``buffer.get_data()`` (a copy) where ctypes cannot reach the library."""

    def __init__(self) -> None:
        self._get: Any = None
        with contextlib.suppress(OSError, AttributeError):
            lib = ctypes.CDLL("libaravis-0.8.so.0")
            get = lib.arv_buffer_get_data
            get.restype = ctypes.c_void_p
            get.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
            cap = ctypes.pythonapi.PyCapsule_GetPointer
            cap.restype = ctypes.c_void_p
            cap.argtypes = [ctypes.py_object, ctypes.c_char_p]
            self._get, self._capsule = get, cap

    @property
    def zero_copy(self) -> bool:
        return self._get is not None

    def view(self, buffer: Any) -> np.ndarray:
        if self._get is None:
            return np.frombuffer(buffer.get_data(), np.uint8)
        size = ctypes.c_size_t()
        address = self._get(self._capsule(buffer.__gpointer__, None), ctypes.byref(size))
        if not address or not size.value:
            return np.zeros(0, np.uint8)
        return np.ctypeslib.as_array((ctypes.c_uint8 * size.value).from_address(address))


def load_aravis() -> Any:
    """The ``gi.repository.Aravis`` module, or a MissingDependencyError saying what to install."""
    hint = (
        "genicam:// sources need the Aravis GObject bindings: apt install gir1.2-aravis-0.8 "
        "(and libgirepository1.0-dev libcairo2-dev pkg-config to build PyGObject), then "
        "pip install 'etr-edge[genicam]'"
    )
    gi = import_optional("gi", lambda e: f"{hint} ({e})")
    try:
        gi.require_version("Aravis", "0.8")
    except ValueError as e:
        raise SourceError(f"{hint} ({e})") from e
    return import_optional("gi.repository.Aravis", lambda e: f"{hint} ({e})")


class GenICamSource(Source):
    """A GenICam camera through Aravis (see the module doc); ``fire_trigger()`` for software
    triggers."""

    kind = "genicam"
    live = True

    def __init__(self, uri: str, options: SourceOptions | None = None) -> None:
        super().__init__(uri, options)
        self.settings: GenICamSettings = parse_genicam_uri(uri)
        self._arv: Any = None
        self._cam: Any = None
        self._stream: Any = None
        self._memory: _BufferMemory | None = None
        self._lost = threading.Event()
        self._info: dict[str, Any] = {}
        self._actual: dict[str, Any] = {}
        self._counts = {"incomplete": 0, "resent_packets": 0, "missing_packets": 0, "triggers": 0}
        self._statuses: dict[str, int] = {}
        self._since_ok = 0
        self._packets = (0, 0)
        self._last_ok = time.monotonic()
        self._synced: bool | None = None
        self._fps: float | None = None

    @property
    def triggered(self) -> bool:
        return self.settings.trigger is not None

    @property
    def software_trigger(self) -> bool:
        return self.settings.trigger == "Software"

    @property
    def nominal_fps(self) -> float | None:
        return None if self.triggered else self._fps

    def fire_trigger(self) -> None:
        if not self.software_trigger:
            super().fire_trigger()
        if self._cam is None:
            raise SourceError(f"{self._name()} is not open: no trigger fired")
        self._cam.software_trigger()
        self._counts["triggers"] += 1

    # -- hooks ------------------------------------------------------------------------------------
    def _open_impl(self) -> None:
        arv = self._arv = self._arv or load_aravis()
        self._memory = self._memory or _BufferMemory()
        self._lost.clear()
        cam = self._cam = self._connect(arv)
        self._info = {
            "device_id": cam.get_device_id(),
            "vendor": cam.get_vendor_name(),
            "model": cam.get_model_name(),
            "serial": cam.get_device_serial_number(),
        }
        cam.get_device().connect("control-lost", lambda *_: self._lost.set())
        self._configure_trigger(arv, cam)
        self._actual = apply_settings(arv, cam, self.settings, self._name())
        pf = cam.get_pixel_format()
        if pf not in PIXEL_FORMATS:
            names = [n for n, _, _ in PIXEL_FORMATS.values()]
            offered = [n for n in cam.dup_available_enumerations_as_strings("PixelFormat") or []]
            raise SourceError(
                f"{self._name()}: pixel format {cam.get_pixel_format_as_string()} is not "
                f"supported; add PixelFormat= one of {[n for n in offered if n in names]}"
            )
        with contextlib.suppress(Exception):
            self._fps = float(cam.get_frame_rate()) or None
        if cam.get_device().get_feature("AcquisitionMode") is not None:
            cam.set_acquisition_mode(arv.AcquisitionMode.CONTINUOUS)
        self._stream = cam.create_stream(None, None)
        if self._stream is None:
            raise SourceError(f"{self._name()}: Aravis could not create a stream")
        payload = cam.get_payload()
        for _ in range(self.settings.buffers):
            self._stream.push_buffer(arv.Buffer.new_allocate(payload))
        self._packets = self._packet_counts()
        self._since_ok = 0
        self._last_ok = time.monotonic()
        cam.start_acquisition()

    def _connect(self, arv: Any) -> Any:
        device = self.settings.device_id
        try:
            return arv.Camera.new(device)
        except Exception as first:
            if device:  # a serial number: look it up among the discovered devices
                arv.update_device_list()
                for i in range(arv.get_n_devices()):
                    if arv.get_device_serial_nbr(i) == device:
                        return arv.Camera.new(arv.get_device_id(i))
            what = f"camera {device!r}" if device else "any GenICam camera"
            raise SourceError(
                f"{self._name()}: cannot connect to {what} ({first}). List the cameras with "
                "arv-tool-0.8; check the network (same subnet, MTU, firewall on UDP 3956)"
            ) from first

    def _configure_trigger(self, arv: Any, cam: Any) -> None:
        trigger = self.settings.trigger
        if trigger is None:
            if cam.get_device().get_feature("TriggerMode") is not None:
                cam.clear_triggers()  # a camera left triggered by a previous run would stay silent
            return
        sources = list(cam.dup_available_trigger_sources() or [])
        if trigger not in sources:
            raise SourceError(
                f"{self._name()}: trigger={trigger.lower()} is not offered by the camera; its "
                f"trigger sources: {', '.join(s.lower() for s in sources) or 'none'}"
            )
        cam.set_trigger(trigger)

    def _packet_counts(self) -> tuple[int, int]:
        s = self._stream
        with contextlib.suppress(Exception):
            return (
                int(s.get_info_uint64_by_name("n_resent_packets")),
                int(s.get_info_uint64_by_name("n_missing_packets")),
            )
        return (0, 0)

    def _read_impl(self) -> RawFrame | None:
        if self._lost.is_set():
            raise SourceError(f"{self._name()}: lost the control connection (heartbeat)")
        buffer = self._stream.timeout_pop_buffer(self.settings.timeout_ms * 1000)
        if buffer is None:
            self._check_alive()
            return None
        try:
            status = buffer.get_status()
            if status != self._arv.BufferStatus.SUCCESS:
                name = getattr(status, "value_nick", str(status))
                self._statuses[name] = self._statuses.get(name, 0) + 1
                self._counts["incomplete"] += 1
                self._since_ok += 1
                return None
            assert self._memory is not None
            data = self._memory.view(buffer)
            w, h = buffer.get_image_width(), buffer.get_image_height()
            image = to_bgr(data, w, h, buffer.get_image_pixel_format())
            t_device, t_system = buffer.get_timestamp(), buffer.get_system_timestamp()
            frame_id = buffer.get_frame_id()
        finally:
            self._stream.push_buffer(buffer)
        resent, missing = self._packet_counts()
        meta = {
            "genicam": {
                "frame_id": frame_id,
                "resent_packets": resent - self._packets[0],
                "missing_packets": missing - self._packets[1],
                "incomplete_before": self._since_ok,
            }
        }
        self._counts["resent_packets"] += resent - self._packets[0]
        self._counts["missing_packets"] += missing - self._packets[1]
        self._packets, self._since_ok, self._last_ok = (resent, missing), 0, time.monotonic()
        self._synced = bool(t_device) and abs(t_device - t_system) < SYNC_TOLERANCE_NS
        sensor = t_device - (time.time_ns() - time.monotonic_ns()) if self._synced else None
        return RawFrame(image, None, meta, t_device or None, "genicam", sensor)

    def _check_alive(self) -> None:
        """While triggered the camera may be silent for long: probe it once per read timeout."""
        if not self.triggered or time.monotonic() - self._last_ok < self.options.read_timeout_s:
            return
        self._last_ok = time.monotonic()
        try:
            self._cam.get_integer("PayloadSize")
        except Exception as e:
            raise SourceError(f"{self._name()}: the camera does not answer ({e})") from e

    def _close_impl(self) -> None:
        cam, self._cam, self._stream = self._cam, None, None
        if cam is not None:
            with contextlib.suppress(Exception):
                cam.stop_acquisition()

    def _describe_impl(self) -> dict[str, Any]:
        clock = None
        if self._synced is not None:
            clock = "camera, host-synchronised" if self._synced else "camera ticks (arrival used)"
        return {
            **self._info,
            "settings": {k: v["value"] for k, v in self._actual.items()},
            "features": {k: v["feature"] for k, v in self._actual.items()},
            "trigger": self.settings.trigger.lower() if self.settings.trigger else None,
            "buffers": self.settings.buffers,
            "zero_copy": bool(self._memory and self._memory.zero_copy),
            **self._counts,
            "incomplete_by_status": dict(self._statuses),
            "timestamp_clock": clock,
        }
