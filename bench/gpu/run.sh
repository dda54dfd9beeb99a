#!/usr/bin/env bash
# vivify against diffusers on one GPU, in one device call (see bench/gpu/README.md).
#
# Usage, on the GPU machine from the repository root:  bash bench/gpu/run.sh CARRY_DIR
#   CARRY_DIR: `vivify.xz` and `cuda_ops.xz` made by scripts/build-cuda.sh, the diffusers wheel
#   (pip download --no-deps diffusers==0.42.1) and, where the device's Python lacks Pillow, a
#   Pillow wheel for it. Nothing is built here.
# Env: OUT (results, default ./gpu-results), WORK (scratch, default /tmp/vivify-gpu-bench),
#      DEADLINE (seconds for everything, default 540),
#      PYTHON (default /opt/torch/.venv/bin/python), STEPS (end-to-end steps, default 10),
#      CASES (default 512x512x16,1280x704x16,1024x1024x32), SKIP (space-separated phases to skip:
#      ops unet profile diffusers vivify residency ablation), ABLATE (what the ablation changes:
#      kernel names for VIVIFY_CUDA_DISABLE, or VAR=VALUE settings such as VIVIFY_CONV_LAYOUT=nchw),
#      ABLATE_CASE (the case the ablation runs at, default the first of CASES).
# Phases, each under its own time limit, each writing JSON lines to $OUT:
#   ops        cuda_ops correctness tests; vivify bench-ops and torch_ops.py (conv, attention)
#   diffusers  full-size random weights (tools/parity/full_size_check.py), then diffusers fp16:
#              UNet step and end to end per case, frames and final latents kept for parity
#   unet       vivify bench-unet per case (random weights at the same config)
#   profile    time per kind of operation in one UNet step at the first case: vivify
#              (VIVIFY_PROFILE=1 bench-unet) and diffusers (torch_profile.py, torch.profiler)
#   vivify     vivify generate per case on the same weights, image, prompt and latents (after
#              bench-unet, so the UNet's cuDNN algorithms come from the run's cache: the report
#              counts the searches each generate still ran), after a one-step warm-up process
#   residency  vivify generate at the first case with models loaded per stage, then streamed
#   ablation   one UNet step at ABLATE_CASE with each of vivify's kernels switched off
# Last: bench/gpu/report.py prints the table and writes $OUT/results.json.
set -u
CARRY=$(realpath "${1:?usage: run.sh CARRY_DIR}")
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$PWD/gpu-results}
WORK=${WORK:-/tmp/vivify-gpu-bench}
PYTHON=${PYTHON:-/opt/torch/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
STEPS=${STEPS:-10}
CASES=${CASES:-512x512x16,1280x704x16,1024x1024x32}
SKIP=${SKIP:-}
mkdir -p "$OUT" "$WORK"
# The driver's JIT cache (PTX compiled for the card) in a directory of the run's own, so the
# warm-up below can say how much it compiled.
export CUDA_CACHE_PATH=$WORK/cuda-jit-cache
jit_cache_kib() { du -sk "$CUDA_CACHE_PATH" 2>/dev/null | cut -f1; }
# cuDNN algorithm choices go to a file of this run's own, so no figure depends on a stale one.
export VIVIFY_CONV_CACHE=$WORK/conv-algorithms.json
rm -f "$VIVIFY_CONV_CACHE"
. "$HERE/cuda_env.sh"
export RUST_BACKTRACE=1
START=$(date +%s)
DEADLINE=${DEADLINE:-540}   # seconds for the whole run: each phase's limit is cut to what is left
phase() { echo "== [$(( $(date +%s) - START ))s] $*"; }
# lim N: N seconds, or what is left before the deadline (keeping 15 s for the report), at least 1.
lim() {
  local left=$(( DEADLINE - ($(date +%s) - START) - 15 ))
  [ "$left" -lt 1 ] && left=1
  [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}
skip() { case " $SKIP " in *" $1 "*) return 0 ;; esac; return 1; }
# The tests that failed in a libtest log: its closing "failures:" list (under --nocapture a test's
# verdict is not on its "test NAME ..." line), and died_in's.
failed_tests() {
  sed -n '/^failures:$/,/^test result/p' "$1" | grep -E '^    [a-z0-9_]+$' | tr -d ' '
  died_in "$1"
}
# The test that was running when the process died: one started after the last "test result"
# (child processes' results, which tests print, reset it too, but the parent's next test sets it).
died_in() {
  awk '/^test [a-z0-9_]+ \.\.\./ { running = $2 } /^test result/ { running = "" } END { if (running != "") print running }' "$1"
}
# The binaries travel xz-compressed (scripts/build-cuda.sh); unpack them into WORK.
for b in vivify cuda_ops; do
  "$PYTHON" -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' \
    "$CARRY/$b.xz" "$WORK/$b" && chmod +x "$WORK/$b"
done
BIN=$WORK/vivify
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"

# diffusers is not installed on the device: unpack the carried wheel (pure Python).
PYLIB=$WORK/pylib
if [ ! -d "$PYLIB/diffusers" ]; then
  "$PYTHON" -m zipfile -e "$CARRY"/diffusers-*.whl "$PYLIB" || echo "!! could not unpack diffusers"
fi
export PYTHONPATH=$PYLIB${PYTHONPATH:+:$PYTHONPATH}
"$PYTHON" -c "import PIL" 2>/dev/null || { ls "$CARRY"/pillow-*.whl >/dev/null 2>&1 && "$PYTHON" -m zipfile -e "$CARRY"/pillow-*.whl "$PYLIB"; }

if ! skip ops; then
  phase "cuda_ops tests"
  timeout "$(lim 150)" "$WORK/cuda_ops" --nocapture --test-threads=1 2>&1 | tee "$OUT/cuda_ops.txt" | grep -vE "^\s+[0-9]+:|^\s+at " | tail -40
  # A kernel whose test failed (or was running when the process died) is switched off for the
  # rest of the run, its bench-ops rows too, so the numbers still mean something (the report
  # names what was off). Test name prefix: kernel name.
  OFF=""
  for pair in flash_attention_matches:attention flash_attention_async:attention_async \
              flash_attention_ldmatrix:attention_ldmatrix convolution_matches:cudnn_conv \
              convolution_legacy:cudnn_conv convolution_graph:cudnn_graph group_norm:group_norm \
              layer_norm:layer_norm linear:linear geglu:geglu elementwise:elementwise \
              frame_conv:frame_conv channels_last_handoff:channels_last_handoff \
              convolution_with_stored_weights:conv_weights_channels_last \
              conv_path_choice:conv_path_choice conv_nchw_strides:conv_nchw_strides \
              conv1x1_cublaslt:conv1x1_cublaslt pair_tiles:pair_tiles; do
    failed_tests "$OUT/cuda_ops.txt" | grep -q "^${pair%%:*}" && OFF="$OFF${OFF:+,}${pair##*:}"
  done
  died=$(died_in "$OUT/cuda_ops.txt")
  [ -n "$died" ] && echo "!! cuda_ops died in $died: the tests after it did not run"
  if [ -n "$OFF" ]; then
    echo "!! kernel tests failed: running with VIVIFY_CUDA_DISABLE=$OFF"; echo "$OFF" > "$OUT/disabled.txt"
    export VIVIFY_CUDA_DISABLE=$OFF
  fi
  phase "ops: vivify"
  VIVIFY_CONV_LOG=1 timeout "$(lim 60)" "$BIN" bench-ops --device cuda --dtype f16 > "$OUT/ops_vivify.jsonl" 2> "$OUT/ops_vivify.err"; echo "rc=$?"; tail -3 "$OUT/ops_vivify.err"
  phase "ops: torch"
  timeout "$(lim 60)" "$PYTHON" "$HERE/torch_ops.py" > "$OUT/ops_torch.jsonl" 2> "$OUT/ops_torch.err"; echo "rc=$?"; tail -3 "$OUT/ops_torch.err"
fi

if ! skip diffusers; then
  phase "diffusers (model creation, UNet steps, end to end)"
  timeout "$(lim 300)" "$PYTHON" "$HERE/diffusers_side.py" --work "$WORK" --steps "$STEPS" --cases "$CASES" \
    > "$OUT/diffusers.jsonl" 2> "$OUT/diffusers.err"; echo "rc=$?"; tail -5 "$OUT/diffusers.err"
  cat "$OUT/diffusers.jsonl"
fi

IFS=, read -r -a CASE_LIST <<< "$CASES"
if ! skip unet; then
  for c in "${CASE_LIST[@]}"; do
    IFS=x read -r W H F <<< "$c"
    phase "vivify bench-unet $c"
    timeout "$(lim 90)" "$BIN" bench-unet --config "$WORK/model/unet/config.json" --width "$W" --height "$H" \
      --frames "$F" --iters 3 --device cuda --dtype f16 >> "$OUT/unet_vivify.jsonl" 2>> "$OUT/unet_vivify.err"
    echo "rc=$?"; tail -1 "$OUT/unet_vivify.jsonl"
  done
fi

if ! skip profile; then
  IFS=x read -r W H F <<< "${CASE_LIST[0]}"
  phase "profile: vivify ${CASE_LIST[0]}"
  VIVIFY_PROFILE=1 VIVIFY_CONV_LOG=1 timeout "$(lim 90)" "$BIN" bench-unet --config "$WORK/model/unet/config.json" \
    --width "$W" --height "$H" --frames "$F" --iters 2 --device cuda --dtype f16 \
    > "$OUT/profile_vivify.jsonl" 2> "$OUT/profile_vivify.err"
  echo "rc=$?"; grep -E "ms .* calls" "$OUT/profile_vivify.err" | head -20
  # Per-kernel times where the device has Nsight Systems.
  if command -v nsys >/dev/null 2>&1; then
    phase "profile: nsys vivify ${CASE_LIST[0]}"
    timeout "$(lim 90)" nsys profile -t cuda --force-overwrite true -o "$WORK/nsys_vivify" "$BIN" bench-unet \
      --config "$WORK/model/unet/config.json" --width "$W" --height "$H" --frames "$F" --iters 1 --device cuda \
      --dtype f16 > /dev/null 2>&1
    timeout "$(lim 60)" nsys stats -r cuda_gpu_kern_sum -f csv -o "$OUT/nsys_vivify" "$WORK/nsys_vivify.nsys-rep" \
      > /dev/null 2>&1
    head -25 "$OUT"/nsys_vivify*.csv 2>/dev/null | cut -c1-200
  else
    echo "(no nsys on this machine)"
  fi
  phase "profile: diffusers ${CASE_LIST[0]}"
  timeout "$(lim 90)" "$PYTHON" "$HERE/torch_profile.py" --unet "$WORK/model/unet" --case "${CASE_LIST[0]}" \
    > "$OUT/profile_diffusers.jsonl" 2> "$OUT/profile_diffusers.err"
  echo "rc=$?"; tail -2 "$OUT/profile_diffusers.err"; head -c 600 "$OUT/profile_diffusers.jsonl"; echo
fi

# vivify generate on case $1 (WxHxF) with diffusers' inputs for it, into $WORK/$2, log and sidecar
# to $OUT/$2.*; the rest of the arguments go to generate.
vivify_generate() {
  local c=$1 name=$2 W H F D; shift 2
  IFS=x read -r W H F <<< "$c"
  D=$WORK/diffusers_$c
  [ -f "$D/latents.safetensors" ] || { echo "no diffusers inputs for $c"; return; }
  rm -rf "${WORK:?}/$name"
  VIVIFY_CONV_LOG=1 timeout "$(lim 150)" "$BIN" generate --model "$WORK/model" --image "$D/input.png" \
    --prompt "$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["prompt"])' "$D/case.json")" \
    --negative-prompt "$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["negative_prompt"])' "$D/case.json")" \
    --width "$W" --height "$H" --frames "$F" --steps "$STEPS" --guidance 9 --fps 16 --decode-chunk 1 \
    --latents "$D/latents.safetensors" --output "$WORK/$name/frames" \
    --output-latents "$WORK/$name/final_latents.safetensors" --device cuda --dtype f16 "$@" \
    > "$OUT/$name.log" 2>&1
  echo "rc=$?"; grep -vE "^\s+[0-9]+:|^\s+at |^cudnn " "$OUT/$name.log" | tail -4
  cp "$WORK/$name"/frames/*.json "$OUT/$name.sidecar.json" 2>/dev/null
}

if ! skip vivify; then
  # One step at the first case first, outside the figures: the first process on a fresh machine
  # to run the text encoder paid about 3 s more in it than any later one (the driver's kernel
  # cache and the page cache, filled once per machine), as diffusers' figures exclude its own
  # warm-up. Its stage times are reported on their own line.
  phase "vivify generate ${CASE_LIST[0]} (warm-up, one step)"
  before=$(jit_cache_kib)
  STEPS=1 vivify_generate "${CASE_LIST[0]}" vivify_warmup
  echo "driver JIT cache: ${before:-0} KiB before the warm-up, $(jit_cache_kib) KiB after" |
    tee "$OUT/warmup_jit_cache.txt"
  for c in "${CASE_LIST[@]}"; do
    phase "vivify generate $c"
    vivify_generate "$c" "vivify_$c"
  done
fi

if ! skip residency; then
  # Models loaded per stage, and UNet blocks streamed from host memory two at a time: peak memory
  # and time at the first case, against the all-resident run above (report.py compares them).
  for r in staged streamed:2; do
    phase "vivify generate ${CASE_LIST[0]} residency=$r"
    vivify_generate "${CASE_LIST[0]}" "vivify_${CASE_LIST[0]}_${r/:/-}" --plan "residency=$r"
  done
fi

if ! skip ablation; then
  # What each of vivify's CUDA paths is worth: one UNet step at ABLATE_CASE with one kernel
  # switched back to candle's ops, or one setting changed (attention stays fused: the unfused
  # path needs chunking there).
  ACASE=${ABLATE_CASE:-${CASE_LIST[0]}}
  IFS=x read -r W H F <<< "$ACASE"
  for k in ${ABLATE:-linear geglu VIVIFY_CONV_LAYOUT=nchw}; do
    phase "ablation: bench-unet $ACASE without $k"
    case $k in
      *=*) setting=$k ;;
      *) setting="VIVIFY_CUDA_DISABLE=${VIVIFY_CUDA_DISABLE:+$VIVIFY_CUDA_DISABLE,}$k" ;;
    esac
    # The convolution choices each entry makes go to ablation.err (VIVIFY_CONV_LOG).
    echo "== $k" >> "$OUT/ablation.err"
    env "$setting" VIVIFY_CONV_LOG=1 timeout "$(lim 90)" "$BIN" bench-unet --config "$WORK/model/unet/config.json" \
      --width "$W" --height "$H" --frames "$F" --iters 2 --device cuda --dtype f16 2>> "$OUT/ablation.err" |
      sed "s/^{/{\"disabled\":\"$k\",\"case\":\"$ACASE\",/" >> "$OUT/ablation.jsonl"
    tail -1 "$OUT/ablation.jsonl"
  done
fi

phase "report"
"$PYTHON" "$HERE/report.py" --out "$OUT" --work "$WORK" --cases "$CASES"
# A device call brings back only a few files: keep results.json, pack the rest.
(cd "$OUT" && tar czf "$WORK/raw.tgz" --exclude=results.json . && find . -type f ! -name results.json -delete &&
  mv "$WORK/raw.tgz" .)
