"""`edge run --providers` and `--open-timeout` reach the stage configs."""

from __future__ import annotations

from edge.cli import _backend_options, build_parser


def test_providers_and_open_timeout_reach_the_configs() -> None:
    argv = ["run", "b", "--source", "usb:0", "--providers", "cuda,cpu", "--open-timeout", "30"]
    args = build_parser().parse_args(argv)
    assert _backend_options(args) == {"providers": ("cuda", "cpu")}
    assert args.open_timeout == 30.0
    default = build_parser().parse_args(["run", "b", "--source", "usb:0"])
    assert default.open_timeout == 300.0 and _backend_options(default) == {}
    trt = build_parser().parse_args(["run", "b", "--source", "x", "--backend", "tensorrt"])
    assert "providers" not in _backend_options(trt)  # ONNX Runtime's option only
