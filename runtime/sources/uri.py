"""Sources by URI: parse a source URI into an unopened :class:`~edge.runtime.sources.base.Source`.

``open_source(uri)`` returns the source; ``open()``/``read()``/``close()`` (or ``with``) then give
:class:`~edge.runtime.sources.base.Frame` objects. Accepted URIs:

- ``path/to/video.mp4`` or ``file:///abs/video.mp4``: a video file (OpenCV); ends cleanly, optional
  ``loop`` and ``realtime`` pacing (to ``options.fps`` or the file's own fps).
- ``path/to/folder``: images (``edge.core.files.IMAGE_SUFFIXES``) in natural sort order,
  ``*_mask.png`` skipped.
- ``synthetic:?frames=N&seed=S&fps=F&width=W&height=H&live=0|1``: the demo line
  (:mod:`edge.data.demo_line`); endless unless ``frames``; ``fps=0`` means as fast as possible;
  ``live=1`` makes it behave as a free-running camera (the capture policy may drop/overrun).
- ``usb:N`` / ``v4l2:///dev/videoN``: ``cv2.VideoCapture(.., cv2.CAP_V4L2)``, buffer size 1;
  ``?width=&height=&fps=&fourcc=`` are set and read back (not honoured: an error).
- ``rtsp://...``: with a GStreamer-enabled OpenCV, :func:`rtsp_pipeline` (``rtspsrc latency=0
  drop-on-latency=true ... appsink drop=1 max-buffers=1 sync=false``); otherwise the FFmpeg backend
  with ``OPENCV_FFMPEG_CAPTURE_OPTIONS=rtsp_transport;tcp|fflags;nobuffer|flags;low_delay`` (set
  only when the user has not set it). ``describe()["backend"]`` says which one is in use.
- ``csi://N``: Jetson CSI camera through :func:`csi_pipeline` (``nvarguscamerasrc sensor-id=N``),
  Argus settings and a VIC crop from the query (:mod:`edge.runtime.sources.query` lists the keys;
  ``rtsp://`` takes ``latency`` and ``transport`` the same way).
- ``genicam://[DEVICE-ID]?...``: GigE Vision / USB3 Vision cameras through Aravis
  (:mod:`edge.runtime.sources.genicam`; options in :mod:`edge.runtime.sources.genicam_settings`).
- ``gst:<pipeline ending in appsink>``: any GStreamer pipeline.

``csi://`` and ``gst:`` need OpenCV built with GStreamer (JetPack's system OpenCV); pip's wheels
lack it and those URIs raise :class:`SourceError` saying so.
"""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import cv2
import numpy as np

from edge.core.board import probe_jetson
from edge.core.errors import EdgeError, SourceError
from edge.core.files import IMAGE_SUFFIXES
from edge.data.demo_line import LineConfig
from edge.runtime.sources.base import Source, SourceOptions, redact_uri
from edge.runtime.sources.genicam import GenICamSource
from edge.runtime.sources.query import (
    crop_box,
    csi_settings,
    rtsp_settings,
    split_query,
    usb_settings,
)
from edge.runtime.sources.readers import (
    ImageFolderSource,
    OpenCVCaptureSource,
    SyntheticSource,
    VideoFileSource,
)

APPSINK_LOW_LATENCY = "appsink drop=1 max-buffers=1 sync=false"
FFMPEG_RTSP_OPTIONS = "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay"
ACCEPTED_FORMS = (
    "path/to/video.mp4 or file:///abs/path/video.mp4 (video file)",
    f"path/to/folder (images {' '.join('*' + x for x in IMAGE_SUFFIXES)}; *_mask.png skipped)",
    "synthetic: or synthetic:?frames=N&seed=S&fps=F&width=W&height=H&live=0|1 (demo line)",
    "usb:N or v4l2:///dev/videoN [?width=W&height=H&fps=F&fourcc=MJPG]",
    "rtsp://[user:pass@]host[:port]/path [?latency=MS&transport=tcp|udp]",
    "csi://N [?sensor-mode=M&width=W&height=H&fps=F&flip=0..7&exposure=LO-HI&gain=LO-HI"
    "&wbmode=0..9&aelock=0|1&awblock=0|1&left=&right=&top=&bottom=] (Jetson; GStreamer)",
    "genicam://[DEVICE-ID][?PixelFormat=&Width=&Height=&OffsetX=&OffsetY=&ExposureTime=&Gain="
    "&AcquisitionFrameRate=&trigger=software|lineN&feature.NAME=VALUE] (GigE/USB3 Vision)",
    "gst:<GStreamer pipeline ending in appsink> (OpenCV with GStreamer)",
)


