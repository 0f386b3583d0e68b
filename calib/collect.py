"""Streaming activation statistics with ONNX Runtime (CPU), for the trunk and every head.

Which tensors: every float activation tensor of the graph (float graph inputs and every float
node output that is not computed from constants alone). That is what TensorRT's own calibrator
records in its cache, and a superset of the tensors TensorRT quantizes (inputs and outputs of
Conv/ConvTranspose/Gemm/MatMul, both inputs of Add, pooling and Concat inputs/outputs, the
activation fused onto a conv): in implicit INT8, a layer whose tensor has no scale falls back to
FP16/FP32, so a cache that leaves out e.g. the ReLU output feeding a Concat silently costs speed.

How: a copy of each graph lists those tensors as extra outputs (batch dimension made dynamic);
batches are fed in chunks of at most ``stream.ACTIVATION_BUDGET`` bytes of outputs, ONNX Runtime
running chunk k+1 on a worker thread while chunk k is binned (``stream.run_ahead``), and each
output only updates its ``TensorStats`` (a fixed-size histogram), so no activation outlives its
chunk. Tensors that only rearrange others (Concat, Transpose, Reshape...: ``derived_tensors``)
are not fetched: their statistics are merged from their sources', exactly. Heads are fed the
trunk's tap outputs of the same batch, and a tap's statistics are collected once, on the trunk
side: every head shares the very same ``TensorStats`` object, so a tap gets one scale in the
trunk cache and every head cache.

``map_tensors`` finds, for a graph that computes the same values as others (the fused graph vs
the trunk and heads), which tensor of which part each of its tensors is, by structural
signatures (op type, attributes, constant contents, and the signatures of the inputs), so the
fused graph reuses the split parts' statistics instead of a second pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, numpy_helper

from edge.calib.algorithms import compute_amax
from edge.calib.histogram import TensorStats
from edge.calib.stream import Chunker, run_ahead, tune_allocator
from edge.core.errors import CalibrationError
from edge.runtime.split import SplitRunner

FLOAT_TYPES = frozenset(
    {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
)
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
BATCH_DIM = "batch"


# ------------------------------------------------------------------------------ graph queries
def constant_tensors(model: onnx.ModelProto) -> set[str]:
    """Initializers, Constant outputs, and outputs of nodes whose inputs are all constant."""
    g = model.graph
    const = {t.name for t in g.initializer}
    for node in g.node:
        ins = [i for i in node.input if i]
        if node.op_type == "Constant" or (ins and all(i in const for i in ins)):
            const.update(o for o in node.output if o)
    return const


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every typed tensor (graph inputs/outputs, value_info, shape inference)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is a help, not a requirement: fall back to what is declared
        inferred = model
    types: dict[str, int] = {}
    g = inferred.graph
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        types[t.name] = t.data_type
    return types


def graph_names(model: onnx.ModelProto) -> set[str]:
    """Every tensor, initializer and node name of ``model`` (what a TensorRT cache may name)."""
    g = model.graph
    names = {i.name for i in g.input} | {t.name for t in g.initializer}
    for node in g.node:
        names.update(n for n in [node.name, *node.input, *node.output] if n)
    return names


def calibration_tensors(model: onnx.ModelProto) -> list[str]:
    """The float activation tensors of ``model``, in graph order (inputs first, then nodes)."""
    const = constant_tensors(model)
    types = tensor_types(model)
    names: list[str] = []
    seen: set[str] = set()

    def add(name: str) -> None:
        # An untyped tensor is kept; ``collect`` drops it if it turns out not to be float.
        if name and name not in const and name not in seen and types.get(name, 1) in FLOAT_TYPES:
            seen.add(name)
            names.append(name)

    for i in model.graph.input:
        add(i.name)
    for node in model.graph.node:
        for o in node.output:
            add(o)
    return names


def with_outputs(
    model: onnx.ModelProto, names: Sequence[str], *, dynamic_batch: bool = True
) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs also list ``names`` (graph inputs are skipped).

    With ``dynamic_batch`` the first dimension of every input and output becomes ``batch`` and
    the intermediate shapes are dropped (ONNX Runtime infers them again).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    types = tensor_types(model)
    inputs = {i.name for i in g.input}
    present = {o.name for o in g.output}
    for name in names:
        if name in inputs or name in present:
            continue
        g.output.append(
            onnx.helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT), None)
        )
        present.add(name)
    if dynamic_batch:
        for vi in [*g.input, *g.output]:
            shape = vi.type.tensor_type.shape
            if vi.type.HasField("tensor_type") and len(shape.dim) >= 1:
                shape.dim[0].Clear()
                shape.dim[0].dim_param = BATCH_DIM
        del g.value_info[:]
    return out


def static_batch(model: onnx.ModelProto) -> int | None:
    """The fixed batch size of the model's first input, or None if it is dynamic."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return int(dims[0].dim_value) if dims and dims[0].HasField("dim_value") else None


