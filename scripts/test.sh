#!/usr/bin/env bash
# The project's test command (README; .ci/run calls it): formatting, lints, then every test.
# The parity tests run against committed fixtures. The video tests (crates/vivify-video) need
# ffmpeg/ffprobe, chromium and chromedriver, and the CUDA kernel emulation test a C++ compiler:
# installed here with apt when missing and running as root; otherwise install them yourself
# (`apt-get install ffmpeg chromium chromium-driver g++`) or those tests fail and say so.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! { command -v ffprobe && command -v chromedriver && command -v c++; } >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing test tools: ffmpeg chromium chromium-driver g++" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg chromium chromium-driver g++ >/dev/null
  else
    echo "warning: ffmpeg/chromium/chromedriver/g++ missing; the video and kernel emulation tests will fail (see README)" >&2
  fi
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
