#!/usr/bin/env bash
# Set up etr-edge on a Jetson with JetPack 5.1.x (L4T R35), 6.x (L4T R36) or 7.x (L4T R38/R39).
#
#   jetson/setup.sh [--venv DIR] [--no-apt] [--force] [--image-build]
#
# - apt: Python venv/dev tools, a compiler (pycuda builds from source), GStreamer tools; JetPack's
#   TensorRT Python bindings and OpenCV if they are missing (JetPack's OpenCV has GStreamer,
#   pip's wheels do not: csi:// and gst: sources need it).
# - a venv made from the system python3 with --system-site-packages, so JetPack's cv2 and
#   tensorrt (built for that python) stay visible inside it. Python 3.8 (JetPack 5), 3.10
#   (JetPack 6) and 3.12 (JetPack 7) all run what a board needs (edge build/run/profile,
#   jetson/*); training and conversion (`edge train/convert/calibrate/demo`, torch + onnx) need
#   Python 3.10+ and belong on a PC;
# - numpy < 2 (JetPack's cv2 is built against numpy 1.x), the other runtime dependencies, pycuda
#   built against /usr/local/cuda, and etr-edge itself with --no-deps, so no pip OpenCV is ever
#   installed over the system one;
# - a verdict: OpenCV with GStreamer, TensorRT, pycuda, etr-edge importable.
#
# --image-build (jetson/Dockerfile): no apt, no JetPack check, and the verdict only warns, since
# the GPU driver (libcuda) is mounted into containers at run time, not at image build time.
# Safe to run again: every step checks before it changes anything. Exit status 0 = READY.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
venv="${EDGE_VENV:-$repo/.venv}"
use_apt=1
force=0
image_build=0

# The runtime dependencies of pyproject.toml except OpenCV (the system one is used), and the
# "jetson" extra. tests/jetson/test_jetson_kit.py checks this list against pyproject.toml.
deps=("numpy>=1.23,<2" "onnxruntime>=1.16" "packaging>=21")
jetson_deps=("pycuda>=2022.1")

say() { printf '[setup] %s\n' "$*"; }
die() {
  printf '[setup] error: %s\n' "$*" >&2
  exit 1
}
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --venv)
      [ $# -ge 2 ] || die "--venv needs a folder"
      venv=$2
      shift 2
      ;;
    --no-apt) use_apt=0 && shift ;;
    --force) force=1 && shift ;;
    --image-build) image_build=1 use_apt=0 force=1 && shift ;;
    -h | --help) usage && exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

# -- 1. which JetPack --------------------------------------------------------------------------
# EDGE_L4T_RELEASE_FILE: another release file (tests feed the files of other boards)
release=$(head -n 1 "${EDGE_L4T_RELEASE_FILE:-/etc/nv_tegra_release}" 2>/dev/null || true)
case "$release" in
  *"R35 "*) say "L4T R35 (JetPack 5.x): ${release%%,*}" ;;
  *"R36 "*) say "L4T R36 (JetPack 6.x): ${release%%,*}" ;;
  *"R38 "* | *"R39 "*) say "L4T ${release:2:3} (JetPack 7.x): ${release%%,*}" ;;
  *"R32 "*) die "L4T R32 is JetPack 4.x: its TensorRT 8.2 and Python 3.6 are too old for etr-edge (JetPack 5.1 or newer is needed)" ;;
  *)
    if [ "$force" -eq 1 ]; then
      say "not a JetPack 5.1/6.x/7.x board (/etc/nv_tegra_release: '${release:-missing}'); going on (--force)"
    else
      die "this is not JetPack 5.1/6.x/7.x (/etc/nv_tegra_release: '${release:-missing}'); in a container without that file pass --force"
    fi
    ;;
esac

# -- 2. system packages ------------------------------------------------------------------------
if [ "$use_apt" -eq 1 ]; then
  say "apt: python3-venv, python3-dev, a compiler, GStreamer tools"
  as_root apt-get update
  as_root apt-get install -y --no-install-recommends \
    python3-venv python3-pip python3-dev build-essential \
    gstreamer1.0-tools gstreamer1.0-plugins-good gstreamer1.0-plugins-bad v4l-utils
  if ! python3 -c 'import tensorrt' 2>/dev/null; then
    say "apt: TensorRT's Python bindings (python3-libnvinfer)"
    as_root apt-get install -y --no-install-recommends python3-libnvinfer
  fi
  if ! python3 -c 'import cv2' 2>/dev/null; then
    say "apt: JetPack's OpenCV (built with GStreamer)"
    as_root apt-get install -y --no-install-recommends nvidia-opencv ||
      as_root apt-get install -y --no-install-recommends python3-opencv
  fi
else
  say "skipping apt (--no-apt)"
fi

