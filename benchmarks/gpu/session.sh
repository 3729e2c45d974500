#!/usr/bin/env bash
# The GPU benchmark on a host without network: vLLM 0.22 from the offline bundle, then
# benchmarks/gpu/run_gpu.py steps. Run from the repository root.
#
#   benchmarks/gpu/session.sh stage             copy the bundle chunks present in .bundle/ to $STAGE
#   benchmarks/gpu/session.sh unpack            join the chunks, check payload.sha256, unpack (once)
#   benchmarks/gpu/session.sh run STEP ARGS...  run_gpu.py STEP with the bundle's vLLM; the `hub`
#                                               side runs without molmo2-shim on the path
#
# .bundle/ holds the bundle's chunks, payload.sha256 and unpack.py; .remote/ the hub's five .py
# files (both ignored by git, carried to the host). Results go to $OUT (default results/).
set -euo pipefail
STAGE=${STAGE:-/tmp/molmo2-bundle}
export GPU_SITE=${GPU_SITE:-/tmp/gpu-site} GPU_TF=${GPU_TF:-/tmp/gpu-tf}
CKPT=${CKPT:-/tmp/molmo2-4b-random}
OUT=${OUT:-results}
REPO=$(pwd)

case "$1" in
  stage)
    mkdir -p "$STAGE"
    cp .bundle/* "$STAGE"/ 2>/dev/null || true
    ls "$STAGE"
    ;;
  unpack)
    cd "$STAGE"
    cat $(ls p[0-9]* | sort -V) > payload.tar.xz
    sha256sum -c payload.sha256
    python3 unpack.py payload.tar.xz
    ;;
  run)
    shift
    step=$1
    shift
    export VLLM_USE_FLASHINFER_SAMPLER=0 TVM_FFI_DISABLE_TORCH_C_DLPACK=1 VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1
    path="$GPU_SITE:$REPO"
    if [[ " $* " == *" --side hub "* ]]; then path="$GPU_SITE"; fi
    if [[ "$step" == reference ]]; then path="$GPU_TF:$GPU_SITE:$REPO"; fi
    PYTHONPATH="$path" python3 benchmarks/gpu/run_gpu.py "$step" --ckpt "$CKPT" --out "$OUT" "$@"
    ;;
  *)
    echo "usage: $0 stage|unpack|run STEP ARGS..." >&2
    exit 2
    ;;
esac
