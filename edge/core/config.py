"""The model configuration: everything that describes an ETR-NLP network, JSON-serialisable.

A model is fully described by a ``ModelConfig``: widths, depths, sharing ratio γ, the fixed
primitive bank, the seed that generates it, the input spec and the tasks. This module imports
neither torch nor onnx, so the runtime and the CLI can read configs cheaply.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from edge.core.errors import ConfigError, quote

PRIMITIVE_KINDS = ("lbc", "gauss", "dilated", "avgpool", "identity", "maxpool")
"""The fixed, non-learnable primitive kinds (docs/architecture.md, "The model family"); only
``maxpool`` is nonlinear."""

LINEAR_PRIMITIVES = frozenset({"lbc", "gauss", "dilated", "avgpool", "identity"})

TASK_KINDS = ("classification", "multilabel", "regression", "segmentation")
"""Image-level heads (classification, multi-label, regression) and the dense head (segmentation)."""


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _seq(item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (list, tuple)) and all(item(x) for x in v)


_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (_int, "an integer"),
    "num": (_num, "a finite number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "ints": (_seq(_int), "a list of integers"),
    "nums": (_seq(_num), "a list of finite numbers"),
    "strs": (_seq(lambda v: isinstance(v, str)), "a list of strings"),
}


def _check_types(owner: str, obj: object, fields: dict[str, str]) -> None:
    """Raise ConfigError naming the first field of ``obj`` whose value has the wrong type (a
    checkpoint or JSON config may hold anything)."""
    for name, kind in fields.items():
        ok, expected = _TYPES[kind]
        value = getattr(obj, name)
        if not ok(value):
            raise ConfigError(f"{owner}: '{name}' must be {expected}, got {quote(value)}")


@dataclass(frozen=True)
class TaskSpec:
    """One task: its head kind, its output names, and how to decode its outputs.

    Args:
        name: the task's name, used for the head file, tensor names and results.
        kind: one of TASK_KINDS.
        labels: class names (classification/segmentation), attribute names (multilabel) or
            value names (regression). The number of outputs is ``len(labels)``.
        label_key: the key of this task's label in datasets (defaults to ``name``).
        scale, offset, unit: regression decoding, value = raw * scale + offset (in ``unit``).
        threshold: multilabel decoding, an attribute is on when sigmoid(logit) >= threshold.
        decoder_channels: width of the segmentation decoder.
    """

    name: str
    kind: str
    labels: tuple[str, ...]
    label_key: str = ""
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    threshold: float = 0.5
    decoder_channels: int = 16

    def __post_init__(self) -> None:
        _check_types(
            f"task {quote(self.name)}",
            self,
            {
                "name": "str",
                "kind": "str",
                "labels": "strs",
                "label_key": "str",
                "scale": "num",
                "offset": "num",
                "unit": "str",
                "threshold": "num",
                "decoder_channels": "int",
            },
        )
        if not self.name.isidentifier():
            raise ConfigError(
                f"task name '{self.name}' must be a Python identifier (letters, digits, _), "
                "since it names tensors and files"
            )
        if self.kind not in TASK_KINDS:
            raise ConfigError(
                f"task '{self.name}' has unknown kind '{self.kind}'; expected one of {TASK_KINDS}"
            )
        if len(self.labels) < 1 or (
            self.kind in ("classification", "segmentation") and len(self.labels) < 2
        ):
            raise ConfigError(
                f"task '{self.name}' ({self.kind}) needs labels: at least 2 classes for "
                "classification/segmentation, at least 1 for multilabel/regression"
            )
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"task '{self.name}' has duplicate labels {list(self.labels)}")
        if self.decoder_channels < 1:
            raise ConfigError(f"task '{self.name}': decoder_channels must be >= 1")
        object.__setattr__(self, "labels", tuple(self.labels))
        if not self.label_key:
            object.__setattr__(self, "label_key", self.name)

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    @property
    def dense(self) -> bool:
        return self.kind == "segmentation"


@dataclass(frozen=True)
class ModelConfig:
    """An ETR-NLP network (docs/architecture.md, "The model family").

    Stage l = 1..L has width ``widths[l-1]`` and ``depths[l-1]`` layers; its first layer has
    stride 2. Each layer's shared branch has C_s = round(gamma * C) channels, each task branch
    C_p = C - C_s.

    Args:
        widths, depths: per stage.
        gamma: sharing ratio γ in (0, 1).
        primitives: the fixed bank, kinds from PRIMITIVE_KINDS (each at most once).
        depthwise: conv primitives are depthwise (C -> C per channel) instead of full C -> C.
        lbc_density: fraction of non-zero taps of an ``lbc`` kernel.
        seed: generates every primitive deterministically.
        input_size: (height, width) the network takes.
        mean, std: normalisation of the 0..255 BGR input, per channel (BGR order).
        tasks: the tasks, in order.
    """

    tasks: tuple[TaskSpec, ...]
    widths: tuple[int, ...] = (16, 32, 64, 96)
    depths: tuple[int, ...] = (1, 1, 1, 1)
    gamma: float = 0.9
    primitives: tuple[str, ...] = ("lbc", "gauss", "avgpool", "identity")
    depthwise: bool = False
    lbc_density: float = 0.5
    seed: int = 0
    in_channels: int = 3
    input_size: tuple[int, int] = (128, 128)
    mean: tuple[float, float, float] = (128.0, 128.0, 128.0)
    std: tuple[float, float, float] = (64.0, 64.0, 64.0)
    name: str = "etr-nlp"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        _check_types(
            "model config",
            self,
            {
                "widths": "ints",
                "depths": "ints",
                "gamma": "num",
                "primitives": "strs",
                "depthwise": "bool",
                "lbc_density": "num",
                "seed": "int",
                "in_channels": "int",
                "input_size": "ints",
                "mean": "nums",
                "std": "nums",
                "name": "str",
            },
        )
        if not isinstance(self.tasks, (list, tuple)) or not all(
            isinstance(t, TaskSpec) for t in self.tasks
        ):
            raise ConfigError(
                f"model config: 'tasks' must be a list of tasks, got {quote(self.tasks)}"
            )
        if len(self.input_size) != 2:
            raise ConfigError(
                f"model config: 'input_size' must be [height, width], got {quote(self.input_size)}"
            )
        for attr in ("tasks", "widths", "depths", "primitives", "input_size", "mean", "std"):
            object.__setattr__(self, attr, tuple(getattr(self, attr)))
        if not self.tasks:
            raise ConfigError("a model needs at least one task")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate task names {names}")
        if len(self.widths) < 1 or len(self.widths) != len(self.depths):
            raise ConfigError(
                f"widths {self.widths} and depths {self.depths} must be non-empty, equally long"
            )
        if any(w < 2 for w in self.widths) or any(d < 1 for d in self.depths):
            raise ConfigError(
                f"widths must be >= 2 and depths >= 1, got {self.widths} {self.depths}"
            )
        if not 0.0 < self.gamma < 1.0:
            raise ConfigError(f"gamma (sharing ratio) must be in (0, 1), got {self.gamma}")
        for w in self.widths:
            cs = round(self.gamma * w)
            if cs < 1 or cs >= w:
                raise ConfigError(
                    f"gamma {self.gamma} leaves width {w} with {cs} shared and {w - cs} task "
                    "channels; both must be >= 1: pick another gamma or width"
                )
        unknown = [p for p in self.primitives if p not in PRIMITIVE_KINDS]
        if unknown:
            raise ConfigError(
                f"unknown primitive kind(s) {unknown}; the fixed primitives are {PRIMITIVE_KINDS}"
            )
        if not self.primitives or len(set(self.primitives)) != len(self.primitives):
            raise ConfigError(f"primitives must be non-empty and distinct, got {self.primitives}")
        if not 0.0 < self.lbc_density <= 1.0:
            raise ConfigError(f"lbc_density must be in (0, 1], got {self.lbc_density}")
        h, w = self.input_size
        stride = 2 ** len(self.widths)
        if h % stride or w % stride:
            raise ConfigError(
                f"input_size {self.input_size} must be divisible by {stride} "
                f"(2 ** number of stages)"
            )
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ConfigError("mean and std need one value per input channel")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"std must be positive, got {self.std}")

    # ---- derived sizes -------------------------------------------------------------------
    def shared_channels(self, stage: int) -> int:
        """C_s of stage ``stage`` (1-based); stage 0 is the image."""
        if stage == 0:
            return self.in_channels
        return round(self.gamma * self.widths[stage - 1])

    def task_channels(self, stage: int) -> int:
        """C_p of stage ``stage`` (1-based); 0 for the image."""
        if stage == 0:
            return 0
        return self.widths[stage - 1] - self.shared_channels(stage)

    @property
    def num_stages(self) -> int:
        return len(self.widths)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise ConfigError(f"unknown task '{name}'; this model's tasks are {list(self.task_names)}")

    def layers(self) -> list[tuple[int, int, int, int]]:
        """(stage, layer, in_stage, stride) for every layer; in_stage is the stage whose output
        feeds the layer (stage - 1 for a stage's first layer, else the same stage)."""
        out = []
        for s, depth in enumerate(self.depths, start=1):
            for j in range(depth):
                out.append((s, j, s - 1 if j == 0 else s, 2 if j == 0 else 1))
        return out

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tasks"] = [asdict(t) for t in self.tasks]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if not isinstance(data, dict) or "tasks" not in data:
            raise ConfigError("a model config must be a JSON object with a 'tasks' list")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown model config keys {sorted(unknown)}; known: {sorted(known)}"
            )
        kw = dict(data)
        task_fields = set(TaskSpec.__dataclass_fields__)
        tasks = []
        if not isinstance(kw["tasks"], list):
            raise ConfigError(f"model config: 'tasks' must be a list, got {quote(kw['tasks'])}")
        for t in kw.pop("tasks"):
            if not isinstance(t, dict) or not {"name", "kind", "labels"} <= set(t):
                raise ConfigError(f"a task needs 'name', 'kind' and 'labels', got {t!r}")
            bad = set(t) - task_fields
            if bad:
                raise ConfigError(f"task '{t.get('name')}' has unknown keys {sorted(bad)}")
            tasks.append(TaskSpec(**t))
        return cls(tasks=tuple(tasks), **kw)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"model config is not valid JSON: {e}") from e
        return cls.from_dict(data)


