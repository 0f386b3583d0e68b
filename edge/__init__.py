"""etr-edge: ETR-NLP multi-task vision networks from PyTorch to INT8 TensorRT on Jetson.

Importing ``edge`` (or ``edge.runtime``) never imports torch, onnx or tensorrt: those are
imported by the stages that need them.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