def session(model: onnx.ModelProto, threads: int = 0) -> ort.InferenceSession:
    """An ONNX Runtime CPU session for an in-memory model (quiet logging).

    Intra-op threads do not spin-wait between runs: here every run is followed by numpy work
    (histograms, metrics) that needs the cores the spinning threads would keep busy (spinning
    on, the demo model's collection takes twice as long on 2 cores). ONNX Runtime's own CPU
    memory arena is off: it keeps the largest chunk's buffers of every session (trunk and each
    head) for good, on top of glibc's reuse (``stream.tune_allocator``); without it the demo
    bundle's peak RSS drops from 312 to 262 MB at the same speed.
    """
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.enable_cpu_mem_arena = False
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


class BatchRunner:
    """Runs a model on batches of any size, even one exported with a fixed batch.

    It runs a dynamic-batch copy; if that fails (a fixed batch baked into a Reshape, say), it
    falls back to the original model fed in slices of its fixed batch size.
    """

    def __init__(self, model: onnx.ModelProto, outputs: Sequence[str] = (), threads: int = 0):
        self._model, self._outputs, self._threads = model, list(outputs), threads
        self.fixed = static_batch(model)
        self.session = session(with_outputs(model, outputs), threads)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._fell_back = False

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: feed[k] for k in self.input_names}
        if not self._fell_back:
            try:
                return dict(zip(self.output_names, self.session.run(None, feed)))
            except Exception:
                if self.fixed is None:
                    raise
                self._fell_back = True
                fixed_model = with_outputs(self._model, self._outputs, dynamic_batch=False)
                self.session = session(fixed_model, self._threads)
        assert self.fixed is not None
        n = next(iter(feed.values())).shape[0]
        if n % self.fixed:
            raise CalibrationError(
                f"the graph has a fixed batch of {self.fixed} that ONNX Runtime cannot run "
                f"with another batch size, and {n} frames are not a multiple of it; use a "
                f"batch and frame count that are multiples of {self.fixed}"
            )
        parts = [
            self.session.run(None, {k: v[i : i + self.fixed] for k, v in feed.items()})
            for i in range(0, n, self.fixed)
        ]
        return {
            name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(self.output_names)
        }


# ------------------------------------------------------------------------------ statistics
@dataclass
class PartStats:
    """The calibration tensors of one part, in cache order, and their statistics."""

    part: str
    tensors: list[str]
    stats: dict[str, TensorStats] = field(default_factory=dict)

    def amaxes(self, algorithm: str, *, percentile: float = 99.99) -> dict[str, float]:
        return {
            n: compute_amax(self.stats[n], algorithm, percentile=percentile) for n in self.tensors
        }


def _frames(feed: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(feed.values())))


def _update(stats: dict[str, TensorStats], name: str, value: np.ndarray) -> None:
    """Feed one batch of one tensor (a tensor that is not float is not recorded)."""
    if np.issubdtype(value.dtype, np.floating):
        if name not in stats:
            stats[name] = TensorStats(name)
        stats[name].update(value)


