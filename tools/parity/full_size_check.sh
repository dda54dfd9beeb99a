#!/usr/bin/env bash
# vivify's full-size end-to-end check against diffusers' I2VGenXLPipeline (CPU, f32).
#
# Usage (from anywhere):  tools/parity/full_size_check.sh DIR VIVIFY_BIN
#
#   1. If DIR/expected is missing, runs tools/parity/full_size_check.py --out DIR (parity
#      environment tools/parity/.venv, or $PYTHON): random weights at the published configs in
#      DIR/model (about 5 GB), the input image, case, seeded latents, and diffusers' frames and
#      final latents.
#   2. Runs `VIVIFY_BIN generate` on the same model, image, prompt and latents, with the size,
#      frames, steps, guidance and fps of DIR/case.json (128x128, 2 frames, 2 steps, guidance 9,
#      fps 16), CPU, f32, under /usr/bin/time -v, writing DIR/actual/0000.png ...
#      and DIR/actual_latents.safetensors, and prints its wall time and maximum resident memory
#      (the full report is kept in DIR/vivify_time.txt, its output in DIR/vivify_log.txt).
#   3. Compares with tools/parity/compare_frames.py (frames within 1 level for >= 99.9% of values,
#      never more than 3; final latents relative L2 error <= 1e-3). Exit status 1 on failure.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 DIR VIVIFY_BIN" >&2
  exit 2
fi
DIR=$(realpath -m "$1")
BIN=$(realpath "$2")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-$HERE/.venv/bin/python}

if [ ! -d "$DIR/expected" ]; then
  echo "== reference: $PYTHON full_size_check.py --out $DIR"
  "$PYTHON" "$HERE/full_size_check.py" --out "$DIR"
fi

case_field() { "$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$DIR/case.json" "$1"; }
PROMPT=$(case_field prompt)
NEGATIVE=$(case_field negative_prompt)
# 128, 128, 2, 2, 9.0, 16 as full_size_check.py writes them.
WIDTH=$(case_field width); HEIGHT=$(case_field height); FRAMES=$(case_field num_frames)
STEPS=$(case_field num_inference_steps); GUIDANCE=$(case_field guidance_scale); FPS=$(case_field target_fps)

echo "== vivify: $BIN generate"
rm -rf "$DIR/actual" "$DIR/actual_latents.safetensors"
set +e
/usr/bin/time -v -o "$DIR/vivify_time.txt" "$BIN" generate \
  --model "$DIR/model" --image "$DIR/input.png" \
  --prompt "$PROMPT" --negative-prompt "$NEGATIVE" \
  --width "$WIDTH" --height "$HEIGHT" --frames "$FRAMES" --steps "$STEPS" --guidance "$GUIDANCE" --fps "$FPS" \
  --latents "$DIR/latents.safetensors" \
  --output "$DIR/actual" --output-latents "$DIR/actual_latents.safetensors" \
  --device cpu --dtype f32 2>&1 | tee "$DIR/vivify_log.txt"
rc=${PIPESTATUS[0]}
set -e
grep -E "Elapsed \(wall clock\)|Maximum resident set size" "$DIR/vivify_time.txt" || true
if [ "$rc" -ne 0 ]; then
  echo "vivify generate failed with status $rc" >&2
  exit 1
fi

echo "== compare"
"$PYTHON" "$HERE/compare_frames.py" "$DIR/expected" "$DIR/actual" \
  --latents "$DIR/expected_latents.safetensors" "$DIR/actual_latents.safetensors"
