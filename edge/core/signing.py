"""Bundle signatures: Ed25519 (the ``cryptography`` package, extra ``sign``) over the list of
every file in the bundle with its sha256 (manifest.json, graphs, int8/, calib/, engines/ and
their sidecars), so no file can be changed, added or removed without the signature failing.

    edge keygen --out release.key          # release.key (private, 0600) + release.key.pub
    edge sign BUNDLE --key release.key     # writes BUNDLE/signature.json
    edge run BUNDLE --verify-key release.key.pub ...   # refuses unsigned or altered bundles

``signature.json``: ``{"format": "etr-edge-signature", "format_version": 1, "files": [[path,
sha256], ...] (sorted), "key_sha256": the public key's fingerprint, "signature": base64}``; the
signed bytes are the canonical JSON of format, format_version and files (sorted keys, no spaces).
Re-sign after adding engines (``edge build``) or calibrating.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from edge.core.errors import BundleError, ConfigError, require
from edge.core.files import sha256_file, write_bytes, write_json
from edge.core.manifest import MANIFEST, load_bundle

SIGNATURE = "signature.json"
FORMAT = "etr-edge-signature"
FORMAT_VERSION = 1
SHOWN = 5
"""How many differing files an error names."""


def _crypto() -> Any:
    require("cryptography", extra="sign", purpose="bundle signing")
    from cryptography.hazmat.primitives import serialization  # optional dependency

    return serialization


def bundle_files(root: Path) -> list[tuple[str, str]]:
    """(relative path, sha256) of every file under ``root`` but the signature, sorted."""
    out = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in names:
            p = Path(folder) / name
            rel = p.relative_to(root).as_posix()
            if rel != SIGNATURE:
                out.append((rel, sha256_file(p)))
    return sorted(out)


def signed_bytes(files: list[tuple[str, str]]) -> bytes:
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, "files": [list(f) for f in files]}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def generate_keys(private: str | Path) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair: ``private`` (PEM, mode 0600) and ``private.pub``."""
    serialization = _crypto()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Path(private)
    public = private.with_name(private.name + ".pub")
    for p in (private, public):
        if p.exists():
            raise ConfigError(f"{p} exists; keys are never overwritten: choose another --out")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_bytes(private, pem)
    os.chmod(private, 0o600)
    write_bytes(public, _public_pem(key.public_key()))
    return private, public


def _public_pem(key: Any) -> bytes:
    serialization = _crypto()
    return bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _load_key(path: str | Path, private: bool) -> Any:
    serialization = _crypto()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    kind = "private" if private else "public"
    try:
        data = Path(path).read_bytes()
        key = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(
            f"{path}: cannot read an Ed25519 {kind} key ({e}); make a pair with: edge keygen",
            stage="sign",
        ) from e
    if not isinstance(key, Ed25519PrivateKey if private else Ed25519PublicKey):
        raise ConfigError(f"{path}: not an Ed25519 {kind} key; make one with: edge keygen")
    return key


def sign_bundle(bundle: str | Path, key: str | Path) -> Path:
    """Check the bundle's hashes, then sign every file in it; returns the signature's path."""
    root = Path(bundle)
    private = _load_key(key, private=True)
    load_bundle(root)  # never sign a bundle whose files already disagree with its manifest
    files = bundle_files(root)
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "files": [list(f) for f in files],
        "key_sha256": hashlib.sha256(_public_pem(private.public_key())).hexdigest(),
        "signature": base64.b64encode(private.sign(signed_bytes(files))).decode(),
    }
    return write_json(root / SIGNATURE, record)


def verify_bundle(bundle: str | Path, public_key: str | Path) -> None:
    """Raise BundleError unless ``bundle`` is signed by ``public_key`` and no file in it was
    changed, added or removed since."""
    root = Path(bundle)
    key = _load_key(public_key, private=False)
    from cryptography.exceptions import InvalidSignature  # optional dependency (extra "sign")

    sig_path = root / SIGNATURE
    if not (root / MANIFEST).is_file():
        raise BundleError(f"{root}: not a bundle (no {MANIFEST})")
    if not sig_path.is_file():
        raise BundleError(
            f"{root}: not signed (no {SIGNATURE}) but --verify-key was given; sign it with: "
            f"edge sign {root} --key KEY"
        )
    try:
        rec = json.loads(sig_path.read_text())
        files = [(str(p), str(h)) for p, h in rec["files"]]
        signature = base64.b64decode(rec["signature"], validate=True)
        if rec.get("format") != FORMAT:
            raise ValueError(f"format {rec.get('format')!r}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{sig_path}: unreadable signature ({e}); re-sign the bundle") from e
    try:
        key.verify(signature, signed_bytes(sorted(files)))
    except InvalidSignature:
        raise BundleError(
            f"{sig_path}: the signature does not verify with {public_key}: it was altered, or "
            "made with another key"
        ) from None
    listed, now = dict(files), dict(bundle_files(root))
    problems = (
        [f"changed: {p}" for p in sorted(listed) if p in now and now[p] != listed[p]]
        + [f"missing: {p}" for p in sorted(listed) if p not in now]
        + [f"not signed: {p}" for p in sorted(now) if p not in listed]
    )
    if problems:
        more = f" and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise BundleError(
            f"{root}: does not match its signature ({'; '.join(problems[:SHOWN])}{more}); "
            "the bundle was altered after signing: restore it, or re-sign a trusted copy"
        )
