"""A real tritonserver (the nvidia-pytriton wheel, CPU, Python backend) serving the ``python``
flavor of a tiny bundle on 127.0.0.1 free ports: the ensemble against ONNX Runtime, the BLS model
running only the requested heads (Triton's statistics), ``edge run --backend triton`` against the
in-process run, dynamic batching of two concurrent clients, and the server's errors surfaced.

The server's venv (nvidia-pytriton, numpy<2, onnxruntime) is $EDGE_TRITON_VENV or the
repository's .triton-venv (.ci/run makes it); without it these tests skip.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.cli import main
from edge.core.errors import ConfigError, InputContractError, MissingDependencyError
from edge.core.manifest import load_bundle
from edge.core.preprocess import frames_to_input
from edge.data.demo_line import render_frame
from edge.runtime.backends.registry import create_backend
from tiny_models import make_tiny_bundle

pytest.importorskip("tritonclient.http", reason="the triton extra (tritonclient[http]) is missing")

from edge.convert.triton import TritonExportConfig, export_triton
from edge.convert.triton.server import VENV_ENV, LocalTritonServer, free_port
from edge.runtime.backends.triton import TritonBackend, TritonClient, TritonError

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get(VENV_ENV) or REPO / ".triton-venv")
QUEUE_DELAY_US = 30_000
"""Long enough that two clients' requests meet in the dynamic batcher."""

pytestmark = pytest.mark.skipif(
    not (VENV / "bin" / "python").is_file(),
    reason=f"no nvidia-pytriton venv at {VENV} (set {VENV_ENV}; .ci/run creates .triton-venv)",
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """(bundle, server URL): a dynamic-batch tiny bundle, its python-flavor repository, a server."""
    root = tmp_path_factory.mktemp("triton")
    bundle = make_tiny_bundle(root, dynamic_batch=True)
    repo = export_triton(
        bundle,
        TritonExportConfig(out=root / "repo", flavor="python", queue_delay_us=QUEUE_DELAY_US),
    )
    try:
        server = LocalTritonServer(repo, venv=VENV).start()
    except MissingDependencyError as e:
        pytest.skip(str(e))
    try:
        yield bundle, server.url
    finally:
        server.stop()


def _frames(n: int) -> list[np.ndarray]:
    return [render_frame(i).image for i in range(n)]


def _counts(client: TritonClient, model: str) -> dict[str, Any]:
    """(inferences, executions, {batch size: executions}) of the model's latest version."""
    stats = client.stats(model)["model_stats"][0]
    batches = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["batch_stats"]}
    return {
        "inferences": int(stats["inference_count"]),
        "executions": int(stats["execution_count"]),
        "batches": batches,
    }


def test_ensemble_equals_onnxruntime_on_the_same_frames(served: tuple[Path, str]) -> None:
    bundle_path, url = served
    bundle = load_bundle(bundle_path)
    client = TritonClient(url)
    ort = {p: create_backend("onnxruntime").load(bundle.path(p)) for p in bundle.parts}
    x = frames_to_input(_frames(3), bundle.input)  # a batch of 3 frames in one request
    got = client.infer("etr_ensemble", {"image": x})
    taps = ort["trunk"].run({"image": x})
    assert set(got) == {t.output for t in bundle.tasks.values()}
    for task in bundle.tasks.values():
        head = ort[task.head]
        want = head.run({t.name: taps[t.name] for t in head.inputs()})[task.output]
        assert got[task.output].shape == want.shape
        np.testing.assert_allclose(got[task.output], want, rtol=1e-5, atol=1e-5)
    for b in ort.values():
        b.close()


def test_bls_runs_only_the_requested_heads(served: tuple[Path, str]) -> None:
    bundle_path, url = served
    bundle = load_bundle(bundle_path)
    client = TritonClient(url)
    models = ["etr_trunk", *(f"etr_head_{t}" for t in bundle.tasks)]
    before = {m: _counts(client, m)["inferences"] for m in models}
    x = frames_to_input(_frames(1), bundle.input)
    for _ in range(3):
        out = client.infer("etr_bls", {"image": x}, parameters={"tasks": "defect,angle"})
        assert set(out) == {"defect_logits", "angle_value"}
    after = {m: _counts(client, m)["inferences"] for m in models}
    ran = {m: after[m] - before[m] for m in models}
    assert ran == {
        "etr_trunk": 3,
        "etr_head_defect": 3,
        "etr_head_angle": 3,
        "etr_head_attrs": 0,
        "etr_head_mask": 0,
    }
    everything = client.infer("etr_bls", {"image": x})  # no parameter: every task
    assert set(everything) == {t.output for t in bundle.tasks.values()}
    with pytest.raises(TritonError, match="unknown task"):
        client.infer("etr_bls", {"image": x}, parameters={"tasks": "nope"})


