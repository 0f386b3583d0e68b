#!/usr/bin/env bash
# On-board self-test: bundle -> edge build fp16 + int8 -> TensorRT vs ONNX Runtime -> edge profile
# -> PASS/FAIL with reasons.
#
#   jetson/selftest.sh [BUNDLE] [--work DIR]
#
# Without BUNDLE it makes the demo bundle with `edge demo` (needs torch and onnx, which a Jetson
# usually lacks: then run `edge demo --out demo-out` on a PC, copy demo-out/bundle to the board
# and pass its path). Run it inside the venv of jetson/setup.sh. Environment:
#   EDGE_PROFILE_ARGS   extra arguments for `edge profile` (default: a short TensorRT run)
# Exit status: 0 PASS, 1 FAIL.
set -euo pipefail

work="${EDGE_SELFTEST_DIR:-${HOME:-/tmp}/.cache/etr-edge/selftest}"
bundle=""
py="${PYTHON:-python3}"
reasons=()
notes=()

say() { printf '[selftest] %s\n' "$*"; }
fail() {
  reasons+=("$1")
  say "FAIL: $1"
}
die() {
  say "FAIL: $*"
  exit 1
}
usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --work)
      [ $# -ge 2 ] || die "--work needs a folder"
      work=$2
      shift 2
      ;;
    -h | --help) usage && exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *)
      bundle=$1
      shift
      ;;
  esac
done
mkdir -p "$work"

command -v edge >/dev/null || die "'edge' is not on PATH: run jetson/setup.sh, then . .venv/bin/activate"
"$py" -c 'import tensorrt' 2>/dev/null || die "TensorRT's Python bindings are not importable: run jetson/setup.sh"

# -- 1. the bundle -----------------------------------------------------------------------------
if [ -z "$bundle" ]; then
  if "$py" -c 'import torch, onnx' 2>/dev/null; then
    say "== edge demo (convert + calibrate the demo model) into $work/demo"
    edge demo --out "$work/demo" --frames 30 || die "edge demo failed (see above)"
    bundle="$work/demo/bundle"
  else
    die "no BUNDLE given and torch/onnx are missing here to make the demo one: on a PC run 'edge demo --out demo-out', copy demo-out/bundle to this board, then: jetson/selftest.sh BUNDLE"
  fi
fi
[ -f "$bundle/manifest.json" ] || die "$bundle is not a bundle (no manifest.json)"

# -- 2. engines --------------------------------------------------------------------------------
precisions=(fp16)
if "$py" -c 'import sys; from edge.jetson.probe import probe_jetson; i = probe_jetson(); sys.exit(0 if i is None or i.fast_int8 else 1)'; then
  precisions+=(int8)
else
  notes+=("int8 skipped: this GPU has no fast INT8")
fi
built=()
for precision in "${precisions[@]}"; do
  say "== edge build $bundle --precision $precision"
  if edge build "$bundle" --precision "$precision"; then
    built+=("$precision")
  else
    fail "edge build --precision $precision failed (see above; int8 needs edge calibrate's caches or Q/DQ models)"
  fi
done

# -- 3. TensorRT vs ONNX Runtime ---------------------------------------------------------------
if [ "${#built[@]}" -gt 0 ]; then
  args=()
  for precision in "${built[@]}"; do args+=(--precision "$precision"); done
  say "== TensorRT vs ONNX Runtime (${built[*]})"
  set +e
  "$py" -m edge.jetson.selftest "$bundle" "${args[@]}" --json "$work/compare.json"
  status=$?
  set -e
  case "$status" in
    0) ;;
    3) fail "the TensorRT backend of edge.runtime cannot run here (message above); outputs were not compared" ;;
    *) fail "TensorRT outputs differ from ONNX Runtime (see the lines marked FAIL above, $work/compare.json)" ;;
  esac
fi

# -- 4. profile --------------------------------------------------------------------------------
if [ -n "${EDGE_PROFILE_ARGS:-}" ]; then
  read -r -a profile_args <<<"$EDGE_PROFILE_ARGS"
else
  profile_args=(--backend tensorrt --precision "${built[0]:-fp16}" --frames 300 --report "$work/profile")
fi
say "== edge profile $bundle ${profile_args[*]}"
set +e
edge profile "$bundle" "${profile_args[@]}"
status=$?
set -e
case "$status" in
  0) say "profile report in $work/profile" ;;
  3) notes+=("edge profile is not available in this etr-edge version: skipped") ;;
  *) fail "edge profile failed (exit $status, see above)" ;;
esac

# -- verdict -----------------------------------------------------------------------------------
for note in "${notes[@]+"${notes[@]}"}"; do say "note: $note"; done
if [ "${#reasons[@]}" -eq 0 ]; then
  say "PASS"
  exit 0
fi
say "FAIL (${#reasons[@]} problem(s)):"
for reason in "${reasons[@]}"; do say "  - $reason"; done
exit 1
