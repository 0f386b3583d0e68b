"""Triton Inference Server as a backend: each bundle part runs as a model on a remote server.

``edge export-triton`` (convert/triton/) writes a model repository whose model names come from
:func:`model_name`; this backend maps a part of the bundle to the same name, so
``Pipeline(bundle, backend="triton", backend_options={"server": "http://host:8000"})`` runs the
trunk and then only the due heads on the server, and every source, schedule, sink and summary of
the runtime is unchanged. Fused mode (``edge run --fused``) runs the repository's ensemble
(image in, every task's output out: trunk once, heads on its taps, all inside the server).

The client is ``tritonclient.http`` (extra ``triton``), imported when a backend loads. Its HTTP
client is gevent-based and bound to the thread that made it, so each thread gets its own.
A request the server refuses (missing input, wrong shape, model not ready) raises
:class:`TritonError` with the server's own message.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.errors import ConfigError, EdgeError, import_optional
from edge.core.files import sha256_file
from edge.runtime.backends.base import Backend, TensorMeta

DEFAULT_PREFIX = "etr"
ENSEMBLE = "ensemble"
BLS = "bls"
BLS_TASKS_PARAMETER = "tasks"
"""Request parameter of the BLS model: comma-separated tasks to run (default: every task)."""
ONNX_SHA256_PARAMETER = "etr_onnx_sha256"
"""config.pbtxt parameter of every part's model: the sha256 of the bundle ONNX it was made from."""
BLS_WHEN_PARAMETER = "when"
"""Request parameter of the BLS model: conditions on a classification task's label,
``"mask: defect != ok; angle: defect in [scratch, hole]"``."""

DTYPES = {
    "FP32": "float32",
    "FP16": "float16",
    "FP64": "float64",
    "UINT8": "uint8",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
}
"""Triton datatype -> numpy dtype name (the KServe v2 names; config.pbtxt adds ``TYPE_``)."""
TRITON_DTYPES = {v: k for k, v in DTYPES.items()}


class TritonError(EdgeError):
    """The Triton server is unreachable, or refused a request or a model."""

    stage = "triton"


