"""The ``edge`` command line: it parses arguments and calls one stage function per subcommand.

Each subcommand's handler builds the stage's frozen config from the flags and calls the stage;
user errors (``EdgeError``) are printed as one message and exit with status 2. Each handler imports
its stage when it runs: ``edge run`` on a board must not import torch (convert and train do), and
``edge --help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edge import __version__
from edge.core.errors import ConfigError, EdgeError
from edge.core.files import NO_SPACE_ERRNOS
from edge.core.trt_version import PRECISIONS

_DISK_ERRNOS = NO_SPACE_ERRNOS | {errno.EROFS}
"""A full or read-only disk is the user's to fix: one line, exit 2, wherever it surfaces."""

if TYPE_CHECKING:
    from edge.runtime.line import LineOutputsConfig


def _cmd_info(args: argparse.Namespace) -> int:
    from edge.family.info import describe_checkpoint

    print(describe_checkpoint(args.checkpoint, as_json=args.json))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from edge.core.config import ModelConfig
    from edge.data.demo_line import demo_config
    from edge.family.train import TrainConfig, train

    if args.config:
        config = ModelConfig.from_json(Path(args.config).read_text())
    else:
        overrides = {}
        if args.gamma is not None:
            overrides["gamma"] = args.gamma
        if args.widths:
            overrides["widths"] = tuple(int(w) for w in args.widths.split(","))
            overrides["depths"] = (1,) * len(overrides["widths"])
        if args.primitives:
            overrides["primitives"] = tuple(args.primitives.split(","))
        if args.model_seed is not None:
            overrides["seed"] = args.model_seed
        config = demo_config(**overrides)
    cfg = TrainConfig(
        out=Path(args.out),
        data=args.data,
        train_frames=args.train_frames,
        val_frames=args.val_frames,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        line_seed=args.line_seed,
        threads=args.threads,
        progress=not args.no_progress,
    )
    command = "edge " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else ""
    path = train(cfg, config, command=command)
    print(f"wrote {path}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from edge.convert.bundle import ConvertConfig, convert_checkpoint

    size = None
    if args.input_size:
        h, _, w = args.input_size.partition("x")
        size = (int(h), int(w or h))
    cfg = ConvertConfig(
        out=Path(args.out),
        input_size=size,
        opset=args.opset,
        batch=args.batch,
        dynamic_batch=args.dynamic_batch,
        max_batch=args.max_batch,
        in_graph_preprocessing=not args.no_preprocess,
        tolerance=args.tolerance,
        verify_frames=args.verify_frames,
        fold_form=args.fold,
        force=args.force,
    )
    out = convert_checkpoint(args.checkpoint, cfg, log=print)
    print(f"wrote bundle {out}")
    print((out / "fold_report.md").read_text().rstrip())
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from edge.calib.stage import CalibConfig, calibrate_bundle

    cfg = CalibConfig(
        data=args.data,
        frames=args.frames,
        batch=args.batch,
        seed=args.seed,
        algorithm=args.algorithm,
        dense_algorithm=args.dense_algorithm,
        percentile=args.percentile,
        target=args.target,
        keep_float=tuple(args.keep_float or ()),
        keep_float_heads=tuple(args.keep_float_head or ()),
        eval_frames=args.eval_frames,
        eval_data=args.eval_data,
        sensitivity=args.sensitivity,
        placement=args.placement,
    )
    out = calibrate_bundle(args.bundle, cfg)
    print((Path(out) / "calib" / "report.md").read_text().rstrip())
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    from edge.core.signing import generate_keys

    private, public = generate_keys(args.out)
    print(f"wrote {private} (private: keep it secret) and {public} (give to the devices)")
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    from edge.core.signing import sign_bundle

    print(f"wrote {sign_bundle(args.bundle, args.key)}")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from edge.convert.engine.build import build_engines
    from edge.convert.engine.config import BuildConfig

    if args.verify_key:
        from edge.core.signing import verify_bundle

        verify_bundle(args.bundle, args.verify_key)  # before anything is built from it

    cfg = BuildConfig(
        precision=args.precision,
        int8_mode=args.int8_mode,
        dla_core=args.dla_core,
        workspace_mib=args.workspace,
        timing_cache=Path(args.timing_cache) if args.timing_cache else None,
        use_timing_cache=not args.no_timing_cache,
        parts=tuple(p for p in args.parts.split(",") if p) if args.parts else None,
        calibrate_data=args.calibrate_data,
        calibrate_frames=args.calibrate_frames,
        builder_optimization_level=args.opt_level,
        strongly_typed=True if args.strongly_typed else None,
        gpu_fallback=not args.no_gpu_fallback,
        force=args.force,
        progress=not args.no_progress,
        verbose=args.verbose,
    )
    for path in build_engines(args.bundle, cfg):
        print(f"engine {path}")
    return 0


def _backend_options(args: argparse.Namespace) -> dict[str, object]:
    """--precision (TensorRT: which engines; ONNX Runtime: fp32 or the int8/ Q/DQ models),
    --threads and --providers for ONNX Runtime, --server and --prefix for Triton."""
    if args.backend == "triton":
        return {"server": args.server or "", "prefix": args.prefix}
    opts: dict[str, object] = {}
    if getattr(args, "precision", None):
        opts["precision"] = args.precision
    if args.backend == "tensorrt":
        return opts
    if args.threads:
        opts["intra_op_threads"] = args.threads
    if getattr(args, "providers", None):
        opts["providers"] = tuple(p for p in args.providers.split(",") if p)
    return opts


_MQTT_PATHS = ("mqtt_ca", "mqtt_cert", "mqtt_key", "mqtt_spool")


def _line_config(args: argparse.Namespace) -> LineOutputsConfig | None:
    """--mqtt / --opcua / --metrics and their options; None when all are off."""
    from edge.runtime.line import LineOutputsConfig

    if not (args.mqtt or args.opcua or args.metrics):
        if args.reject:
            raise ConfigError("--reject marks frames for --mqtt / --opcua / --metrics: add one")
        return None
    path = {k: Path(getattr(args, k)) if getattr(args, k) else None for k in _MQTT_PATHS}
    return LineOutputsConfig(
        station=args.station,
        camera=args.camera,
        reject=args.reject,
        mqtt=args.mqtt,
        mqtt_ca=path["mqtt_ca"],
        mqtt_cert=path["mqtt_cert"],
        mqtt_key=path["mqtt_key"],
        spool=path["mqtt_spool"],
        spool_max=args.mqtt_spool_max,
        opcua=args.opcua,
        opcua_user=args.opcua_user,
        metrics=args.metrics,
        stall_s=args.stall_seconds,
    )


_STATION_UNSUPPORTED = (("--trigger-every", "trigger_every"), ("--keep-warm", "keep_warm"))
"""edge run flags the station (runtime/station.py) does not implement yet."""


def _cmd_station(args: argparse.Namespace) -> int:
    """``edge run`` with several ``--source`` or a ``--station-file`` (runtime/station.py)."""
    import json

    from edge.runtime.station import run_station
    from edge.runtime.station_config import (
        Camera,
        StationConfig,
        cameras_from_sources,
        read_station_file,
    )

    tasks = tuple(t for t in args.tasks.split(",") if t) if args.tasks else None
    every, when = tuple(args.every or ()), tuple(args.when or ())
    if args.station_file:
        if args.source:
            raise EdgeError("give either --station-file FILE or --source (repeatable), not both")
        base = Camera("default", "-", tasks, every, when, args.policy)
        station = read_station_file(args.station_file, base)
    else:
        cams = cameras_from_sources(
            args.source, tasks=tasks, every=every, when=when, policy=args.policy
        )
        station = {"cameras": cams}
    if args.fused or args.video or args.schedule:
        raise EdgeError("a station run takes no --fused, --video or --schedule (per-camera rules)")
    unsupported = [
        flag
        for flag, attr in _STATION_UNSUPPORTED
        if getattr(args, attr, None) not in (None, False, [], ())
    ]
    if unsupported:  # refused, never silently dropped
        raise EdgeError(
            f"a station run (several --source or --station-file) does not take "
            f"{', '.join(unsupported)} yet; run one camera per edge run for those"
        )
    cfg = StationConfig(
        cameras=station["cameras"],
        frames=args.frames,
        duration_s=args.duration,
        out=Path(args.out) if args.out else None,
        summary=Path(args.summary) if args.summary else None,
        backend=args.backend,
        warmup=args.warmup,
        max_batch=args.max_batch or station.get("max_batch"),
        batch_wait_ms=next(
            (v for v in (args.batch_wait_ms, station.get("batch_wait_ms")) if v is not None), None
        ),
        open_timeout_s=args.open_timeout,
        rotate=args.rotate,
        keep=args.keep,
        verify_key=Path(args.verify_key) if args.verify_key else None,
        backend_options=_backend_options(args),
        line=_line_config(args),
    )
    summary = run_station(args.bundle, cfg)
    brief = {k: summary[k] for k in ("frames", "fps", "stopped_by", "batches")}
    brief["cameras"] = {
        k: {"frames": c["frames"], "fps": c["fps"]} for k, c in summary["cameras"].items()
    }
    print(json.dumps(brief))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from edge.runtime.run import RunConfig, run_bundle

    if args.station_file or len(args.source or ()) != 1:
        if not args.station_file and not args.source:
            raise EdgeError(
                "edge run needs --source URI (repeat it for a station) or --station-file"
            )
        return _cmd_station(args)
    cfg = RunConfig(
        source=args.source[0],
        tasks=tuple(t for t in args.tasks.split(",") if t) if args.tasks else None,
        schedule=Path(args.schedule) if args.schedule else None,
        every=tuple(args.every or ()),
        when=tuple(args.when or ()),
        policy=args.policy,
        frames=args.frames,
        duration_s=args.duration,
        out=Path(args.out) if args.out else None,
        video=Path(args.video) if args.video else None,
        summary=Path(args.summary) if args.summary else None,
        backend=args.backend,
        split=not args.fused,
        warmup=args.warmup,
        overlap=not args.no_overlap,
        keep_warm=args.keep_warm,
        backend_options=_backend_options(args),
        rotate=args.rotate,
        keep=args.keep,
        verify_key=Path(args.verify_key) if args.verify_key else None,
        trigger_every_ms=args.trigger_every,
        line=_line_config(args),
        open_timeout_s=args.open_timeout,
    )
    try:
        summary = run_bundle(args.bundle, cfg)
    except EdgeError as e:
        stopped = getattr(e, "summary", None)  # an output failed: the run's summary first
        if stopped is not None:
            print(stopped.to_text())
        raise
    print(summary.to_text())
    for warning in summary.run.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _cmd_export_triton(args: argparse.Namespace) -> int:
    from edge.convert.triton import TritonExportConfig, export_triton

    cfg = TritonExportConfig(
        out=Path(args.out),
        flavor=args.flavor,
        max_batch=args.max_batch,
        queue_delay_us=args.queue_delay_us,
        instances=args.instances,
        kind=args.kind,
        prefix=args.prefix,
        version=args.model_version,
        precision=args.precision,
        engines=Path(args.engines) if args.engines else None,
        threads=args.threads,
        force=args.force,
    )
    print(f"triton repository {export_triton(args.bundle, cfg)}")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from edge.profile.config import ProfileConfig
    from edge.profile.stage import profile_bundle, summarize_for_cli

    cfg = ProfileConfig(
        source=args.source,
        warmup=args.warmup,
        frames=args.frames,
        duration_s=args.duration,
        compare=tuple(args.compare or ()),
        baseline=args.baseline,
        report=Path(args.report),
        backend=args.backend,
        precision=args.precision,
        split=not args.fused,
        tasks=tuple(t for t in args.tasks.split(",") if t) if args.tasks else None,
        schedule=Path(args.schedule) if args.schedule else None,
        every=tuple(args.every or ()),
        when=tuple(args.when or ()),
        predict=tuple(args.predict or ()),
        telemetry=args.telemetry,
        policy=args.policy,
        jsonl=Path(args.jsonl) if args.jsonl else None,
        plots=not args.no_plots,
        progress=not args.no_progress,
        # the profiler picks engines per arm from --precision / --compare itself
        backend_options=(
            {"intra_op_threads": args.threads}
            if args.threads and args.backend == "onnxruntime"
            else {}
        ),
    )
    out = profile_bundle(args.bundle, cfg)
    print(summarize_for_cli(out))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from edge.demo import DemoConfig, run_demo

    run_demo(DemoConfig(out=Path(args.out), video_frames=args.frames))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge",
        description="ETR-NLP multi-task networks: PyTorch -> ONNX -> INT8 TensorRT -> camera",
    )
    p.add_argument("--version", action="version", version=f"etr-edge {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model on the demo line or a labelled folder (CPU)")
    t.add_argument("--out", default="model.pt", help="checkpoint to write (default model.pt)")
    t.add_argument(
        "--data",
        default="synthetic",
        help="'synthetic' (the demo line) or a folder with labels.jsonl",
    )
    t.add_argument("--config", help="model config JSON (default: the demo model)")
    t.add_argument("--gamma", type=float, help="sharing ratio γ of the demo model")
    t.add_argument("--widths", help="comma-separated stage widths of the demo model")
    t.add_argument("--primitives", help="comma-separated primitive kinds of the demo model")
    t.add_argument("--model-seed", type=int, help="seed of the fixed primitives")
    t.add_argument("--train-frames", type=int, default=4000)
    t.add_argument("--val-frames", type=int, default=500)
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--seed", type=int, default=0, help="training seed (init, shuffling)")
    t.add_argument("--line-seed", type=int, default=0, help="demo line seed")
    t.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_cmd_train)

    i = sub.add_parser("info", help="print a checkpoint's config, tasks and parameter counts")
    i.add_argument("checkpoint")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=_cmd_info)

    c = sub.add_parser("convert", help="fold the fixed primitives; export trunk/heads/fused ONNX")
    c.add_argument("checkpoint")
    c.add_argument("--out", required=True, help="bundle folder to write")
    c.add_argument("--input-size", help="HxW (default: the training size), e.g. 128x128")
    c.add_argument("--opset", type=int, default=17)
    c.add_argument("--batch", type=int, default=1, help="batch size (fixed, or opt if dynamic)")
    c.add_argument("--dynamic-batch", action="store_true", help="dynamic batch 1..--max-batch")
    c.add_argument("--max-batch", type=int, default=8)
    c.add_argument(
        "--no-preprocess",
        action="store_true",
        help="graphs take float NCHW normalised input (default: uint8 NHWC BGR)",
    )
    c.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="max |ONNX - PyTorch| relative to each output's range",
    )
    c.add_argument("--verify-frames", type=int, default=8)
    c.add_argument(
        "--fold",
        default="auto",
        choices=["auto", "single", "split", "bank"],
        help="shared-layer form: auto = fewest MACs",
    )
    c.add_argument("--force", action="store_true", help="replace an existing bundle")
    c.set_defaults(func=_cmd_convert)

    k = sub.add_parser("calibrate", help="INT8 without a GPU: TensorRT caches, Q/DQ models, report")
    k.add_argument("bundle")
    k.add_argument(
        "--data",
        default="synthetic:",
        help="calibration frames: video file, image folder or synthetic:[?seed=S]",
    )
    k.add_argument("--frames", type=int, default=512, help="calibration frames (shuffled)")
    k.add_argument("--batch", type=int, default=32)
    k.add_argument("--seed", type=int, default=0, help="shuffling seed")
    k.add_argument(
        "--algorithm", default="entropy", choices=["entropy", "minmax", "percentile", "mse"]
    )
    k.add_argument(
        "--dense-algorithm",
        choices=["entropy", "minmax", "percentile", "mse"],
        help="for the tensors only segmentation heads depend on (default: --algorithm)",
    )
    k.add_argument("--percentile", type=float, default=99.99)
    k.add_argument(
        "--target",
        default="10.3.0",
        help="TensorRT version the caches are for (JetPack 6.1/6.2: 10.3.0)",
    )
    k.add_argument(
        "--keep-float",
        action="append",
        metavar="TENSOR",
        help="leave this tensor unquantized in the Q/DQ models (repeatable)",
    )
    k.add_argument(
        "--keep-float-head",
        action="append",
        metavar="TASK",
        help="keep this task's whole head in float (repeatable)",
    )
    k.add_argument("--eval-frames", type=int, default=256, help="held-out frames for the report")
    k.add_argument("--eval-data", help="held-out source (default: held-out demo-line frames)")
    k.add_argument(
        "--sensitivity",
        action="store_true",
        help="rank tensors by how much keeping each in float recovers",
    )
    k.add_argument(
        "--placement",
        default="tensorrt",
        choices=["tensorrt", "all"],
        help="Q/DQ on the weighted ops where INT8 pays on TensorRT (default), or on all",
    )
    k.set_defaults(func=_cmd_calibrate)

    b = sub.add_parser("build", help="build TensorRT engines on the device (needs TensorRT)")
    b.add_argument("bundle")
    b.add_argument("--precision", default="fp16", choices=PRECISIONS)
    b.add_argument(
        "--int8-mode",
        choices=["implicit", "explicit"],
        help="implicit: calibration cache (TensorRT <= 10); explicit: Q/DQ models "
        "(the only INT8 path on TensorRT 11); default: implicit where it exists",
    )
    b.add_argument(
        "--dla-core",
        "--dla",
        dest="dla_core",
        type=int,
        help="build for this DLA core (FP16/INT8), with GPU fallback",
    )
    b.add_argument("--no-gpu-fallback", action="store_true", help="fail on DLA-unsupported layers")
    b.add_argument("--workspace", type=int, help="workspace pool limit in MiB (small boards: 256+)")
    b.add_argument(
        "--timing-cache", help="timing cache file (default engines/<device>/timing.cache)"
    )
    b.add_argument("--no-timing-cache", action="store_true")
    b.add_argument("--parts", help="comma-separated: trunk, heads, fused, or task names")
    b.add_argument("--calibrate-data", help="implicit INT8 without a cache: calibrate from SOURCE")
    b.add_argument("--calibrate-frames", type=int, default=256)
    b.add_argument("--opt-level", type=int, help="builder optimization level 0..5")
    b.add_argument("--strongly-typed", action="store_true")
    b.add_argument("--force", action="store_true", help="rebuild engines that are current")
    b.add_argument("--verify-key", metavar="PUB", help="refuse a bundle not signed by this key")
    b.add_argument("--verbose", action="store_true")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=_cmd_build)

    kg = sub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles")
    kg.add_argument("--out", required=True, help="private key file; the public one gets .pub")
    kg.set_defaults(func=_cmd_keygen)

    sg = sub.add_parser("sign", help="sign every file of a bundle (needs etr-edge[sign])")
    sg.add_argument("bundle")
    sg.add_argument("--key", required=True, help="private key from edge keygen")
    sg.set_defaults(func=_cmd_sign)

    r = sub.add_parser("run", help="run a bundle on a camera / video / folder / synthetic source")
    r.add_argument("bundle")
    r.add_argument(
        "--source",
        action="append",
        help="video file, image folder, synthetic:[?frames=N], usb:N, "
        "v4l2:///dev/videoN, rtsp://..., csi://N, genicam://[ID], gst:PIPELINE "
        "(camera settings as URI options: see the README); repeat it for a station "
        "(several cameras batched through one trunk call)",
    )
    r.add_argument("--station-file", help="station JSON file: cameras with their own schedules")
    r.add_argument("--max-batch", type=int, help="station: most frames per trunk call")
    r.add_argument(
        "--batch-wait-ms",
        type=float,
        help="station: batching deadline in ms (default: 0 on the CPU, 4 on a GPU)",
    )
    r.add_argument(
        "--trigger-every",
        type=float,
        metavar="MS",
        help="fire the camera's software trigger every MS ms (genicam://...?trigger=software)",
    )
    r.add_argument("--tasks", help="comma-separated tasks to run every frame (default: all)")
    r.add_argument("--schedule", help="schedule file: one 'task: rule' per line (or JSON)")
    r.add_argument("--every", action="append", metavar="TASK=N", help="run TASK every N-th frame")
    r.add_argument(
        "--when",
        action="append",
        metavar="'TASK: COND'",
        help="run TASK only when a condition holds, e.g. 'mask: defect != ok'",
    )
    r.add_argument("--policy", help="latest (live default) | fifo:N (files default fifo:4)")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--frames", type=int, help="stop after N frames")
    g.add_argument("--duration", type=float, help="stop after S seconds")
    r.add_argument("--out", help="JSONL results, one line per frame")
    r.add_argument("--video", help="annotated video (.mp4/.avi/.mkv) or a folder of PNGs")
    r.add_argument("--summary", help="summary JSON (default: <out>.summary.json)")
    r.add_argument(
        "--rotate",
        metavar="SIZE|daily",
        help="start a new --out file at this size (e.g. 100M) or each UTC day",
    )
    r.add_argument("--keep", type=int, default=5, help="rotated --out files to keep (default 5)")
    r.add_argument("--verify-key", metavar="PUB", help="refuse a bundle not signed by this key")
    r.add_argument(
        "--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt", "triton"]
    )
    r.add_argument("--server", help="triton: the server's HTTP URL, e.g. http://127.0.0.1:8000")
    r.add_argument("--prefix", default="etr", help="triton: model name prefix of the repository")
    r.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="TensorRT: which engines to load (default fp16); ONNX Runtime: fp32 (default) "
        "or int8 (the int8/ Q/DQ models edge calibrate writes)",
    )
    r.add_argument("--fused", action="store_true", help="run fused.onnx (all tasks every frame)")
    r.add_argument("--warmup", type=int, default=3, help="warm-up inferences before capture")
    r.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    r.add_argument(
        "--providers",
        help="ONNX Runtime execution providers in order, e.g. cuda,cpu (default: the best "
        "available, CUDA then CPU; tensorrt only when named)",
    )
    r.add_argument(
        "--open-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="cameras/streams: retry a failing first open this long (default 300; 0: fail at once)",
    )
    r.add_argument(
        "--no-overlap",
        action="store_true",
        help="do not overlap preprocessing/sinks with inference",
    )
    r.add_argument(
        "--keep-warm",
        action="store_true",
        help="steady camera, idle between frames: rerun the last frame just before the next is "
        "due, so it finds warm CPU caches (lower latency for one more pass per frame)",
    )
    o = r.add_argument_group("line outputs (MQTT, OPC UA, Prometheus)")
    o.add_argument("--mqtt", metavar="URL", help="mqtt[s]://[user:pass@]host[:port]/PREFIX")
    o.add_argument("--mqtt-ca", help="mqtts: CA certificate (PEM) that signed the broker's")
    o.add_argument("--mqtt-cert", help="mqtts: client certificate (PEM), with --mqtt-key")
    o.add_argument("--mqtt-key", help="mqtts: client private key (PEM)")
    o.add_argument("--mqtt-spool", help="spool folder (default ~/.cache/etr-edge/spool)")
    o.add_argument("--mqtt-spool-max", type=int, default=100_000, help="spooled messages at most")
    o.add_argument("--station", default="station", help="station name in topics and OPC UA")
    o.add_argument("--camera", help="camera id in topics (default: from --source)")
    o.add_argument("--reject", metavar="COND", help="reject rule, e.g. 'defect != ok'")
    o.add_argument("--opcua", metavar="URL", help="serve OPC UA at opc.tcp://HOST:PORT")
    o.add_argument("--opcua-user", metavar="USER:PASS", help="OPC UA login (anonymous refused)")
    o.add_argument("--metrics", metavar="HOST:PORT", help="serve /metrics and /healthz")
    o.add_argument(
        "--stall-seconds", type=float, default=5.0, help="/healthz 503 after no frame for S"
    )
    r.set_defaults(func=_cmd_run)

    x = sub.add_parser("export-triton", help="a Triton Inference Server model repository")
    x.add_argument("bundle")
    x.add_argument("--out", required=True, help="repository folder to write")
    x.add_argument("--flavor", default="onnxruntime", choices=["onnxruntime", "tensorrt", "python"])
    x.add_argument("--max-batch", type=int, help="max_batch_size (default: the bundle's max)")
    x.add_argument("--queue-delay-us", type=int, default=100, help="dynamic batcher wait")
    x.add_argument("--instances", type=int, default=1, help="instances per model")
    x.add_argument("--kind", default="auto", choices=["auto", "cpu", "gpu"])
    x.add_argument("--prefix", default="etr", help="model name prefix")
    x.add_argument("--model-version", type=int, default=1, help="version folder to write")
    x.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8"])
    x.add_argument("--engines", help="tensorrt: engine folder (default bundle/engines/<only one>)")
    x.add_argument("--threads", type=int, default=1, help="python: ONNX Runtime threads")
    x.add_argument("--force", action="store_true", help="replace an existing repository")
    x.set_defaults(func=_cmd_export_triton)

    f = sub.add_parser("profile", help="latency report per stage (JSON, Markdown, PNG plots)")
    f.add_argument("bundle")
    f.add_argument(
        "--source",
        help="profile the whole pipeline on this source URI "
        "(default: inference alone on in-memory frames)",
    )
    f.add_argument("--warmup", default="20", help="warm-up excluded: N frames or S seconds ('2s')")
    g = f.add_mutually_exclusive_group()
    g.add_argument("--frames", type=int, help="measured frames per phase (default 300)")
    g.add_argument("--duration", type=float, help="measured seconds per phase")
    f.add_argument(
        "--compare",
        action="extend",
        nargs="+",
        metavar="ARM",
        help="arms run interleaved with the base, e.g. int8 fused 'tasks=defect' "
        "'every=mask=4' or the preset 'precisions'",
    )
    f.add_argument("--baseline", help="arm the ratio table divides by (default: base)")
    f.add_argument("--report", default="profile-report", help="report folder")
    f.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt"])
    f.add_argument("--precision", default="fp32", choices=PRECISIONS)
    f.add_argument("--fused", action="store_true", help="base arm runs fused.onnx")
    f.add_argument("--tasks", help="comma-separated tasks of the base arm")
    f.add_argument("--schedule", help="schedule file for the base arm")
    f.add_argument("--every", action="append", metavar="TASK=N")
    f.add_argument("--when", action="append", metavar="'TASK: COND'")
    f.add_argument(
        "--predict", action="append", metavar="TASK=RATE", help="cost-model question, e.g. mask=0.1"
    )
    f.add_argument("--telemetry", default="auto", choices=["auto", "on", "off"])
    f.add_argument("--policy", help="frame policy of the pipeline phase: latest | fifo:N")
    f.add_argument("--jsonl", help="also write per-frame results of the pipeline phase")
    f.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    f.add_argument("--no-plots", action="store_true")
    f.add_argument("--no-progress", action="store_true")
    f.set_defaults(func=_cmd_profile)

    d = sub.add_parser("demo", help="the whole pipeline on the embedded demo model (CPU)")
    d.add_argument("--out", default="demo-out", help="folder for the bundle, video and results")
    d.add_argument("--frames", type=int, default=300, help="frames of demo video to run")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except EdgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in _DISK_ERRNOS:
            raise
        where = f" writing '{e.filename}'" if e.filename else ""
        print(
            f"error: {args.command}: {e.strerror}{where}; free space or write elsewhere",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