ALIAS_OPS = frozenset({"Identity", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze"})
"""Ops whose output holds exactly the values of their (first) input, rearranged."""


def derived_tensors(model: onnx.ModelProto, names: Collection[str]) -> dict[str, list[str]]:
    """Tensors among ``names`` whose values are exactly those of other tensors among ``names``:
    the output of a rearranging op (``ALIAS_OPS``) -> [its input]; a Concat -> its inputs.

    Their statistics are built from the sources' (``TensorStats.merge`` is exact: a histogram
    does not depend on where the values sit), so they are never fetched from ONNX Runtime nor
    binned again: Concat outputs are among the largest tensors of these networks.
    """
    wanted = set(names)
    out: dict[str, list[str]] = {}
    for node in model.graph.node:
        if not node.output or node.output[0] not in wanted:
            continue
        ins = [i for i in node.input if i]
        if node.op_type in ALIAS_OPS and ins and ins[0] in wanted:
            out[node.output[0]] = [ins[0]]
        elif node.op_type == "Concat" and ins and all(i in wanted for i in ins):
            out[node.output[0]] = ins
    return out


def _combined(name: str, sources: Sequence[TensorStats]) -> TensorStats:
    """The statistics of a tensor holding exactly the values of ``sources`` together."""
    result = TensorStats(name, num_bins=sources[0].num_bins)
    for src in sources:
        result.merge(TensorStats.from_dict({**src.to_dict(), "name": name}))
    return result


class _GraphCollector:
    """Streams one graph's batches into the statistics of ``names`` (in graph order).

    ``external`` tensors (a head's taps) get their statistics from elsewhere at ``finish``.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        names: Sequence[str],
        part: str,
        *,
        external: Collection[str] = (),
        fetch: Collection[str] = (),
    ) -> None:
        self.part, self.names = part, list(names)
        self.derived = derived_tensors(model, self.names)
        inputs = {i.name for i in model.graph.input}
        skip = set(self.derived) | set(external)
        self.direct = [n for n in self.names if n not in skip]
        wanted = [n for n in self.direct if n not in inputs]
        self.runner = BatchRunner(model, wanted + [n for n in fetch if n not in wanted])
        self.stats: dict[str, TensorStats] = {}

    @property
    def input_names(self) -> list[str]:
        return self.runner.input_names

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's outputs for one chunk (thread-safe: touches no statistics)."""
        return self.runner.run(feed)

    def record(self, feed: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]) -> None:
        """Bin one chunk's tensors (its feed and what ``run`` returned for it)."""
        for n in self.direct:
            _update(self.stats, n, feed[n] if n in feed else out[n])

    def finish(self, shared: Mapping[str, TensorStats] | None = None) -> PartStats:
        stats = {**self.stats, **(shared or {})}
        for n in self.names:  # graph order: sources are done before what derives from them
            srcs = self.derived.get(n)
            if srcs and all(s in stats for s in srcs):
                stats[n] = _combined(n, [stats[s] for s in srcs])
        tensors = [n for n in self.names if n in stats]
        if not tensors:
            raise CalibrationError(f"{self.part}: no float activation was collected")
        return PartStats(self.part, tensors, {n: stats[n] for n in tensors})


def collect_stats(
    model: onnx.ModelProto,
    feeds: Iterable[Mapping[str, np.ndarray]],
    *,
    part: str = "model",
    tensors: Sequence[str] | None = None,
) -> PartStats:
    """Statistics of ``tensors`` (default: ``calibration_tensors``) of one graph, streamed."""
    names = list(calibration_tensors(model) if tensors is None else tensors)
    tune_allocator()
    collector = _GraphCollector(model, names, part)
    chunker = Chunker(collector.runner.fixed or 1)

    def observe(feed: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]) -> None:
        chunker.observe(sum(v.nbytes for v in out.values()), _frames(feed))

    chunks = (feed for batch in feeds for feed in chunker.split(batch))
    fed = 0
    for feed, out in run_ahead(chunks, collector.run, observe):
        collector.record(feed, out)
        fed += _frames(feed)
    if fed == 0:
        raise CalibrationError(f"{part}: no calibration frames were fed; nothing to calibrate")
    return collector.finish()


