"""``edge profile``: per-stage latency, interleaved comparisons, a cost model, machine facts and
Jetson telemetry, written as report.json / report.md / PNG plots (DESIGN.md §2 "profile").

Imports neither torch nor onnx; matplotlib only when plots are written.
"""

from edge.profile.arms import ArmSpec, parse_arm
from edge.profile.cost import PartCosts, check_prediction, predict_rates, predict_schedule
from edge.profile.interleave import Warmup
from edge.profile.report import KEYS, keys_markdown
from edge.profile.stage import ProfileConfig, profile_bundle

__all__ = [
    "KEYS",
    "ArmSpec",
    "PartCosts",
    "ProfileConfig",
    "Warmup",
    "check_prediction",
    "keys_markdown",
    "parse_arm",
    "predict_rates",
    "predict_schedule",
    "profile_bundle",
]
