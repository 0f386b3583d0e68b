"""Which nodes and tensors of a head graph serve which task.

``head_nodes``: the nodes computing some outputs (for ``--keep-float-head``);
``task_only_tensors``: the tensors that only some tasks' outputs depend on (for
``--dense-algorithm``: the segmentation decoder's tensors, calibrated by an algorithm of their own).
"""

from __future__ import annotations

from collections.abc import Collection

import onnx

from edge.calib.qdq import node_key


def _ancestors(
    model: onnx.ModelProto, outputs: Collection[str], stop: Collection[str]
) -> tuple[set[str], set[str]]:
    """(node keys, tensor names) that ``outputs`` depend on, not looking past ``stop``."""
    producer = {o: n for n in model.graph.node for o in n.output if o}
    todo, seen, keys = list(outputs), set(), set()
    stop = set(stop)
    while todo:
        t = todo.pop()
        if t in seen or t in stop or t not in producer:
            continue
        seen.add(t)
        node = producer[t]
        keys.add(node_key(node))
        todo.extend(i for i in node.input if i)
    return keys, seen


def head_nodes(
    model: onnx.ModelProto, outputs: Collection[str], stop: Collection[str] = ()
) -> set[str]:
    """Nodes (``node_key``) that compute any of ``outputs``, not looking past ``stop`` tensors
    (the trunk's, in the fused graph). In a merged graph a layer shared by several tasks is
    among them: keeping a head float keeps every layer it depends on float."""
    return _ancestors(model, outputs, stop)[0]


def task_only_tensors(
    model: onnx.ModelProto,
    outputs: Collection[str],
    others: Collection[str],
    stop: Collection[str] = (),
) -> set[str]:
    """Tensors computed (by a node of ``model``) for ``outputs`` and for none of ``others`` (the
    other tasks' outputs; those absent from ``model`` are ignored), not looking past ``stop``.
    In a merged graph a layer shared with another task is not among them."""
    mine = _ancestors(model, outputs, stop)[1]
    return mine - _ancestors(model, others, stop)[1]
