"""onnx-simplifier + onnx's full checker on every exported graph."""

from __future__ import annotations

import onnx

from edge.core.errors import ExportError


def simplify_and_check(data: bytes, part: str) -> tuple[onnx.ModelProto, bool]:
    """Simplify one exported graph and run ``onnx.checker`` (full check, shape inference).

    Returns (model, simplified): when onnxsim cannot simplify (its own check fails) the exported
    graph is kept, and the caller records why. A graph that fails the checker is an ExportError.
    """
    import onnxsim

    model = onnx.load_from_string(data)
    simplified = False
    try:
        sim, ok = onnxsim.simplify(model)
        if ok:
            model, simplified = sim, True
    except Exception:  # onnxsim raises bare RuntimeErrors from C++; keep the exported graph
        simplified = False
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{part}: the exported ONNX graph fails onnx.checker: {e}") from e
    return model, simplified