def opencv_has_gstreamer(build_info: str | None = None) -> bool:
    """Whether OpenCV's build information reports GStreamer support (``GStreamer: YES``).

    Also understands the older layout where ``GStreamer:`` is followed by indented
    ``base:/video:/app: YES`` lines.
    """
    lines = (cv2.getBuildInformation() if build_info is None else build_info).splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)GStreamer:\s*(.*)$", line)
        if not m:
            continue
        value = m.group(2).strip()
        if value:
            return value.upper().startswith("YES")
        indent = len(m.group(1))
        for sub in lines[i + 1 :]:
            if len(sub) - len(sub.lstrip()) <= indent:
                break
            if re.match(r"^\s*app:\s*YES", sub, re.I):
                return True
        return False
    return False


def _fps_fraction(fps: float) -> str:
    """GStreamer framerate: 30 -> 30/1, 29.97 -> 30000/1001 (NTSC rates snap), 12.5 -> 25/2."""
    ntsc = fps * 1.001
    if fps != round(fps) and abs(ntsc - round(ntsc)) < 0.005:
        f = Fraction(round(ntsc) * 1000, 1001)
    else:
        f = Fraction(fps).limit_denominator(1001)
    return f"{f.numerator}/{f.denominator}"


def csi_pipeline(
    sensor_id: int = 0,
    width: int = 1280,
    height: int = 720,
    fps: float = 30,
    *,
    capture_width: int | None = None,
    capture_height: int | None = None,
    flip_method: int = 0,
    sensor_mode: int | None = None,
    leaky_queue: bool = True,
    exposure_ns: tuple[int, int] | None = None,
    gain: tuple[float, float] | None = None,
    wbmode: int | None = None,
    aelock: bool | None = None,
    awblock: bool | None = None,
    crop: tuple[int, int, int, int] | None = None,
) -> str:
    """GStreamer pipeline for a Jetson CSI camera (Argus ISP), downscaled on the VIC.

    The sensor delivers ``capture_width x capture_height`` (default: the output size) in NVMM
    memory; ``nvvidconv`` scales/flips in hardware; only ``videoconvert`` BGRx->BGR touches the
    CPU. A leaky queue after the source keeps Argus' internal queue from growing, and
    ``appsink drop=1 max-buffers=1 sync=false`` keeps only the newest frame.
    Argus settings (nvarguscamerasrc properties): ``exposure_ns`` (exposuretimerange),
    ``gain`` (gainrange), ``wbmode``, ``aelock``, ``awblock``; ``crop`` (left, right, top,
    bottom of the capture) is done by nvvidconv on the VIC.
    """
    cw, ch = capture_width or width, capture_height or height
    props = [f"sensor-id={sensor_id}"]
    if sensor_mode is not None:
        props.append(f"sensor-mode={sensor_mode}")
    if exposure_ns is not None:
        props.append(f'exposuretimerange="{exposure_ns[0]} {exposure_ns[1]}"')
    if gain is not None:
        props.append(f'gainrange="{gain[0]:g} {gain[1]:g}"')
    if wbmode is not None:
        props.append(f"wbmode={wbmode}")
    for name, flag in (("aelock", aelock), ("awblock", awblock)):
        if flag is not None:
            props.append(f"{name}={str(flag).lower()}")
    box = "" if crop is None else " left={} right={} top={} bottom={}".format(*crop)
    queue = " ! queue max-size-buffers=3 leaky=downstream" if leaky_queue else ""
    return (
        f"nvarguscamerasrc {' '.join(props)}"
        f" ! video/x-raw(memory:NVMM),width={cw},height={ch},format=NV12,"
        f"framerate={_fps_fraction(fps)}{queue}"
        f" ! nvvidconv flip-method={flip_method}{box}"
        f" ! video/x-raw,width={width},height={height},format=BGRx"
        f" ! videoconvert ! video/x-raw,format=BGR ! {APPSINK_LOW_LATENCY}"
    )


