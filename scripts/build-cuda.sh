#!/usr/bin/env bash
# Builds vivify with CUDA (features cuda,cudnn) on a machine without a GPU, for H100/H200
# (sm_90a), using the recipe in ../shared/gpu/README.md: CUDA 13.0 wheels from PyPI and a
# link-time libcuda stub. Then collects what a device run needs in gpu-carry/:
#   vivify.xz   the CLI (stripped, xz: a device call carries at most 64 MiB)
#   cuda_ops.xz the CUDA kernel tests (crates/vivify-core/tests/cuda_ops.rs), run there
#   diffusers-0.42.1-py3-none-any.whl   for bench/gpu on the device (which lacks diffusers)
# and runs the CUDA-build tests that need no GPU (cuDNN descriptors checked on the host).
# Usage: bash scripts/build-cuda.sh        (first build about 7 minutes on 2 cores, then incremental)
# Env: VIVIFY_CUDA_PREFIX (toolchain, default ~/.cache/vivify-cuda), SHARED (default ../shared).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PREFIX=${VIVIFY_CUDA_PREFIX:-$HOME/.cache/vivify-cuda}
SHARED=${SHARED:-$ROOT/../shared}
if [ ! -f "$PREFIX/env.sh" ]; then
  bash "$SHARED/gpu/setup-cuda-toolchain.sh" "$PREFIX"
fi
. "$PREFIX/env.sh"
TARGET=target/cuda
cargo build --release --locked --features cuda,cudnn -p vivify-cli --target-dir "$TARGET"
TEST_BIN=$(cargo test --release --locked --features cuda,cudnn -p vivify-core --test cuda_ops --no-run \
  --target-dir "$TARGET" --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda_ops":
        print(m["executable"])')
# The cuDNN checks that need no device (descriptors finalized on the host), run here with the
# link-time stub standing in for the driver library.
STUB=$(mktemp -d)
trap 'rm -rf "$STUB"' EXIT
cp "$PREFIX/stub/libcuda.so" "$STUB/libcuda.so.1"
LD_LIBRARY_PATH="$STUB:$CUDA_HOME/lib64" cargo test --release --locked --features cuda,cudnn \
  -p vivify-core --lib --target-dir "$TARGET" -- --quiet nn::cuda::cudnn_graph_conv::tests
mkdir -p gpu-carry
strip -o "$TARGET/vivify.stripped" "$TARGET/release/vivify"
strip -o "$TARGET/cuda_ops.stripped" "$TEST_BIN"
xz -T0 -6 -c "$TARGET/vivify.stripped" > gpu-carry/vivify.xz
xz -T0 -6 -c "$TARGET/cuda_ops.stripped" > gpu-carry/cuda_ops.xz
ls gpu-carry/diffusers-0.42.1-py3-none-any.whl >/dev/null 2>&1 ||
  pip download --quiet --no-deps diffusers==0.42.1 -d gpu-carry
du -sh gpu-carry/*
