#!/usr/bin/env bash
# The GPU benchmark on a host without network: vLLM 0.22 from the offline bundle, then
# benchmarks/gpu/run_gpu.py steps. Run from the repository root.
#
#   benchmarks/gpu/session.sh stage             copy the bundle chunks present in .bundle/ to $STAGE
#   benchmarks/gpu/session.sh unpack            join the chunks, check payload.sha256, unpack (once),
#                                               install molmo2-shim's wheel (dist/, `pip wheel .`)
#   benchmarks/gpu/session.sh run STEP ARGS...  run_gpu.py STEP with the bundle's vLLM; the `hub`
#                                               side runs without molmo2-shim on the path
#
# .bundle/ holds the bundle's chunks (p1, p2, ...), payload.sha256, unpack.py and, optionally,
# extra pure-Python wheels the bundle lacks (e.g. compressed-tensors and loguru, which vLLM's fp8
# path imports); .remote/ the hub's five .py files (both ignored by git, carried to the host). Results go to $RESULTS (default results/).
set -euo pipefail
REPO=$(pwd)
# Everything the session unpacks or writes lives under one work folder (default: .gpu-work/ in the
# checkout, ignored by git; on a host that copies the checkout per call, point it at a folder
# that outlives the call). Each path can still be set on its own.
WORK=${MOLMO2_GPU_WORK:-$REPO/.gpu-work}
STAGE=${STAGE:-$WORK/bundle}
export GPU_SITE=${GPU_SITE:-$WORK/gpu-site} GPU_TF=${GPU_TF:-$WORK/gpu-tf}
SHIM_SITE=${SHIM_SITE:-$WORK/shim-site}
CKPT=${CKPT:-$WORK/molmo2-4b-random}
RESULTS=${RESULTS:-results}
mkdir -p "$WORK/run"

case "$1" in
  stage)
    mkdir -p "$STAGE"
    cp .bundle/* "$STAGE"/ 2>/dev/null || true
    ls "$STAGE"
    ;;
  unpack)
    cd "$STAGE"
    cat $(ls p[0-9]* | sort -V) > payload.tar.xz
    echo "$(cut -d' ' -f1 payload.sha256)  payload.tar.xz" | sha256sum -c
    python3 unpack.py payload.tar.xz
    for w in *.whl; do [[ -e "$w" ]] && python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$w" "$GPU_SITE"; done
    cd "$REPO"
    # a wheel is a zip: extracted onto a path entry it is installed (entry points included)
    python3 -c "import glob, sys, zipfile; zipfile.ZipFile(glob.glob('dist/molmo2_shim-*.whl')[0]).extractall(sys.argv[1])" "$SHIM_SITE"
    ;;
  run)
    shift
    step=$1
    shift
    export VLLM_USE_FLASHINFER_SAMPLER=0 TVM_FFI_DISABLE_TORCH_C_DLPACK=1 VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1
    # molmo2-shim as installed (its wheel maps patches/ into the package), never the source tree
    path="$GPU_SITE:$SHIM_SITE"
    if [[ " $* " == *" --side hub "* ]]; then path="$GPU_SITE"; fi
    if [[ "$step" == reference ]]; then path="$GPU_TF:$GPU_SITE:$SHIM_SITE"; fi
    # from another directory: vLLM's helper processes put their cwd on sys.path, and the source
    # tree there would shadow the installed package
    results=$(realpath -m "$RESULTS")
    cd "$WORK/run" && PYTHONPATH="$path" python3 "$REPO/benchmarks/gpu/run_gpu.py" "$step" --ckpt "$CKPT" --out "$results" "$@"
    ;;
  *)
    echo "usage: $0 stage|unpack|run STEP ARGS..." >&2
    exit 2
    ;;
esac
