#!/usr/bin/env bash
# Device check of the TensorRT backend (runtime/backends/trt.py) on a GPU machine.
#
#   bash bench/device_check_trt.sh            (from the repository root; writes to $OUT if set)
#
# 1. prints what is there: GPU (nvidia-smi), Python, pip, tensorrt, pycuda, cuda-python, torch,
#    onnx, onnxruntime (nothing is installed: the machine may have no network);
# 2. runs the CUDA-orchestration test (tests/runtime/test_runtime_trt_gpu.py, marked cuda): the
#    real backend with a stand-in engine whose execute_async_v3 runs a CUDA kernel; needs
#    pycuda, nvcc and a GPU, not TensorRT (expected: "2 passed", or 1 passed + 1 skipped
#    without cuda-python);
# 3. if tensorrt + pycuda + a GPU + torch/onnx/onnxruntime are importable: builds the tiny
#    bundle's FP32 engines with edge build, compares TensorRT with ONNX Runtime, checks the
#    zero-copy taps (head input address == trunk output buffer), CUDA-graph replay (when
#    cuda-python is there) and a pipeline run, then runs the marked pytest files;
# 4. prints one line "VERDICT: PASS | FAIL | SKIP (<why>)".
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && .venv/bin/python -c "import numpy" 2>/dev/null && PY="$PWD/.venv/bin/python"
PFLAG=-P; $PY -P -c 0 2>/dev/null || PFLAG=""   # -P (Python 3.11+): no cwd on sys.path

echo "== machine"
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv 2>&1 | head -5
echo "python: $($PY --version 2>&1) ($PY)"
$PY -m pip --version 2>&1 | head -1
for m in tensorrt pycuda.driver cuda.bindings.runtime cuda.cudart numpy torch onnx onnxruntime pytest; do
  v=$($PY -c "import importlib; m = importlib.import_module('$m'); print(getattr(m, '__version__', 'present'))" 2>&1 | tail -1)
  printf '  %-22s %s\n' "$m" "$v"
done
$PY -m pip list 2>/dev/null | grep -i -E "^(tensorrt|pycuda|cuda-python|cuda-bindings|torch|onnx|numpy)" | sed 's/^/  pip: /'