# -- 3. the venv -------------------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv (system python3, --system-site-packages)"
  python3 -m venv --system-site-packages "$venv"
elif ! grep -qi '^include-system-site-packages *= *true' "$venv/pyvenv.cfg"; then
  die "$venv exists without --system-site-packages, so JetPack's cv2/tensorrt are invisible in it; remove it or pass --venv NEW_DIR"
else
  say "using the existing $venv"
fi
py="$venv/bin/python"
pip=("$py" -m pip install --disable-pip-version-check)

# -- 4. the CUDA toolkit pycuda builds against (checked before anything is installed) ----------
cuda=${CUDA_HOME:-/usr/local/cuda}
need_pycuda=1
if "$py" -c 'import pycuda.driver' 2>/dev/null; then
  need_pycuda=0
else
  [ -x "$cuda/bin/nvcc" ] || die "no CUDA toolkit at $cuda (nvcc missing): install JetPack's CUDA (sudo apt install nvidia-jetpack) or set CUDA_HOME"
  # pycuda's build compiles against cuRAND's header, which comes in a package of its own
  [ -f "$cuda/include/curand.h" ] || die "no $cuda/include/curand.h (pycuda's build needs it): sudo apt install nvidia-jetpack (or the cuda-libraries-dev / libcurand-dev package of this CUDA)"
fi

# -- 5. Python packages ------------------------------------------------------------------------
"${pip[@]}" --upgrade pip wheel
"${pip[@]}" "${deps[@]}"
if [ "$need_pycuda" -eq 0 ]; then
  say "pycuda already installed"
else
  say "building pycuda against $cuda (a few minutes)"
  PATH="$cuda/bin:$PATH" CUDA_ROOT="$cuda" CPATH="$cuda/include:${CPATH:-}" \
    LIBRARY_PATH="$cuda/lib64:$cuda/lib64/stubs:${LIBRARY_PATH:-}" "${pip[@]}" "${jetson_deps[@]}"
fi
say "installing etr-edge from $repo (--no-deps: no pip OpenCV)"
"${pip[@]}" --no-deps -e "$repo"

# A pip OpenCV in the venv would shadow JetPack's: remove it.
mapfile -t shadows < <("$py" -m pip list --format=freeze 2>/dev/null | grep -io '^opencv[a-z-]*' || true)
if [ "${#shadows[@]}" -gt 0 ]; then
  say "removing pip OpenCV from the venv (it lacks GStreamer): ${shadows[*]}"
  "$py" -m pip uninstall -y "${shadows[@]}"
fi

# -- 6. verdict --------------------------------------------------------------------------------
"$py" - "$image_build" <<'PY'
import sys

problems = []
try:
    import re

    import cv2

    # "GStreamer: YES (1.20.3)"; older builds: "GStreamer:" then indented "app: YES" lines
    info = cv2.getBuildInformation()
    m = re.search(r"^\s*GStreamer:[ \t]*(\S.*)?$", info, re.M)
    value = (m.group(1) or "") if m else ""
    gst = value.upper().startswith("YES") or bool(
        m and not value and re.search(r"^\s+app:\s*YES", info[m.end() : m.end() + 400], re.M)
    )
    print(f"[setup] OpenCV {cv2.__version__} from {cv2.__file__}: GStreamer {'YES' if gst else 'NO'}")
    if not gst:
        problems.append("this OpenCV has no GStreamer: csi:// and gst: sources will not open "
                        "(a pip opencv-python is shadowing JetPack's? check cv2.__file__)")
except ImportError as e:
    problems.append(f"cv2 is not importable ({e})")
for name, label in (("tensorrt", "TensorRT"), ("pycuda.driver", "pycuda"), ("edge", "etr-edge")):
    try:
        module = __import__(name, fromlist=["_"])
        print(f"[setup] {label} {getattr(module, '__version__', '')} ok")
    except ImportError as e:
        problems.append(f"{label} is not importable ({e})")
try:
    from edge.jetson.probe import probe_jetson

    info = probe_jetson()
    if info is not None:
        print(f"[setup] {info.model}: module {info.module}, L4T {info.l4t}, JetPack "
              f"{info.jetpack}, DLA cores {info.dla_cores}, TensorRT {info.tensorrt_default}")
except Exception as e:  # the probe is informative only
    print(f"[setup] device probe failed: {e}")
if problems and sys.argv[1] == "1":
    print("[setup] image build: checks that need the GPU driver run in the container:\n  - "
          + "\n  - ".join(problems))
    sys.exit(0)
elif problems:
    print("[setup] NOT READY:\n  - " + "\n  - ".join(problems))
    sys.exit(1)
print("[setup] READY")
PY
say "activate with: . $venv/bin/activate   (camera access: sudo usermod -aG video \$USER)"