def model_name(part: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The repository's model for a bundle part: 'trunk' -> 'etr_trunk', 'heads/defect' ->
    'etr_head_defect', 'heads_all' -> 'etr_heads_all', 'fused' -> the ensemble 'etr_ensemble',
    and 'ensemble' / 'bls' -> 'etr_ensemble' / 'etr_bls'."""
    if part == "fused":
        part = ENSEMBLE
    if part.startswith("heads/"):
        return f"{prefix}_head_{part[len('heads/') :]}"
    return f"{prefix}_{part}"


def part_of(path: Path) -> str:
    """A bundle file -> its part: 'b/trunk.onnx' -> 'trunk', 'b/heads/defect.onnx' ->
    'heads/defect' (the layout of edge.core.manifest)."""
    return f"heads/{path.stem}" if path.parent.name == "heads" else path.stem


def _host_port(url: str) -> tuple[str, bool]:
    """'http://h:8000' / 'h:8000' / 'https://h' -> ('h:8000', ssl)."""
    text = url.strip().rstrip("/")
    ssl = text.startswith("https://")
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    if not text or "/" in text:
        raise ConfigError(
            f"triton server URL '{url}': expected http://HOST:PORT (the server's HTTP endpoint, "
            "default port 8000)"
        )
    return text, ssl


class TritonClient:
    """A thin, thread-safe wrapper of ``tritonclient.http`` raising :class:`TritonError`."""

    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        self.url = url
        self._address, self._ssl = _host_port(url)
        self.timeout_s = float(timeout_s)
        # optional extra 'triton': the client library is imported only when a client is made
        self._http = import_optional(
            "tritonclient.http",
            lambda e: (
                f"the triton backend needs the Python package 'tritonclient[http]' ({e}); "
                "install it with: pip install 'etr-edge[triton]'"
            ),
        )
        self._local = threading.local()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._http.InferenceServerClient(
                self._address,
                ssl=self._ssl,
                connection_timeout=self.timeout_s,
                network_timeout=self.timeout_s,
            )
            self._local.client = client
        return client

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        from tritonclient.utils import InferenceServerException  # same optional extra

        try:
            return fn(*args, **kw)
        except InferenceServerException as e:
            raise TritonError(
                f"server {self.url} refused {what}: {e.message()}; send what the model's "
                "metadata asks (GET /v2/models/<model>), from the bundle the repository came from"
            ) from e
        except OSError as e:
            raise TritonError(
                f"cannot reach the Triton server at {self.url} for {what} ({e}); start it on the "
                "repository from edge export-triton, or check --server"
            ) from e

    def ready(self, model: str) -> bool:
        return bool(self._call(f"readiness of '{model}'", self._client().is_model_ready, model))

    def metadata(self, model: str) -> dict[str, Any]:
        """The model's inputs/outputs ({name, datatype, shape}); TritonError when not ready."""
        if not self.ready(model):
            raise TritonError(
                f"model '{model}' is not ready on {self.url}; is the repository from edge "
                "export-triton of this bundle loaded (and with the same --prefix)?"
            )
        return dict(self._call(f"metadata of '{model}'", self._client().get_model_metadata, model))

    def config(self, model: str) -> dict[str, Any]:
        """The model's configuration as the server holds it (``/v2/models/<model>/config``)."""
        return dict(
            self._call(f"configuration of '{model}'", self._client().get_model_config, model)
        )

    def stats(self, model: str) -> dict[str, Any]:
        """``/v2/models/<model>/stats`` of the model's versions (executions, batch sizes...)."""
        out = self._call(f"statistics of '{model}'", self._client().get_inference_statistics, model)
        return dict(out)

    def infer(
        self,
        model: str,
        feed: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
    ) -> dict[str, np.ndarray]:
        """One request (binary tensors); returns {output: array} for ``outputs`` (default all
        the model returned)."""
        http = self._http
        inputs = []
        for name, array in feed.items():
            a = np.ascontiguousarray(array)
            dtype = TRITON_DTYPES.get(a.dtype.name)
            if dtype is None:
                raise ConfigError(f"triton: input '{name}' has dtype {a.dtype}, not sendable")
            tensor = http.InferInput(name, list(a.shape), dtype)
            tensor.set_data_from_numpy(a, binary_data=True)
            inputs.append(tensor)
        wanted = [http.InferRequestedOutput(n, binary_data=True) for n in outputs or ()]
        result = self._call(
            f"an inference request to '{model}'",
            self._client().infer,
            model,
            inputs,
            outputs=wanted or None,
            parameters=dict(parameters) if parameters else None,
        )
        names = list(outputs) if outputs else [o["name"] for o in result.get_response()["outputs"]]
        return {n: result.as_numpy(n) for n in names}

    def close(self) -> None:
        """Close this thread's connection; other threads' clients are dropped (their sockets
        close when they are collected: a gevent client may only be used by its own thread)."""
        client = getattr(self._local, "client", None)
        self._local = threading.local()
        if client is not None:
            client.close()


@dataclass(frozen=True)
class TritonOptions:
    """``server``: the HTTP endpoint (``http://host:8000``); ``prefix``: the model names'
    prefix given to edge export-triton; ``timeout_s``: connection and request timeout."""

    server: str = ""
    prefix: str = DEFAULT_PREFIX
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.server:
            raise ConfigError(
                "triton backend: no server given; pass --server http://HOST:8000 (a tritonserver "
                "serving the repository from edge export-triton)"
            )
        _host_port(self.server)
        if self.timeout_s <= 0:
            raise ConfigError(f"triton backend: timeout_s must be > 0, got {self.timeout_s}")


class TritonBackend(Backend):
    """``TritonBackend(server="http://127.0.0.1:8000").load("bundle/trunk.onnx")``: the part's
    file names the model (``model_name(part_of(path))``); the server runs it."""

    name = "triton"

    def __init__(self, options: TritonOptions | None = None, **kw: Any) -> None:
        super().__init__()
        self.options = options if options is not None else TritonOptions(**kw)
        self.model = ""
        self.client: TritonClient | None = None
        self._meta: dict[str, Any] = {}

    def _load_impl(self, path: Path) -> None:
        o = self.options
        self.model = model_name(part_of(path), o.prefix)
        self.client = TritonClient(o.server, timeout_s=o.timeout_s)
        self._meta = self.client.metadata(self.model)
        config = self.client.config(self.model)
        served = config.get("parameters", {}).get(ONNX_SHA256_PARAMETER, {}).get("string_value")
        if served and served != sha256_file(path):
            raise TritonError(
                f"model '{self.model}' on {o.server} was exported from another {path.name} than "
                f"{path} (sha256 {served[:12]}...); export this bundle with edge export-triton "
                "and serve that repository, or run with the bundle it came from"
            )

    def _describe_impl(self) -> tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]]:
        def metas(entries: Any) -> tuple[TensorMeta, ...]:
            return tuple(
                TensorMeta(
                    e["name"],
                    tuple(None if int(d) < 0 else int(d) for d in e["shape"]),
                    DTYPES.get(e["datatype"], e["datatype"]),
                )
                for e in entries
            )

        return metas(self._meta["inputs"]), metas(self._meta["outputs"])

    def _run_impl(
        self, feed: Mapping[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        assert self.client is not None  # loaded: base.run checked it
        return self.client.infer(self.model, feed, outputs)

    def _close_impl(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def __str__(self) -> str:
        return f"triton backend ({self.model or 'not loaded'} on {self.options.server})"
