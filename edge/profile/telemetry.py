"""Telemetry during a profile (tegrastats in the background, else jtop snapshots, else
recorded as unavailable) and the thread settings that move CPU latency."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from edge.core.errors import EdgeError, MissingDependencyError
from edge.jetson.tegrastats import TegrastatsSampler, jtop_stats
from edge.runtime.backends.ort import OrtOptions


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class Telemetry:
    """tegrastats sampled in the background, else jtop snapshots, else recorded as absent."""

    def __init__(self, mode: str = "auto", interval_ms: int = 500) -> None:
        self.mode, self.source, self.reason = mode, None, None
        self.sampler: TegrastatsSampler | None = None
        self.jtop: dict[str, Any] = {}
        if mode == "off":
            self.reason = "turned off (--telemetry off)"
        elif TegrastatsSampler.available():
            self.sampler = TegrastatsSampler(interval_ms)
            self.source = "tegrastats"
        elif (snap := jtop_stats()) is not None:
            self.source, self.jtop["start"] = "jtop", _jsonable(snap)
        elif mode == "on":
            raise MissingDependencyError(
                "--telemetry on: neither tegrastats (on PATH on a Jetson) nor a running jtop "
                "service was found; profile with --telemetry auto or off",
                stage="profile",
            )
        else:
            self.reason = "no tegrastats on PATH and no jtop service (not a Jetson?)"

    def start(self) -> Telemetry:
        if self.sampler is not None:
            self.sampler.start()
        return self

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        if self.source == "jtop" and (snap := jtop_stats()) is not None:
            self.jtop["end"] = _jsonable(snap)

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "available": self.source is not None,
            "source": self.source,
            "reason": self.reason,
            "summary": None,
        }
        if self.sampler is not None:
            out["interval_ms"] = self.sampler.interval_ms
            out["summary"] = self.sampler.summary()
            if not self.sampler.samples and self.sampler.last_error:
                out["reason"] = f"no line parsed: {self.sampler.last_error}"
        if self.jtop:
            out["jtop"] = self.jtop
        return out


def thread_facts(backend_options: Mapping[str, Any]) -> dict[str, Any]:
    """Thread settings that move CPU latency: ORT session threads, OpenCV, env, affinity."""
    import cv2

    try:
        ort = dataclasses.asdict(OrtOptions(**dict(backend_options)))
    except (TypeError, EdgeError):
        ort = dict(backend_options)
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    env = {
        k: os.environ[k]
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ORT_NUM_THREADS")
        if k in os.environ
    }
    return {"onnxruntime": ort, "opencv": cv2.getNumThreads(), "cpu_affinity": affinity, "env": env}
