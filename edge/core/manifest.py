"""The bundle on disk and its manifest: the contract between convert, calibrate, build, run and
profile (docs/architecture.md). Imports neither torch nor onnx.

    bundle/manifest.json        tasks, input spec, tensor names, file hashes, versions
    bundle/trunk.onnx           image -> shared features of every layer (taps shared_0..shared_n)
    bundle/heads/<task>.onnx    taps -> that task's outputs (input names = the trunk's tap names)
    bundle/fused.onnx           image -> every task's outputs (named as the heads name them)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.core.config import ModelConfig, TaskSpec
from edge.core.errors import BundleError
from edge.core.files import sha256_file
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


@dataclass(frozen=True)
class TaskOutput:
    """One task: its spec (labels, decoding) and the name of its output tensor."""

    spec: TaskSpec
    output: str
    head: str
    """The part name of its head: 'heads/<task>'."""


@dataclass
class Bundle:
    """A bundle folder and its parsed manifest."""

    root: Path
    manifest: dict[str, Any]
    config: ModelConfig
    input: InputSpec
    taps: tuple[Tap, ...]
    tasks: dict[str, TaskOutput] = field(default_factory=dict)

    @property
    def parts(self) -> list[str]:
        merged = [self.merged_heads] if self.merged_heads else []
        return ["trunk", *[t.head for t in self.tasks.values()], *merged, "fused"]

    @property
    def merged_heads(self) -> str | None:
        """The part running every head at once (convert/merge.py), when the bundle has one."""
        name = self.manifest.get("merged_heads")
        return str(name) if name else None

    def path(self, part_or_file: str) -> Path:
        name = part_or_file if part_or_file.endswith(".onnx") else part_file(part_or_file)
        p = self.root / name
        if not p.is_file():
            raise BundleError(f"{self.root}: '{name}' is missing; re-run edge convert")
        return p

    @property
    def batch(self) -> dict[str, Any]:
        return dict(self.manifest["batch"])

    @property
    def tap_names(self) -> list[str]:
        return [t.name for t in self.taps]

    def file_hash(self, rel: str) -> str:
        try:
            return str(self.manifest["files"][rel]["sha256"])
        except KeyError as e:
            raise BundleError(f"{self.root}: manifest lists no file '{rel}'") from e

    def verify_hashes(self) -> None:
        """Check every file the manifest lists against its sha256 (BundleError on a mismatch)."""
        for rel, info in self.manifest.get("files", {}).items():
            p = self.root / rel
            if not p.is_file():
                raise BundleError(
                    f"{self.root}: '{rel}' is listed in the manifest but missing; "
                    "re-run edge convert"
                )
            if sha256_file(p) != info["sha256"]:
                raise BundleError(
                    f"{self.root}: '{rel}' does not match its sha256 in manifest.json (the file "
                    "was changed after conversion); re-run edge convert --force"
                )


def load_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Read and validate ``path/manifest.json``; with ``verify``, check every file's hash."""
    root = Path(path)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(
            f"{root}: not a bundle (no {MANIFEST}); create one with: edge convert CKPT --out {root}"
        )
    try:
        m = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{mpath}: unreadable or not JSON ({e}); re-run edge convert") from e
    if not isinstance(m, dict):
        raise BundleError(
            f"{mpath}: expected a JSON object, got {type(m).__name__}; re-run edge convert"
        )
    if m.get("format") != FORMAT:
        raise BundleError(f"{mpath}: not an etr-edge bundle manifest (format {m.get('format')!r})")
    if m.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{mpath}: bundle format version {m.get('format_version')!r}, this etr-edge reads "
            f"{FORMAT_VERSION}; re-convert the checkpoint with this version"
        )
    try:
        config = ModelConfig.from_dict(m["model"]["config"])
        spec = InputSpec.from_dict(m["input"])
        taps = tuple(
            Tap(t["name"], t["layer"], t["stage"], t["channels"], tuple(t["shape"]))
            for t in m["taps"]
        )
        tasks = {
            name: TaskOutput(config.task(name), t["output"], t["head"])
            for name, t in m["tasks"].items()
        }
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(
            f"{mpath}: manifest is incomplete ({type(e).__name__}: {e}); re-run edge convert"
        ) from e
    bundle = Bundle(root=root, manifest=m, config=config, input=spec, taps=taps, tasks=tasks)
    _check_file_list(bundle, mpath)
    if verify:
        bundle.verify_hashes()
    return bundle


def _check_file_list(bundle: Bundle, mpath: Path) -> None:
    """The manifest must list (with a sha256) every graph the bundle runs."""
    files = bundle.manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(
            f'{mpath}: has no "files" list (the sha256 of each file), so the bundle cannot be '
            "checked; it was edited or is damaged: re-run edge convert"
        )
    for part in bundle.parts:
        info = files.get(part_file(part))
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
            raise BundleError(
                f"{mpath}: \"files\" does not list '{part_file(part)}' with its sha256; the "
                "manifest was edited or is damaged: re-run edge convert"
            )
