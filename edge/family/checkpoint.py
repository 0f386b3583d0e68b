"""Checkpoints: one file holding the model config and its weights, loaded without unpickling
arbitrary objects (``torch.load(weights_only=True)``).

Layout of the saved dict: ``format`` ("etr-edge-checkpoint"), ``format_version``, ``config``
(the ModelConfig as a JSON string), ``state_dict`` (tensors), ``meta`` (a JSON string: training
command, metrics, versions). On load the fixed primitives are regenerated from the config's seed
and must equal the stored buffers, so a checkpoint whose bank was altered is refused.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edge.core.config import ModelConfig
from edge.core.errors import CheckpointError, ConfigError
from edge.core.files import sha256_file, write_with
from edge.family.model import ETRNLP

FORMAT = "etr-edge-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode), its config and metadata."""

    model: ETRNLP
    config: ModelConfig
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    sha256: str = ""


def save_checkpoint(path: str | Path, model: ETRNLP, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (config + weights + meta) to ``path`` atomically."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_json(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": json.dumps(meta or {}, sort_keys=True),
    }
    return write_with(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint written by ``save_checkpoint``; every failure is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; expected a checkpoint written by edge train")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a checkpoint (not a torch zip archive: corrupt, truncated or another "
            "kind of file); re-train or re-download it"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged or foreign archives
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); it is corrupt, or holds pickled "
            "objects that edge refuses to load"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: a torch file, but not an etr-edge checkpoint (no 'format': '{FORMAT}'); "
            "convert only takes checkpoints written by edge train"
        )
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('format_version')!r}; this etr-edge "
            f"reads version {FORMAT_VERSION}: upgrade etr-edge or re-train"
        )
    try:
        config = ModelConfig.from_json(payload["config"])
        meta = json.loads(payload.get("meta") or "{}")
    except (ConfigError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: its model config is invalid: {e}") from e
    model = ETRNLP(config)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: has no state_dict")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match its config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    for name, ref in expected.items():
        if not isinstance(state[name], torch.Tensor):
            raise CheckpointError(
                f"{path}: state_dict entry '{name}' is a {type(state[name]).__name__}, not a "
                "tensor; the checkpoint is damaged or was not written by edge train"
            )
        if tuple(state[name].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{path}: tensor '{name}' has shape {tuple(state[name].shape)}, its config "
                f"implies {tuple(ref.shape)}"
            )
        if ".kernel_" in name and not torch.equal(state[name], ref):
            raise CheckpointError(
                f"{path}: fixed primitive '{name}' differs from the one its seed "
                f"({config.seed}) generates; the checkpoint was altered or written by an "
                "incompatible etr-edge"
            )
    model.load_state_dict(state)
    model.eval()
    return Checkpoint(model=model, config=config, meta=meta, path=path, sha256=sha256_file(path))
