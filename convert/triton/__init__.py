"""Triton Inference Server: the model repository writer (``edge export-triton``) and a local
server launcher for tests and CPU machines (docs/triton.md)."""

from edge.convert.triton.repo import FLAVORS, TritonExportConfig, export_triton

__all__ = ["FLAVORS", "TritonExportConfig", "export_triton"]
