from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from edge.calib.taskwise import head_nodes, task_only_tensors


def _graph() -> onnx.ModelProto:
    """x -> Relu -> a; a -> Neg -> out1; a -> Abs -> c -> Exp -> out2; (a, c) -> Add -> out3."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Neg", ["a"], ["out1"], name="neg"),
        helper.make_node("Abs", ["a"], ["c"], name="abs"),
        helper.make_node("Exp", ["c"], ["out2"], name="exp"),
        helper.make_node("Add", ["a", "c"], ["out3"], name="add"),
    ]
    vi = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("out1", "out2", "out3")
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    return helper.make_model(helper.make_graph(nodes, "g", [x], vi))


def test_task_only_tensors_leave_out_what_other_tasks_read() -> None:
    m = _graph()
    assert task_only_tensors(m, ["out2"], ["out1"]) == {"c", "out2"}
    assert task_only_tensors(m, ["out2"], ["out1", "out3"]) == {"out2"}  # c feeds out3 too
    assert task_only_tensors(m, ["out2"], ["not_in_this_graph"]) == {"a", "c", "out2"}
    assert task_only_tensors(m, ["out2"], [], stop=["a"]) == {"c", "out2"}


def test_head_nodes_stop_at_the_trunk() -> None:
    m = _graph()
    assert len(head_nodes(m, ["out2"])) == 3
    assert len(head_nodes(m, ["out2"], stop=["a"])) == 2
