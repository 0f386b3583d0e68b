"""Source files copied into the repository as ``<model>/<version>/model.py`` (python flavor and
the BLS model). They run inside Triton's Python backend stub, not in etr-edge: they import only
numpy, onnxruntime and ``triton_python_backend_utils``, never ``edge``."""
