// LayerNorm over the last dimension with affine, for vivify's CUDA build: one warp per row, f32
// statistics in two passes (mean, then the spread about it) as PyTorch computes them, one
// rounding at the end. candle ops took ten passes over an f32 copy. layer_norm_v: rows of a
// multiple of 16 bytes (every UNet width), read once 16 bytes per access and kept in registers.
#ifdef VIVIFY_KERNEL_EMULATION
#include "emulation/cuda_emulation.h"  // the CPU build (tests/kernel_emulation.rs)
#else
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#endif

namespace {

constexpr int WARPS = 8;

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__device__ void layer_norm(const T* __restrict__ x, const T* __restrict__ weight,
                           const T* __restrict__ bias, T* __restrict__ y, long long rows, int dim,
                           float eps) {
  const long long row = (long long)blockIdx.x * WARPS + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const T* xr = x + row * dim;
  T* yr = y + row * dim;
  float sum = 0.f;
  for (int i = lane; i < dim; i += 32) sum += to_f32(xr[i]);
  const float mean = warp_sum(sum) / dim;
  float m2 = 0.f;
  for (int i = lane; i < dim; i += 32) {
    const float d = to_f32(xr[i]) - mean;
    m2 += d * d;
  }
  const float rstd = rsqrtf(warp_sum(m2) / dim + eps);
  for (int i = lane; i < dim; i += 32)
    yr[i] = from_f32<T>((to_f32(xr[i]) - mean) * rstd * to_f32(weight[i]) + to_f32(bias[i]));
}

// 16-byte chunks a lane keeps: rows up to 32 · MAX_CHUNKS · 16 bytes (2048 16-bit elements).
constexpr int MAX_CHUNKS = 8;

// layer_norm for dim a multiple of VEC (16 bytes' elements) and at most 32 · MAX_CHUNKS chunks:
// the row is read once, each lane holding its chunks in registers for both statistics passes
// and the output; x, weight and bias on 16-byte boundaries.
template <typename T>
__device__ void layer_norm_v(const T* __restrict__ x, const T* __restrict__ weight,
                             const T* __restrict__ bias, T* __restrict__ y, long long rows, int dim,
                             float eps) {
  constexpr int VEC = 16 / (int)sizeof(T);
  const long long row = (long long)blockIdx.x * WARPS + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int chunks = dim / VEC;
  const uint4* xr = reinterpret_cast<const uint4*>(x + row * dim);
  uint4 raw[MAX_CHUNKS];
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < MAX_CHUNKS; ++k) {
    if (lane + 32 * k >= chunks) break;
    raw[k] = xr[lane + 32 * k];
    const T* e = reinterpret_cast<const T*>(&raw[k]);
#pragma unroll
    for (int i = 0; i < VEC; ++i) sum += to_f32(e[i]);
  }
  const float mean = warp_sum(sum) / dim;
  float m2 = 0.f;
#pragma unroll
  for (int k = 0; k < MAX_CHUNKS; ++k) {
    if (lane + 32 * k >= chunks) break;
    const T* e = reinterpret_cast<const T*>(&raw[k]);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const float d = to_f32(e[i]) - mean;
      m2 += d * d;
    }
  }
  const float rstd = rsqrtf(warp_sum(m2) / dim + eps);
  uint4* yr = reinterpret_cast<uint4*>(y + row * dim);
#pragma unroll
  for (int k = 0; k < MAX_CHUNKS; ++k) {
    const int c = lane + 32 * k;
    if (c >= chunks) break;
    const uint4 wv = reinterpret_cast<const uint4*>(weight)[c];
    const uint4 bv = reinterpret_cast<const uint4*>(bias)[c];
    const T* e = reinterpret_cast<const T*>(&raw[k]);
    const T* we = reinterpret_cast<const T*>(&wv);
    const T* be = reinterpret_cast<const T*>(&bv);
    uint4 out;
    T* o = reinterpret_cast<T*>(&out);
#pragma unroll
    for (int i = 0; i < VEC; ++i)
      o[i] = from_f32<T>((to_f32(e[i]) - mean) * rstd * to_f32(we[i]) + to_f32(be[i]));
    yr[c] = out;
  }
}

}  // namespace

#define LAYER_NORM_ENTRY(TN, T)                                                               \
  extern "C" __global__ void __launch_bounds__(WARPS * 32) layer_norm_##TN(                   \
      const T* x, const T* weight, const T* bias, T* y, long long rows, int dim, float eps) { \
    layer_norm<T>(x, weight, bias, y, rows, dim, eps);                                        \
  }                                                                                           \
  extern "C" __global__ void __launch_bounds__(WARPS * 32) layer_norm_v_##TN(                 \
      const T* x, const T* weight, const T* bias, T* y, long long rows, int dim, float eps) { \
    layer_norm_v<T>(x, weight, bias, y, rows, dim, eps);                                      \
  }

LAYER_NORM_ENTRY(f32, float)
LAYER_NORM_ENTRY(f16, __half)
LAYER_NORM_ENTRY(bf16, __nv_bfloat16)
