"""``edge profile``: per-stage latency, interleaved comparisons, a cost model, machine facts and
Jetson telemetry, written as report.json / report.md / PNG plots. Imports neither torch nor onnx;
matplotlib only when plots are written. Entry point: :func:`edge.profile.stage.profile_bundle`.
"""
