// GEGLU for vivify's CUDA build: out[r, j] = h[r, j] * gelu(h[r, H + j]) over the projection's
// output h (rows, 2H), in one pass (candle took four: narrow copies, GELU, product). One block per
// row, two elements per access when H is even; geglu_v8: 16 bytes per access over all rows at
// once where H is a multiple of 8 (every UNet width). Rounded as PyTorch does it on half types:
// GELU (exact, erf) in f32 rounded to T, then the product in f32 rounded to T.
#ifdef VIVIFY_KERNEL_EMULATION
#include "emulation/cuda_emulation.h"  // the CPU build (tests/kernel_emulation.rs)
#else
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#endif

namespace {

__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

template <typename T>
__device__ __forceinline__ T geglu_one(T value, T gate) {
  const float g = to_f32(gate);
  const float gelu = to_f32(from_f32<T>(0.5f * g * (1.f + erff(g * 0.70710678118654752f))));
  return from_f32<T>(to_f32(value) * gelu);
}

template <typename T>
__device__ __forceinline__ void geglu(const T* __restrict__ h, T* __restrict__ out, long long rows,
                                      int half_width) {
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = h + r * 2 * half_width;
    T* orow = out + r * half_width;
    if (half_width % 2 == 0) {
      for (int j = threadIdx.x * 2; j < half_width; j += blockDim.x * 2) {
        orow[j] = geglu_one(row[j], row[half_width + j]);
        orow[j + 1] = geglu_one(row[j + 1], row[half_width + j + 1]);
      }
    } else {
      for (int j = threadIdx.x; j < half_width; j += blockDim.x)
        orow[j] = geglu_one(row[j], row[half_width + j]);
    }
  }
}

// Chunks of 8 outputs, flat over the (rows, H) output so that every thread has work whatever H
// (one block per row left 96 of 256 threads idle at H = 1280); rows · H / 8 < 2^31 (the host
// checks), so a chunk's row costs one 32-bit division.
template <typename T>
__device__ __forceinline__ void geglu_v8(const T* __restrict__ h, T* __restrict__ out,
                                         long long rows, int half_width) {
  const unsigned per_row = (unsigned)half_width / 8;
  const unsigned chunks = (unsigned)rows * per_row;
  const unsigned stride = gridDim.x * blockDim.x;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < chunks; i += stride) {
    const unsigned r = i / per_row, j = (i - r * per_row) * 8;
    const T* row = h + (long long)r * 2 * half_width;
    const uint4 vv = *reinterpret_cast<const uint4*>(row + j);
    const uint4 gv = *reinterpret_cast<const uint4*>(row + half_width + j);
    const T* value = reinterpret_cast<const T*>(&vv);
    const T* gate = reinterpret_cast<const T*>(&gv);
    uint4 ov;
    T* o = reinterpret_cast<T*>(&ov);
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = geglu_one(value[e], gate[e]);
    *reinterpret_cast<uint4*>(out + (long long)r * half_width + j) = ov;
  }
}

}  // namespace

extern "C" __global__ void geglu_f16(const __half* h, __half* out, long long rows, int half_width) {
  geglu(h, out, rows, half_width);
}
extern "C" __global__ void geglu_bf16(const __nv_bfloat16* h, __nv_bfloat16* out, long long rows,
                                      int half_width) {
  geglu(h, out, rows, half_width);
}
extern "C" __global__ void geglu_v8_f16(const __half* h, __half* out, long long rows,
                                        int half_width) {
  geglu_v8(h, out, rows, half_width);
}
extern "C" __global__ void geglu_v8_bf16(const __nv_bfloat16* h, __nv_bfloat16* out,
                                         long long rows, int half_width) {
  geglu_v8(h, out, rows, half_width);
}
