#!/usr/bin/env bash
# Times H.264/MP4 encoding (RGB -> yuv420p -> OpenH264 -> MP4 in memory) of 16 synthetic
# 1280x704 frames, best and mean of 5 runs after a warm-up, release build.
# Usage: bench/encode_mp4.sh [WIDTH HEIGHT FRAMES [QP]]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --quiet -p vivify-video --example encode_bench -- "$@"
