# Sourced by bench/gpu/run.sh on the GPU machine: puts the CUDA driver, runtime, cuBLAS, NVRTC and
# cuDNN libraries on LD_LIBRARY_PATH (from ../shared/gpu/run-on-device.sh; never a stubs dir).
TORCH_VENV=${TORCH_VENV:-/opt/torch/.venv}
_cands=()
for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64 /usr/local/nvidia/lib \
         "$TORCH_VENV"/lib/python3.*/site-packages/nvidia/cu13/lib \
         "$TORCH_VENV"/lib/python3.*/site-packages/nvidia/*/lib \
         /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda*/lib64 \
         /usr/local/cuda*/targets/x86_64-linux/lib; do
  _cands+=("$d")
done
_ldp=""
for lib in libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudnn.so.9; do
  for d in "${_cands[@]}"; do
    case "$d" in */stubs|*/stubs/*) continue ;; esac
    if [ -e "$d/$lib" ]; then
      case ":$_ldp:" in *":$d:"*) ;; *) _ldp="${_ldp:+$_ldp:}$d" ;; esac
      break
    fi
  done
done
export LD_LIBRARY_PATH="$_ldp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
unset _cands _ldp
