"""The bundle on disk and its manifest, the contract between convert, calibrate, build, run and
profile (docs/architecture.md, "The bundle"). Imports neither torch nor onnx.

    bundle/manifest.json        tasks, input spec, tensor names, file hashes, versions
    bundle/trunk.onnx           image -> shared features of every layer (taps shared_0..shared_n)
    bundle/heads/<task>.onnx    taps -> that task's outputs (input names = the trunk's tap names)
    bundle/fused.onnx           image -> every task's outputs (named as the heads name them)

:class:`Manifest` is the typed manifest; :func:`write_manifest` is its one writer and
:func:`read_manifest` its one reader. ``edge convert`` creates it, ``edge calibrate`` returns a
new one with a calibration section; everything else reads it through :func:`load_bundle`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.core.config import ModelConfig, TaskSpec
from edge.core.errors import BundleError, EdgeError
from edge.core.files import sha256_file, write_json
from edge.core.preprocess import InputSpec

FORMAT = "etr-edge-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def part_file(part: str) -> str:
    """'trunk' -> 'trunk.onnx', 'heads/defect' -> 'heads/defect.onnx', 'fused' -> 'fused.onnx'."""
    return f"{part}.onnx"


@dataclass(frozen=True)
class Tap:
    """One shared feature map the trunk outputs and heads read (``shared_0`` is the image)."""

    name: str
    layer: int
    stage: int
    channels: int
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "shape": list(self.shape)}


@dataclass(frozen=True)
class TaskEntry:
    """One task as the manifest records it: its output tensor, its head part and decoding."""

    kind: str
    labels: tuple[str, ...]
    output: str
    head: str
    """The part name of its head: 'heads/<task>'."""
    decode: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "labels": list(self.labels),
            "output": self.output,
            "head": self.head,
            "decode": dict(self.decode),
        }


@dataclass(frozen=True)
class PartEntry:
    """One ONNX part: its file and its input and output tensor names."""

    file: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    simplified: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "simplified": self.simplified,
        }


@dataclass(frozen=True)
class FileEntry:
    """A file of the bundle (path relative to its root) and its hash."""

    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json``. Sections the stages do not interpret (``model``, ``fold``,
    ``verification``, ``versions``, ``calibration``) stay plain JSON objects; keys this version
    does not know are kept in ``extra`` and written back unchanged."""

    model: Mapping[str, Any]
    """{name, config (ModelConfig.to_dict()), checkpoint {file, sha256}, metrics}."""
    input: InputSpec
    batch: Mapping[str, Any]
    """{"dynamic": False, "size": N} or {"dynamic": True, "min", "opt", "max"}."""
    taps: tuple[Tap, ...]
    tasks: Mapping[str, TaskEntry]
    parts: Mapping[str, PartEntry]
    files: Mapping[str, FileEntry] = field(default_factory=dict)
    merged_heads: str | None = None
    opset: int | None = None
    created: str = ""
    fold: Mapping[str, Any] = field(default_factory=dict)
    verification: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, Any] = field(default_factory=dict)
    calibration: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.model["config"])

    def with_files(self, files: Mapping[str, FileEntry]) -> Manifest:
        return dataclasses.replace(self, files=dict(files))

    def with_calibration(self, section: Mapping[str, Any]) -> Manifest:
        return dataclasses.replace(self, calibration=dict(section))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``manifest.json`` (format version 1)."""
        d: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": self.created,
            "model": dict(self.model),
            "input": self.input.to_dict(),
            "batch": dict(self.batch),
            "opset": self.opset,
            "taps": [t.to_dict() for t in self.taps],
            "tasks": {name: t.to_dict() for name, t in self.tasks.items()},
            "parts": {name: p.to_dict() for name, p in self.parts.items()},
            "merged_heads": self.merged_heads,
            "fold": dict(self.fold),
            "verification": dict(self.verification),
            "versions": dict(self.versions),
            "files": {rel: f.to_dict() for rel, f in self.files.items()},
        }
        if self.calibration is not None:
            d["calibration"] = dict(self.calibration)
        d.update({k: v for k, v in self.extra.items() if k not in d})
        return d

    @classmethod
    def from_dict(cls, m: Any, where: str = MANIFEST) -> Manifest:
        """Validate and type a manifest's JSON object; BundleError says what is wrong."""
        if not isinstance(m, dict):
            raise BundleError(
                f"{where}: expected a JSON object, got {type(m).__name__}; re-run edge convert"
            )
        if m.get("format") != FORMAT:
            raise BundleError(
                f"{where}: not an etr-edge bundle manifest (format {m.get('format')!r})"
            )
        if m.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"{where}: bundle format version {m.get('format_version')!r}, this etr-edge reads "
                f"{FORMAT_VERSION}; re-convert the checkpoint with this version"
            )
        known = {f.name for f in dataclasses.fields(cls)} | {"format", "format_version"}
        try:
            return cls(
                model=dict(m["model"]),
                input=InputSpec.from_dict(m["input"]),
                batch=dict(m["batch"]),
                taps=tuple(
                    Tap(
                        t["name"],
                        int(t["layer"]),
                        int(t["stage"]),
                        int(t["channels"]),
                        tuple(int(s) for s in t["shape"]),
                    )
                    for t in m["taps"]
                ),
                tasks={
                    name: TaskEntry(
                        str(t["kind"]),
                        tuple(t["labels"]),
                        str(t["output"]),
                        str(t["head"]),
                        dict(t["decode"]),
                    )
                    for name, t in m["tasks"].items()
                },
                parts={
                    name: PartEntry(
                        str(p["file"]),
                        tuple(p["inputs"]),
                        tuple(p["outputs"]),
                        bool(p.get("simplified", False)),
                    )
                    for name, p in m["parts"].items()
                },
                files={
                    rel: FileEntry(str(f["sha256"]), int(f["bytes"]))
                    for rel, f in m.get("files", {}).items()
                },
                merged_heads=m.get("merged_heads") or None,
                opset=m.get("opset"),
                created=str(m.get("created", "")),
                fold=dict(m.get("fold") or {}),
                verification=dict(m.get("verification") or {}),
                versions=dict(m.get("versions") or {}),
                calibration=dict(m["calibration"]) if m.get("calibration") else None,
                extra={k: v for k, v in m.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BundleError(
                f"{where}: manifest is incomplete ({type(e).__name__}: {e}); re-run edge convert"
            ) from e


def file_entries(root: Path, rels: list[str] | None = None) -> dict[str, FileEntry]:
    """{path relative to ``root``: FileEntry} of every file under ``root`` (or under each of the
    sub-folders ``rels``), sorted: what a manifest's ``files`` and calibration sections list."""
    tops = [root] if rels is None else [root / r for r in rels]
    return {
        p.relative_to(root).as_posix(): FileEntry(sha256_file(p), p.stat().st_size)
        for top in tops
        for p in sorted(top.rglob("*"))
        if p.is_file()
    }


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    """Write ``folder/manifest.json`` (atomically); the one place that writes a manifest."""
    return write_json(Path(folder) / MANIFEST, manifest.to_dict())


def read_manifest(folder: str | Path) -> Manifest:
    """Read and validate ``folder/manifest.json``; the one place that parses a manifest."""
    root = Path(folder)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(
            f"{root}: not a bundle (no {MANIFEST}); create one with: edge convert CKPT --out {root}"
        )
    try:
        data = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"{mpath}: unreadable or not JSON ({e}); re-run edge convert") from e
    return Manifest.from_dict(data, where=str(mpath))


@dataclass(frozen=True)
class TaskOutput:
    """One task: its spec (labels, decoding) and the name of its output tensor."""

    spec: TaskSpec
    output: str
    head: str
    """The part name of its head: 'heads/<task>'."""


@dataclass
class Bundle:
    """A bundle folder and its manifest, with the model config and the tasks resolved."""

    root: Path
    manifest: Manifest
    config: ModelConfig
    tasks: dict[str, TaskOutput] = field(default_factory=dict)

    @property
    def input(self) -> InputSpec:
        return self.manifest.input

    @property
    def taps(self) -> tuple[Tap, ...]:
        return self.manifest.taps

    @property
    def parts(self) -> list[str]:
        merged = [self.merged_heads] if self.merged_heads else []
        return ["trunk", *[t.head for t in self.tasks.values()], *merged, "fused"]

    @property
    def merged_heads(self) -> str | None:
        """The part running every head at once (convert/merge.py), when the bundle has one."""
        return self.manifest.merged_heads

    def path(self, part_or_file: str) -> Path:
        name = part_or_file if part_or_file.endswith(".onnx") else part_file(part_or_file)
        p = self.root / name
        if not p.is_file():
            raise BundleError(f"{self.root}: '{name}' is missing; re-run edge convert")
        return p

    @property
    def batch(self) -> dict[str, Any]:
        return dict(self.manifest.batch)

    @property
    def tap_names(self) -> list[str]:
        return [t.name for t in self.taps]

    def file_hash(self, rel: str) -> str:
        entry = self.manifest.files.get(rel)
        if entry is None:
            raise BundleError(f"{self.root}: manifest lists no file '{rel}'")
        return entry.sha256

    def check_calibrated(
        self, path: Path, *, required: bool = False, error: type[EdgeError] = BundleError
    ) -> None:
        """An ``edge calibrate`` output (``int8/<part>.onnx``, ``calib/<part>.cache``) must still
        have the sha256 the manifest's calibration section lists for it; with ``required``, a
        file the section does not list is refused too (what runs a Q/DQ model asks that).
        ``error``: the exception to raise (the stage's), saying to re-run edge calibrate."""
        rel = path.relative_to(self.root).as_posix()
        listed = (self.manifest.calibration or {}).get("files", {}).get(rel)
        if required and not listed:
            raise error(
                f"{self.root}/{rel} is not listed in the manifest's calibration section, so "
                "nothing vouches for it; re-run edge calibrate"
            )
        if listed and listed.get("sha256") != sha256_file(path):
            raise error(
                f"{self.root}/{rel} changed after edge calibrate wrote it (its sha256 differs "
                "from the manifest's calibration section); re-run edge calibrate"
            )

    def verify_hashes(self) -> None:
        """Check every file the manifest lists against its sha256 (BundleError on a mismatch)."""
        for rel, info in self.manifest.files.items():
            p = self.root / rel
            if not p.is_file():
                raise BundleError(
                    f"{self.root}: '{rel}' is listed in the manifest but missing; "
                    "re-run edge convert"
                )
            if sha256_file(p) != info.sha256:
                raise BundleError(
                    f"{self.root}: '{rel}' does not match its sha256 in manifest.json (the file "
                    "was changed after conversion); re-run edge convert --force"
                )


def load_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Read and validate ``path/manifest.json``; with ``verify``, check every file's hash."""
    root = Path(path)
    manifest = read_manifest(root)
    try:
        config = manifest.config
        tasks = {
            name: TaskOutput(config.task(name), t.output, t.head)
            for name, t in manifest.tasks.items()
        }
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(
            f"{root / MANIFEST}: manifest is incomplete ({type(e).__name__}: {e}); "
            "re-run edge convert"
        ) from e
    bundle = Bundle(root=root, manifest=manifest, config=config, tasks=tasks)
    _check_file_list(bundle, root / MANIFEST)
    if verify:
        bundle.verify_hashes()
    return bundle


def _check_file_list(bundle: Bundle, mpath: Path) -> None:
    """The manifest must list (with a sha256) every graph the bundle runs."""
    files = bundle.manifest.files
    if not files:
        raise BundleError(
            f'{mpath}: has no "files" list (the sha256 of each file), so the bundle cannot be '
            "checked; it was edited or is damaged: re-run edge convert"
        )
    for part in bundle.parts:
        if part_file(part) not in files:
            raise BundleError(
                f"{mpath}: \"files\" does not list '{part_file(part)}' with its sha256; the "
                "manifest was edited or is damaged: re-run edge convert"
            )