def rtsp_pipeline(
    url: str,
    latency_ms: int = 0,
    *,
    codec: str | None = None,
    jetson: bool = False,
    width: int | None = None,
    height: int | None = None,
    transport: str = "tcp",
) -> str:
    """Low-latency GStreamer pipeline for an RTSP camera (``transport`` tcp or udp).

    ``codec`` None lets ``decodebin`` pick the decoder; "h264"/"h265" builds the explicit
    depay ! parse ! decoder chain (``nvv4l2decoder`` on a Jetson, ``avdec_*`` elsewhere). On a
    Jetson ``nvvidconv`` moves NVMM frames to CPU memory (and scales); elsewhere ``videoscale``.
    """
    if '"' in url or any(c.isspace() for c in url):
        raise SourceError(
            f"RTSP URL {redact_uri(url)!r} contains quotes or spaces: URL-encode them"
        )
    if transport not in ("tcp", "udp"):
        raise SourceError(f"RTSP transport {transport!r}: expected 'tcp' or 'udp'")
    if codec is None:
        decode = "decodebin"
    elif codec in ("h264", "h265"):
        decoder = "nvv4l2decoder" if jetson else f"avdec_{codec}"
        decode = f"rtp{codec}depay ! {codec}parse ! {decoder}"
    else:
        raise SourceError(f"RTSP codec {codec!r}: expected None (auto), 'h264' or 'h265'")
    size = f",width={width},height={height}" if width and height else ""
    if jetson:
        convert = f"nvvidconv ! video/x-raw,format=BGRx{size} ! videoconvert"
    else:
        convert = "videoconvert" + (f" ! videoscale ! video/x-raw{size}" if size else "")
    return (
        f'rtspsrc location="{url}" latency={latency_ms} drop-on-latency=true'
        f" protocols={transport} ! {decode}"
        f" ! {convert} ! video/x-raw,format=BGR ! {APPSINK_LOW_LATENCY}"
    )


def _is_jetson(root: Path = Path("/")) -> bool:
    return probe_jetson(root) is not None  # the device tree: also in containers without L4T files


def _bad_uri(uri: str, problem: str) -> SourceError:
    forms = "\n  ".join(ACCEPTED_FORMS)
    return SourceError(f"{redact_uri(uri)!r}: {problem}. Accepted sources:\n  {forms}")


def _no_gstreamer(uri: str) -> SourceError:
    return SourceError(
        f"{redact_uri(uri)!r} needs OpenCV built with GStreamer, but this OpenCV "
        f"({cv2.__version__}) reports no GStreamer support. pip's opencv-python(-headless) wheels "
        "are built without GStreamer: on a Jetson use JetPack's system OpenCV (jetson/setup.sh "
        "installs etr-edge with --no-deps and removes pip's OpenCV), or build OpenCV with "
        "-DWITH_GSTREAMER=ON"
    )