need() { $PY -c "import $1" >/dev/null 2>&1; }
# The package maps edge.convert -> convert/ etc. Without an installed copy, mirror that layout in
# a temporary folder and run from there (pytest with python -P, so that the repository's edge/
# is not found first through the current directory). tests/ goes after the package on the path:
# tests/edge/ would otherwise shadow it as a namespace package.
RUNDIR="$PWD"; REPO="$PWD"; PYTEST=(-m pytest)
if ! $PY -c "import edge.runtime.backends.trt" >/dev/null 2>&1; then
  PKG="$(mktemp -d)"; mkdir -p "$PKG/edge"
  for f in edge/*; do ln -s "$REPO/$f" "$PKG/edge/"; done
  for d in convert calib runtime jetson; do ln -s "$REPO/$d" "$PKG/edge/$d"; done
  RUNDIR="$PKG"; PYTEST=($PFLAG -m pytest -o "pythonpath=$PKG $REPO/tests")
  export PYTHONPATH="$PKG:$REPO/tests${PYTHONPATH:+:$PYTHONPATH}"
  echo "(package not installed: using a mirror of its layout in $PKG)"
else
  export PYTHONPATH="$REPO/tests${PYTHONPATH:+:$PYTHONPATH}"
fi

echo "== CUDA orchestration (stand-in engine, no TensorRT)"
cudatest=0; cudalog="$OUT/cuda_orchestration.log"
if need numpy && need pytest; then
  timeout 240 $PY "${PYTEST[@]}" -q -p no:cacheprovider -m cuda -rs \
    tests/runtime/test_runtime_trt_gpu.py >"$cudalog" 2>&1
  cudatest=$?
  [ "$cudatest" -eq 5 ] && cudatest=0  # 5: nothing ran (skipped at collection: no pycuda)
  tail -8 "$cudalog"
else
  echo "numpy or pytest not importable: skipped" | tee "$cudalog"
fi
cuda_ran=no; grep -q " passed" "$cudalog" && cuda_ran=yes

missing=""
for m in tensorrt pycuda.driver numpy torch onnx onnxruntime; do need "$m" || missing="$missing $m"; done
if [ -n "$missing" ]; then
  if [ "$cudatest" -ne 0 ]; then
    echo "VERDICT: FAIL (CUDA orchestration test, see $cudalog; TensorRT part not run:$missing)"
    exit 1
  elif [ "$cuda_ran" = yes ]; then
    echo "VERDICT: PASS (CUDA orchestration only; TensorRT part not run, not importable:$missing)"
  else
    echo "VERDICT: SKIP (not importable here:$missing; install them to run this check)"
  fi
  exit 0
fi

echo "== TensorRT backend check"
(cd "$RUNDIR" && timeout 240 $PY - "$OUT") <<'EOF'
import json, sys, tempfile, time
from pathlib import Path
import numpy as np

out = Path(sys.argv[1]); failures = []; info = {}
def say(*a): print(*a, flush=True)
try:
    import tensorrt as trt
    from tiny_models import make_tiny_bundle
    from edge.convert.engine.build import build_engines
    from edge.convert.engine.config import BuildConfig
    from edge.core.manifest import load_bundle
    from edge.runtime.backends.trt import TensorRTBackend
    from edge.runtime.backends.trt_selftest import compare_with_onnxruntime
    from edge.runtime.backends.trt_cuda import cudart_module
    from edge.core.preprocess import frames_to_input
    info["tensorrt"] = trt.__version__
    t0 = time.time()
    root = make_tiny_bundle(Path(tempfile.mkdtemp()))
    engines = build_engines(root, BuildConfig(precision="fp32", workspace_mib=256))
    say(f"built {len(engines)} engines in {time.time() - t0:.1f} s: {engines[0].parent}")
    folder, bundle = engines[0].parent, load_bundle(root)
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(4)]
    comparisons = compare_with_onnxruntime(root, folder, frames, precisions=["fp32"])
    info["compare"] = [c.line() for c in comparisons]
    for c in comparisons:
        say("  " + c.line())
    # FP32 engines run TF32 convolutions on Ampere and newer: errors up to 2% of the range
    bad = [c.line() for c in comparisons if not c.max_err <= 2e-2]
    if bad:
        failures.append("TensorRT vs ONNX Runtime beyond 2% of the output range: " + "; ".join(bad))
    feed = {bundle.input.name: frames_to_input([frames[0]], bundle.input)}
    head = bundle.tasks["defect"].head
    for graph in (False, True):
        if graph and cudart_module() is None:
            say("  capture_graph: cuda-python not installed, not checked"); continue
        with TensorRTBackend(precision="fp32", capture_graph=graph).load(folder / "trunk.fp32.engine") as t, \
             TensorRTBackend(precision="fp32", capture_graph=graph).load(folder / f"{head}.fp32.engine") as h:
            res = [h.run_from_taps(t.run_taps(feed)) for _ in range(3)]
            same = all(h.tensor_address(i.name) == t.device_ptr(i.name) for i in h.inputs())
            say(f"  graph={graph}: zero-copy taps {same}, graphs captured {t.graph_captured}/{h.graph_captured}, "
                f"gpu ms trunk {t.last_gpu_ms:.3f} head {h.last_gpu_ms:.3f}")
            if not same: failures.append("head inputs are not bound to the trunk's buffers")
            if graph and not (t.graph_captured and h.graph_captured): failures.append("graphs not captured")
            info[f"graph_{graph}"] = {k: v.tolist() for k, v in res[-1].items()}
    if "graph_True" in info and not all(np.allclose(info["graph_True"][k], v, atol=1e-5) for k, v in info["graph_False"].items()):
        failures.append("CUDA-graph replay differs from plain enqueue")
    from edge.runtime.pipeline import Pipeline
    with Pipeline(root, backend="tensorrt", backend_options={"precision": "fp32"}) as pipe:
        r = pipe.process(frames[0])
        say(f"  pipeline on engines: ran {r.ran}, timings {r.timings_ms()}")
except Exception as e:  # report, do not hide
    import traceback; traceback.print_exc()
    failures.append(f"{type(e).__name__}: {e}")
(out / "device_check_trt.json").write_text(json.dumps({"failures": failures, **info}, indent=1, default=str))
say("CHECK: " + ("ok" if not failures else "; ".join(failures)))
sys.exit(1 if failures else 0)
EOF
check=$?

echo "== marked tests"
tests=0
if need pytest; then
  timeout 240 $PY "${PYTEST[@]}" -q -p no:cacheprovider -m tensorrt \
    -rs tests/runtime/test_runtime_trt.py tests/convert/engine/test_build_trt.py \
    tests/convert/engine/test_calibrator.py 2>&1 | tail -25
  tests=${PIPESTATUS[0]}
else
  echo "pytest not importable: skipped"
fi

if [ "$check" -eq 0 ] && [ "$tests" -eq 0 ] && [ "$cudatest" -eq 0 ]; then echo "VERDICT: PASS"
else echo "VERDICT: FAIL (check exit $check, pytest exit $tests, cuda test exit $cudatest; details above and in $OUT)"; fi
