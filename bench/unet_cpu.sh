#!/usr/bin/env bash
# CPU baseline: one I2VGen-XL UNet forward (guided batch of 2) at a mid-size config, vivify beside
# diffusers on the same machine and thread count. Needs the parity environment
# (tools/parity/setup.sh), or PARITY_PYTHON naming a Python with diffusers 0.42.1.
# Usage: bench/unet_cpu.sh [THREADS] [WIDTHxHEIGHTxFRAMES]
# VIVIFY_BIN=path uses a prebuilt binary (for machines without cargo) instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-$(nproc)}"
size="${2:-256x256x8}"
IFS=x read -r width height frames <<<"$size"
py="${PARITY_PYTHON:-tools/parity/.venv/bin/python}"
common=(--config bench/unet_cpu/config.json --width "$width" --height "$height" --frames "$frames" --batch 2 --iters 3)

bin="${VIVIFY_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release -q -p vivify-cli
  bin=target/release/vivify
fi
ours=$(RAYON_NUM_THREADS="$threads" "$bin" bench-unet "${common[@]}")
theirs=$(OMP_NUM_THREADS="$threads" "$py" bench/unet_cpu/diffusers_unet.py "${common[@]}" --threads "$threads")
echo "$ours"
echo "$theirs"
python3 - "$ours" "$theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert a["params"] == b["params"], (a["params"], b["params"])
print(f"UNet forward {a['width']}x{a['height']}x{a['frames']} batch {a['batch']}, {a['params']:,} params, "
      f"{a['threads']} threads: vivify {a['sec_median']:.3f} s, diffusers {b['sec_median']:.3f} s, "
      f"ratio vivify/diffusers {a['sec_median'] / b['sec_median']:.2f}")
PY