def parameter_formula(config: ModelConfig) -> dict[str, object]:
    """Parameter counts from the formula (docs/architecture.md, "The model family"), no model built.

    Per layer (stage l fed by stage i, k primitives, C_s/C_p the shared/task widths):
      shared (learnable): A^l: k·C_s(i)·C_s(l), BN: 2·C_s(l)
      task t (learnable): W_t^l: 9·(C_s(i)+C_p(i))·C_p(l), BN: 2·C_p(l)
      fixed: each conv primitive C_s(i)·C_s(i)·9 (full) or C_s(i)·9 (depthwise)
    Heads: image-level (average + max pooled) 2·C_L·n + n; segmentation Σ_l (C_l·D + D) + D·n + n.
    """
    k = len(config.primitives)
    conv_prims = sum(p in ("lbc", "gauss", "dilated") for p in config.primitives)
    shared = fixed = 0
    branch = 0
    for stage, _j, src, _stride in config.layers():
        cs_in, cp_in = config.shared_channels(src), config.task_channels(src)
        cs, cp = config.shared_channels(stage), config.task_channels(stage)
        shared += k * cs_in * cs + 2 * cs
        branch += 9 * (cs_in + cp_in) * cp + 2 * cp
        fixed += conv_prims * (cs_in * 9 if config.depthwise else cs_in * cs_in * 9)
    per_task: dict[str, int] = {}
    for t in config.tasks:
        n = t.num_outputs
        if t.dense:
            d = t.decoder_channels
            head = sum(w * d + d for w in config.widths) + d * n + n
        else:
            head = 2 * config.widths[-1] * n + n
        per_task[t.name] = branch + head
    return {
        "shared": shared,
        "per_task": per_task,
        "learnable": shared + sum(per_task.values()),
        "fixed": fixed,
    }