def test_bls_runs_a_conditional_head_only_when_its_condition_holds(
    served: tuple[Path, str],
) -> None:
    bundle_path, url = served
    bundle = load_bundle(bundle_path)
    client = TritonClient(url)
    x = frames_to_input(_frames(1), bundle.input)
    logits = client.infer("etr_ensemble", {"image": x}, ["defect_logits"])["defect_logits"]
    label = bundle.tasks["defect"].spec.labels[int(logits[0].argmax())]
    other = next(lb for lb in bundle.tasks["defect"].spec.labels if lb != label)
    cases = [  # (condition, does the mask head run)
        (f"mask: defect == {label}", True),
        (f"mask: defect != {label}", False),
        (f"mask: defect in [{other}, {label}]", True),
        (f"mask: defect not in [{label}]", False),
    ]
    for when, runs in cases:
        before = _counts(client, "etr_head_mask")["inferences"]
        out = client.infer(
            "etr_bls", {"image": x}, parameters={"tasks": "defect,mask", "when": when}
        )
        assert set(out) == ({"defect_logits", "mask_logits"} if runs else {"defect_logits"}), when
        assert _counts(client, "etr_head_mask")["inferences"] - before == int(runs), when
    with pytest.raises(TritonError, match="classification task"):
        client.infer("etr_bls", {"image": x}, parameters={"when": "mask: angle > 3"})
    with pytest.raises(TritonError, match="must be among"):
        client.infer(
            "etr_bls", {"image": x}, parameters={"tasks": "mask", "when": "mask: defect == ok"}
        )


def _results(path: Path) -> list[tuple[int, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["frame"], r["tasks"]) for r in lines if "event" not in r]


def _same(got: Any, want: Any) -> None:
    """Equal JSON, floats to 1e-6 (the server's ONNX Runtime may sum in another order)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want)
        for key, value in want.items():
            _same(got[key], value)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want):
            _same(g, w)
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-6)
    else:
        assert got == want


def test_edge_run_on_triton_gives_the_same_jsonl(served: tuple[Path, str], tmp_path: Path) -> None:
    bundle, url = served
    common = ["run", str(bundle), "--source", "synthetic:?frames=6", "--warmup", "1"]
    local, remote, fused = tmp_path / "ort.jsonl", tmp_path / "triton.jsonl", tmp_path / "ens.jsonl"
    assert main([*common, "--out", str(local)]) == 0
    assert main([*common, "--out", str(remote), "--backend", "triton", "--server", url]) == 0
    args = ["--out", str(fused), "--backend", "triton", "--server", url, "--fused"]
    assert main([*common, *args]) == 0  # fused mode: the repository's ensemble
    want = _results(local)
    assert len(want) == 6
    for got in (_results(remote), _results(fused)):
        assert [f for f, _ in got] == [f for f, _ in want]
        for (_, g), (_, w) in zip(got, want):
            _same(g, w)
    summary = json.loads(remote.with_name("triton.summary.json").read_text())
    assert summary["frames"] == 6 and summary["stages"]["trunk"]["count"] == 6


def test_two_concurrent_clients_are_batched(served: tuple[Path, str]) -> None:
    bundle_path, url = served
    bundle = load_bundle(bundle_path)
    x = frames_to_input(_frames(1), bundle.input)
    before = _counts(TritonClient(url), "etr_trunk")
    errors: list[BaseException] = []
    barrier = threading.Barrier(2, timeout=30)

    def client() -> None:
        try:
            c = TritonClient(url)
            for _ in range(6):
                barrier.wait()
                c.infer("etr_trunk", {"image": x}, ["shared_4"])
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    after = _counts(TritonClient(url), "etr_trunk")
    assert after["inferences"] - before["inferences"] == 12
    grew = {
        size: n - before["batches"].get(size, 0)
        for size, n in after["batches"].items()
        if n > before["batches"].get(size, 0)
    }
    assert any(size > 1 for size in grew), grew  # the two clients' frames ran as one batch
    assert after["executions"] - before["executions"] < 12


def test_server_errors_are_clear_etr_edge_errors(served: tuple[Path, str], tmp_path: Path) -> None:
    bundle_path, url = served
    bundle = load_bundle(bundle_path)
    client = TritonClient(url)
    x = frames_to_input(_frames(1), bundle.input)
    with pytest.raises(TritonError, match=r"triton: .*etr_ensemble.*missing required input"):
        client.infer("etr_ensemble", {})
    with pytest.raises(TritonError, match=r"unexpected shape for input 'image'"):
        client.infer("etr_ensemble", {"image": x[:, :16]})
    # the backend checks a feed against the server's metadata before sending it
    with TritonBackend(server=url).load(bundle.path("trunk")) as trunk:
        assert trunk.run({"image": x})["shared_0"].shape == (1, 3, 32, 32)
        with pytest.raises(InputContractError, match="expected shape uint8"):
            trunk.run({"image": x[:, :16]})
    other = tmp_path / "trunk.onnx"  # a trunk the server's etr_trunk was not made from
    other.write_bytes(bundle.path("trunk").read_bytes() + b"\0")
    with pytest.raises(TritonError, match=r"exported from another trunk\.onnx"):
        TritonBackend(server=url).load(other)
    with pytest.raises(TritonError, match="not ready"):
        TritonBackend(server=url, prefix="other").load(bundle.path("trunk"))
    with pytest.raises(TritonError, match="cannot reach the Triton server"):
        TritonClient(f"http://127.0.0.1:{free_port()}").ready("etr_trunk")
    with pytest.raises(ConfigError, match="no server given"):
        TritonBackend()
    rc = main(["run", str(bundle_path), "--source", "synthetic:?frames=2", "--backend", "triton"])
    assert rc == 2
