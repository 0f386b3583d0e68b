"""The options of ``edge profile``: one frozen :class:`ProfileConfig`, validated on creation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.core.errors import ConfigError
from edge.profile.arms import ArmSpec
from edge.profile.interleave import Warmup
from edge.runtime.sources.base import SourceOptions

DEFAULT_FRAMES = 300
MEMORY_FRAMES = 32
TELEMETRY = ("auto", "on", "off")
DEFAULT_WARMUP = Warmup(frames=20)


@dataclass(frozen=True)
class ProfileConfig:
    """Options of ``edge profile`` (one flag each).

    ``frames``/``duration_s``: the measured length of each phase (default 300 frames).
    ``compare``: arm texts (see :mod:`edge.profile.arms`); ``baseline``: the arm the ratio
    table divides by (default ``base``). ``predict``: extra cost-model questions, each
    ``TASK=RATE,...`` (``mask=0.1``: the mask head on 10 % of frames, the other tasks as in
    ``base``). ``policy``: the pipeline phase's frame policy (default as edge run).
    """

    source: str | None = None
    warmup: Warmup = DEFAULT_WARMUP
    frames: int | None = None
    duration_s: float | None = None
    compare: tuple[str, ...] = ()
    baseline: str | None = None
    report: Path = Path("profile-report")
    backend: str = "onnxruntime"
    precision: str = "fp32"
    split: bool = True
    tasks: tuple[str, ...] | None = None
    schedule: Path | None = None
    every: tuple[str, ...] = ()
    when: tuple[str, ...] = ()
    predict: tuple[str, ...] = ()
    telemetry: str = "auto"
    policy: str | None = None
    jsonl: Path | None = None
    plots: bool = True
    progress: bool = True
    memory_frames: int = MEMORY_FRAMES
    source_options: SourceOptions = field(default_factory=SourceOptions)
    backend_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.warmup, (str, int, float)):
            object.__setattr__(self, "warmup", Warmup.parse(self.warmup))
        if self.frames is not None and self.duration_s is not None:
            raise ConfigError("give --frames or --duration, not both", stage="profile")
        if self.frames is not None and self.frames < 1:
            raise ConfigError(f"--frames {self.frames}: must be >= 1", stage="profile")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"--duration {self.duration_s}: must be > 0 s", stage="profile")
        if self.telemetry not in TELEMETRY:
            raise ConfigError(
                f"--telemetry {self.telemetry!r}: use one of {TELEMETRY}", stage="profile"
            )
        if self.memory_frames < 1:
            raise ConfigError("memory_frames must be >= 1", stage="profile")
        for name in ("compare", "every", "when", "predict"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "report", Path(self.report))

    @property
    def count(self) -> int | None:
        return DEFAULT_FRAMES if self.frames is None and self.duration_s is None else self.frames

    def base_arm(self) -> ArmSpec:
        return ArmSpec(
            name="base",
            precision=self.precision,
            backend=self.backend,
            split=self.split,
            tasks=self.tasks,
            every=self.every,
            when=self.when,
            schedule=self.schedule,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "warmup": {"frames": self.warmup.frames, "seconds": self.warmup.seconds},
            "frames": self.count,
            "duration_s": self.duration_s,
            "backend": self.base_arm().backend,
            "precision": self.precision,
            "mode": "split" if self.split else "fused",
            "tasks": list(self.tasks) if self.tasks else None,
            "schedule_file": str(self.schedule) if self.schedule else None,
            "every": list(self.every),
            "when": list(self.when),
            "compare": list(self.compare),
            "baseline": self.baseline or "base",
            "predict": list(self.predict),
            "telemetry": self.telemetry,
            "policy": self.policy,
            "memory_frames": self.memory_frames,
            "backend_options": dict(self.backend_options),
        }