def collect_bundle(
    parts: Mapping[str, onnx.ModelProto],
    batches: Iterable[np.ndarray],
    *,
    input_name: str,
    trunk: str = "trunk",
) -> dict[str, PartStats]:
    """Statistics of the trunk and every head (``parts`` minus the trunk), batch by batch.

    Each batch runs through the trunk; each head then gets the trunk's outputs of that batch for
    its inputs. A head's input (a tap) is listed in its ``PartStats`` with the trunk's own
    ``TensorStats`` object, collected once.
    """
    if trunk not in parts:
        raise CalibrationError(f"no '{trunk}' graph among the parts {sorted(parts)}")
    trunk_model = parts[trunk]
    trunk_outputs = {o.name for o in trunk_model.graph.output}
    heads = {p: m for p, m in parts.items() if p != trunk}
    for p, m in heads.items():
        missing = [i.name for i in m.graph.input if i.name not in trunk_outputs]
        if missing:
            raise CalibrationError(
                f"{p}: takes {missing}, which the trunk does not output (it outputs "
                f"{sorted(trunk_outputs)}); re-run edge convert for a consistent bundle"
            )
    tune_allocator()
    # every tap is fetched from the trunk (even one derived from another): the heads need it
    main = _GraphCollector(
        trunk_model,
        calibration_tensors(trunk_model),
        trunk,
        fetch=[o.name for o in trunk_model.graph.output],
    )
    collectors: dict[str, _GraphCollector] = {}
    for p, m in heads.items():
        taps = [i.name for i in m.graph.input]
        collectors[p] = _GraphCollector(m, calibration_tensors(m), p, external=taps)
    chunker = Chunker(main.runner.fixed or 1)
    split = SplitRunner(main, collectors)

    def run(feed: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        outs = split.run(feed)
        outs[trunk] = outs.pop("trunk")
        return outs

    def observe(feed: Mapping[str, np.ndarray], outs: dict[str, dict[str, np.ndarray]]) -> None:
        nbytes = sum(v.nbytes for out in outs.values() for v in out.values())
        chunker.observe(nbytes, _frames(feed))

    chunks = (feed for whole in batches for feed in chunker.split({input_name: whole}))
    fed = 0
    for feed, outs in run_ahead(chunks, run, observe):
        main.record(feed, outs[trunk])
        for p, c in collectors.items():
            c.record({n: outs[trunk][n] for n in c.runner.input_names}, outs[p])
        fed += _frames(feed)
        del outs
    if fed == 0:
        raise CalibrationError("no calibration frames were fed; nothing to calibrate")
    result = {trunk: main.finish()}
    trunk_stats = result[trunk].stats
    for p, c in collectors.items():
        taps = [n for n in c.runner.input_names if n in c.names]
        absent = [n for n in taps if n not in trunk_stats]
        if absent:
            raise CalibrationError(f"{p}: inputs {absent} got no trunk statistics")
        # the very same objects: one scale per tap, in the trunk cache and every head cache
        result[p] = c.finish({n: trunk_stats[n] for n in taps})
    return result


# ------------------------------------------------------------------------------ signatures
def _digest(*parts: bytes) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def tensor_signatures(
    model: onnx.ModelProto, input_signatures: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A signature per tensor that depends only on what computes it, not on names.

    Graph inputs get ``input_signatures[name]`` (default: their name), initializers a hash of
    their type, shape and contents, node outputs a hash of the op, its attributes, its inputs'
    signatures and the output's position. Two tensors with the same signature hold the same
    values for the same graph inputs.
    """
    given = dict(input_signatures or {})
    sig: dict[str, str] = {}
    g = model.graph
    for i in g.input:
        sig[i.name] = given.get(i.name, _digest(b"input", i.name.encode()))
    for t in g.initializer:
        a = numpy_helper.to_array(t)
        sig[t.name] = _digest(b"const", str(a.dtype).encode(), str(a.shape).encode(), a.tobytes())
    for node in g.node:
        fields = [node.domain.encode(), node.op_type.encode()]
        fields += [a.SerializeToString() for a in sorted(node.attribute, key=lambda a: a.name)]
        for i in node.input:
            if i and i not in sig:
                raise CalibrationError(
                    f"graph '{g.name}': node {node.name or node.op_type} reads '{i}' before it "
                    "is computed (the graph is not topologically sorted); re-run edge convert"
                )
            fields.append(sig[i].encode() if i else b"")
        base = _digest(*fields)
        for k, o in enumerate(node.output):
            if o:
                sig[o] = _digest(base.encode(), str(k).encode())
    return sig


def map_tensors(
    model: onnx.ModelProto,
    references: Mapping[str, onnx.ModelProto],
    *,
    trunk: str = "trunk",
) -> dict[str, tuple[str, str]]:
    """For each tensor of ``model`` (e.g. the fused graph): the (part, tensor) of ``references``
    (the trunk and heads) that computes the same values. Head inputs are the trunk's outputs of
    the same name. Tensors found nowhere are left out."""
    trunk_sig = tensor_signatures(references[trunk])
    where: dict[str, tuple[str, str]] = {}
    for part, ref in references.items():
        if part == trunk:
            sigs = trunk_sig
        else:
            given = {i.name: trunk_sig.get(i.name, "") for i in ref.graph.input}
            sigs = tensor_signatures(ref, given)
        inputs = {i.name for i in ref.graph.input}
        for name, s in sigs.items():
            if part != trunk and name in inputs:
                continue  # a head's input is the trunk's tensor
            where.setdefault(s, (part, name))
    return {name: where[s] for name, s in tensor_signatures(model).items() if s in where}