def _int_param(uri: str, name: str, text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise _bad_uri(uri, f"{name}={text!r} must be an integer >= {minimum}")
    return value


def _synthetic(uri: str, rest: str, options: SourceOptions) -> SyntheticSource:
    rest = rest[2:] if rest.startswith("//") else rest  # no str.removeprefix on Python 3.8
    if rest and not rest.startswith("?"):
        raise _bad_uri(uri, "synthetic takes only query parameters after 'synthetic:'")
    q = dict(parse_qsl(rest[1:], keep_blank_values=True))
    unknown = set(q) - {"frames", "seed", "fps", "width", "height", "live"}
    if unknown:
        raise _bad_uri(uri, f"unknown synthetic parameter(s) {sorted(unknown)}")
    line: dict[str, Any] = {}
    for name in ("seed", "width", "height"):
        if name in q:
            line[name] = _int_param(uri, name, q[name], 0)
        elif name != "seed" and getattr(options, name):
            line[name] = getattr(options, name)

    try:
        config = LineConfig(**line)
    except EdgeError as e:
        raise _bad_uri(uri, f"invalid demo line settings ({e})") from e
    try:
        fps = float(q["fps"]) if "fps" in q else (options.fps or 0.0)
    except ValueError:
        fps = -1.0
    if not (fps >= 0 and np.isfinite(fps)):
        raise _bad_uri(uri, f"fps={q.get('fps')!r} must be a number >= 0 (0 = as fast as possible)")
    live = q.get("live", "0").lower()
    if live not in ("0", "1", "true", "false"):
        raise _bad_uri(uri, f"live={live!r} must be 0 or 1")
    frames = _int_param(uri, "frames", q["frames"], 1) if "frames" in q else None
    return SyntheticSource(
        uri, frames=frames, fps=fps, config=config, live=live in ("1", "true"), options=options
    )


def _folder(uri: str, path: Path, options: SourceOptions) -> ImageFolderSource:
    def natural(p: Path) -> list[Any]:
        return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", p.name)]

    files = sorted(
        (
            p
            for p in path.iterdir()
            if p.is_file()
            and p.suffix.lower() in IMAGE_SUFFIXES
            and not p.name.lower().endswith("_mask.png")
        ),
        key=natural,
    )
    if not files:
        kinds = "/".join("*" + s for s in IMAGE_SUFFIXES)
        raise _bad_uri(uri, f"folder {path} holds no {kinds} images")
    return ImageFolderSource(uri, files, options)


_HINTS = {
    "usb": "Check the device exists and is free (v4l2-ctl --list-devices; ls -l /dev/video*).",
    "rtsp": "Check the URL, credentials and network (try the URL in VLC or ffplay).",
    "csi": "If Argus reports 'Failed to create CaptureSession', run `sudo systemctl restart "
    "nvargus-daemon`; in Docker mount /tmp/argus_socket.",
    "gst": "Test the pipeline with gst-launch-1.0 (with fakesink in place of appsink).",
}


def _gst_source(uri: str, kind: str, pipeline: str, options: SourceOptions) -> Source:
    return OpenCVCaptureSource(
        uri,
        kind=kind,
        target=pipeline,
        api=cv2.CAP_GSTREAMER,
        backend="GStreamer",
        hint=_HINTS[kind],
        options=options,
    )


def _camera_source(uri: str, scheme: str, rest: str, options: SourceOptions, gst: bool) -> Source:
    if scheme in ("usb", "v4l2"):
        bare, q = split_query(uri, "usb")
        options = dataclasses.replace(options, **usb_settings(uri, q))
        target: int | str = urlsplit(bare).path
        if scheme == "usb":
            target = _int_param(uri, "usb camera index", rest.partition("?")[0], 0)
        elif not re.fullmatch(r"/dev/video\d+", str(target)):
            raise _bad_uri(uri, "expected v4l2:///dev/videoN")
        return OpenCVCaptureSource(
            uri,
            kind=scheme,
            target=target,
            api=cv2.CAP_V4L2,
            backend="V4L2",
            hint=_HINTS["usb"],
            options=options,
        )
    if scheme in ("rtsp", "rtsps"):
        url, q = split_query(uri, "rtsp")
        rtsp = rtsp_settings(uri, q)
        options = dataclasses.replace(
            options, rtsp_latency_ms=rtsp.get("latency_ms", options.rtsp_latency_ms)
        )
        transport = rtsp.get("transport", "tcp")
        if not urlsplit(url).hostname:
            raise _bad_uri(uri, "an RTSP URL needs a host: rtsp://host[:port]/path")
        if gst:
            pipeline = rtsp_pipeline(
                url,
                options.rtsp_latency_ms,
                jetson=_is_jetson(),
                width=options.width,
                height=options.height,
                transport=transport,
            )
            return _gst_source(uri, "rtsp", pipeline, options)
        ms = int(options.read_timeout_s * 1000)
        ffmpeg = FFMPEG_RTSP_OPTIONS.replace("rtsp_transport;tcp", f"rtsp_transport;{transport}")
        return OpenCVCaptureSource(
            uri,
            kind="rtsp",
            target=url,
            api=cv2.CAP_FFMPEG,
            backend="FFmpeg",
            params=(cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms),
            env={"OPENCV_FFMPEG_CAPTURE_OPTIONS": ffmpeg},
            hint=_HINTS["rtsp"],
            options=options,
        )
    if scheme == "csi":
        return _csi(uri, rest, options, gst)
    # gst:
    pipeline = rest.strip()
    last = pipeline.rsplit("!", 1)[-1].split()
    if not last or last[0] != "appsink":
        raise _bad_uri(uri, "a gst: pipeline must end in an appsink element")
    if not gst:
        raise _no_gstreamer(uri)
    return _gst_source(uri, "gst", pipeline, options)


def _csi(uri: str, rest: str, options: SourceOptions, gst: bool) -> Source:
    _, q = split_query(uri, "csi")
    m = re.fullmatch(r"//(\d*)", rest.partition("?")[0])
    if not m:
        raise _bad_uri(uri, "expected csi://N with N the sensor id (or csi://?sensor-id=N)")
    sensor_id, c = csi_settings(uri, q)
    if not m.group(1) and sensor_id is None:
        raise _bad_uri(uri, "expected csi://N with N the sensor id (or csi://?sensor-id=N)")
    if m.group(1) and sensor_id is not None and int(m.group(1)) != sensor_id:
        raise _bad_uri(uri, f"sensor id {m.group(1)} and sensor-id={sensor_id} disagree")
    sensor = int(m.group(1) or 0) if sensor_id is None else sensor_id
    w, h = c.width or options.width or 1280, c.height or options.height or 720
    crop = None
    if any(v is not None for v in c.crop):
        crop = crop_box(uri, c.crop, w, h)
    if not gst:
        raise _no_gstreamer(uri)
    pipeline = csi_pipeline(
        sensor,
        w if crop is None else crop[1] - crop[0],
        h if crop is None else crop[3] - crop[2],
        c.fps or options.fps or 30,
        capture_width=w,
        capture_height=h,
        flip_method=c.flip,
        sensor_mode=c.sensor_mode,
        exposure_ns=c.exposure_ns,
        gain=c.gain,
        wbmode=c.wbmode,
        aelock=c.aelock,
        awblock=c.awblock,
        crop=crop,
    )
    return _gst_source(uri, "csi", pipeline, options)


def open_source(
    uri: str, *, options: SourceOptions | None = None, gstreamer: bool | None = None
) -> Source:
    """Build the (unopened) source for ``uri``; raises :class:`SourceError` for bad URIs.

    Files and folders are checked here; devices and streams are only contacted by ``open()``.
    ``gstreamer`` overrides the detection of OpenCV's GStreamer support (``False`` forces the
    FFmpeg backend for ``rtsp://``).
    """
    options = options if options is not None else SourceOptions()
    if not isinstance(uri, str) or not uri.strip():
        raise _bad_uri(str(uri), "empty source URI")
    uri = uri.strip()
    scheme, sep, rest = uri.partition(":")
    scheme = scheme.lower() if sep else ""
    if scheme == "synthetic":
        return _synthetic(uri, rest, options)
    if scheme == "genicam":
        return GenICamSource(uri, options)
    if scheme in ("usb", "v4l2", "rtsp", "rtsps", "csi", "gst"):
        gst = opencv_has_gstreamer() if gstreamer is None else gstreamer
        return _camera_source(uri, scheme, rest, options, gst)
    if scheme == "file":
        parts = urlsplit(uri)
        path = Path(parts.netloc + parts.path)
    elif re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]+", scheme) and not Path(uri).exists():
        raise _bad_uri(uri, f"unknown scheme '{scheme}:'")
    else:
        path = Path(uri)
    path = path.expanduser()
    if path.is_dir():
        return _folder(uri, path, options)
    if not path.is_file():
        raise _bad_uri(uri, f"no such file or folder: {path}")
    return VideoFileSource(uri, path, options)
