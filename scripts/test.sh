#!/usr/bin/env bash
# The project's test command (README; .ci/run calls it): formatting, lints, then every test.
# Needs only a Rust toolchain: the parity tests run against committed fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
