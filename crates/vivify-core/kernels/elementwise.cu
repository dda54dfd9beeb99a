// Memory-bound passes for vivify's CUDA build, written for full bandwidth (16-byte vector loads,
// no per-element index division), where candle's generic kernels ran 1.5-7x PyTorch's time:
//   transpose_{u16}: (n, A, B) -> (n, B, A), 32x32 shared-memory tiles (NCHW <-> NHWC, the
//                    transformers' token layouts);
//   transpose_pairs_u16: the same for even A and B, 64x64 tiles moved as 32-bit pairs;
//   channel_add_{f16,bf16}: out = x + v[n or 0, c] (+ r) over (N, C, S): a convolution's bias,
//                    the time embedding and the residual in one pass;
//   channel_add_from_channels_last_{f16,bf16}: the same sum for x given channels last
//                    (N, S, C), written (N, C, S) through transpose's tiles: a channels-last
//                    convolution's or transformer's output back to NCHW with its bias and
//                    residual, no separate transpose;
//   channel_add_from_channels_last_pairs_{f16,bf16}: the same for even C and S, by pairs;
//   add_{f16,bf16}: out = a + b, same shapes.
// Sums run in f32 with one rounding at the end.
#ifdef VIVIFY_KERNEL_EMULATION
#include "emulation/cuda_emulation.h"  // the CPU build (tests/kernel_emulation.rs)
#else
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>
#endif
#include "pair_tile.cuh"

namespace {

__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

constexpr int TILE = 32;
constexpr int ROWS = 8;

// Rows a0.. and columns b0.. of the (A, B) matrix `in` into `tile`, coalesced along B; the
// caller reads it transposed after a barrier.
template <typename T>
__device__ __forceinline__ void load_tile(T (&tile)[TILE][TILE + 1], const T* __restrict__ in,
                                          int a0, int b0, int A, int B) {
  for (int j = threadIdx.y; j < TILE; j += ROWS) {
    const int a = a0 + j, b = b0 + threadIdx.x;
    if (a < A && b < B) tile[j][threadIdx.x] = in[(long long)a * B + b];
  }
}

// B tiles on x; A tiles on y and matrices on z, both grid-stride (y and z stop at 65535 blocks,
// and A is the pixel count of a full-resolution VAE activation coming back from channels last).
template <typename T>
__device__ __forceinline__ void transpose(const T* __restrict__ in, T* __restrict__ out, int n,
                                          int A, int B) {
  __shared__ T tile[TILE][TILE + 1];
  const int b0 = blockIdx.x * TILE;
  for (int z = blockIdx.z; z < n; z += gridDim.z) {
    const long long base = (long long)z * A * B;
    for (int a0 = blockIdx.y * TILE; a0 < A; a0 += gridDim.y * TILE) {
      __syncthreads();
      load_tile(tile, in + base, a0, b0, A, B);
      __syncthreads();
      for (int j = threadIdx.y; j < TILE; j += ROWS) {
        const int b = b0 + j, a = a0 + threadIdx.x;
        if (a < A && b < B) out[base + (long long)b * A + a] = tile[threadIdx.x][j];
      }
    }
  }
}

// transpose for even A and B through load_pair_tile, in 64-element tiles on transpose's grid.
__device__ __forceinline__ void transpose_pairs(const uint32_t* __restrict__ in,
                                                uint32_t* __restrict__ out, int n, int A, int B) {
  __shared__ PairTile tile;
  const int b0 = blockIdx.x * PAIR_TILE;
  for (int z = blockIdx.z; z < n; z += gridDim.z) {
    const long long base = (long long)z * A * (B / 2);  // pairs before matrix z, either side
    for (int a0 = blockIdx.y * PAIR_TILE; a0 < A; a0 += gridDim.y * PAIR_TILE) {
      __syncthreads();
      load_pair_tile(tile, in + base, a0, b0, A, B);
      __syncthreads();
      const int a = a0 + 2 * threadIdx.x;  // this thread's output pair: a and a + 1
      for (int j = threadIdx.y; j < PAIR_TILE; j += PAIR_ROWS) {
        const int b = b0 + j;
        if (b < B && a < A)
          out[base + (long long)b * (A / 2) + a / 2] = tile[j][threadIdx.x ^ (j >> 1)];
      }
    }
  }
}

// x + add (+ r with `residual`) in f32, rounded once: every per-channel add kernel's sum, so
// that the vector, tiled and pairs kernels agree bit for bit.
template <typename T>
__device__ __forceinline__ T channel_sum(T x, float add, bool residual, T r) {
  float y = to_f32(x) + add;
  if (residual) y += to_f32(r);
  return from_f32<T>(y);
}

// One block per (n, c) row of S elements; VEC elements per access (8: 16-byte loads).
template <typename T, int VEC>
__device__ __forceinline__ void channel_add(const T* __restrict__ x, const T* __restrict__ v,
                                            const T* __restrict__ r, T* __restrict__ out,
                                            long long rows, int C, int S, int v_rows) {
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
    const long long n = row / C;
    const int c = (int)(row - n * C);
    const float add = to_f32(v[(v_rows == 1 ? 0 : n) * C + c]);
    const T* xr = x + row * S;
    const T* rr = r ? r + row * S : nullptr;
    T* orow = out + row * S;
    for (int s = threadIdx.x * VEC; s < S; s += blockDim.x * VEC) {
      if (VEC == 8) {
        uint4 xv = *reinterpret_cast<const uint4*>(xr + s);
        uint4 rv = rr ? *reinterpret_cast<const uint4*>(rr + s) : make_uint4(0, 0, 0, 0);
        const T* xe = reinterpret_cast<const T*>(&xv);
        const T* re = reinterpret_cast<const T*>(&rv);
        uint4 ov;
        T* oe = reinterpret_cast<T*>(&ov);
#pragma unroll
        for (int e = 0; e < 8; ++e) oe[e] = channel_sum(xe[e], add, rr, re[e]);
        *reinterpret_cast<uint4*>(orow + s) = ov;
      } else {
        orow[s] = channel_sum(xr[s], add, rr, rr ? rr[s] : T());
      }
    }
  }
}

// x (N, S, C) -> out (N, C, S) = x^T + v[n or 0, c] (+ r (N, C, S)), with channel_add's
// arguments (rows = N·C); blocks of (32, 8) threads over (S tiles on x, which may be many; C
// tiles on y; N on z, grid-stride).
template <typename T>
__device__ __forceinline__ void channel_add_from_channels_last(
    const T* __restrict__ x, const T* __restrict__ v, const T* __restrict__ r,
    T* __restrict__ out, long long rows, int C, int S, int v_rows) {
  __shared__ T tile[TILE][TILE + 1];
  const int n = (int)(rows / C);
  const int s0 = blockIdx.x * TILE, c0 = blockIdx.y * TILE;
  for (int z = blockIdx.z; z < n; z += gridDim.z) {
    const long long base = (long long)z * C * S;
    __syncthreads();
    load_tile(tile, x + base, s0, c0, S, C);
    __syncthreads();
    for (int j = threadIdx.y; j < TILE; j += ROWS) {
      const int c = c0 + j, s = s0 + threadIdx.x;
      if (s < S && c < C) {
        const long long o = base + (long long)c * S + s;
        const float add = to_f32(v[(v_rows == 1 ? 0 : z) * C + c]);
        out[o] = channel_sum(tile[threadIdx.x][j], add, r, r ? r[o] : T());
      }
    }
  }
}

// channel_add_from_channels_last for even C and S through load_pair_tile: x, r and out moved
// as 16-bit pairs along S, the same sums in the same order (so the same bits).
template <typename T>
__device__ __forceinline__ void channel_add_from_channels_last_pairs(
    const uint32_t* __restrict__ x, const T* __restrict__ v, const uint32_t* __restrict__ r,
    uint32_t* __restrict__ out, long long rows, int C, int S, int v_rows) {
  __shared__ PairTile tile;
  const int n = (int)(rows / C);
  const int s0 = blockIdx.x * PAIR_TILE, c0 = blockIdx.y * PAIR_TILE;
  const int s = s0 + 2 * threadIdx.x;  // this thread's output pair: s and s + 1
  for (int z = blockIdx.z; z < n; z += gridDim.z) {
    const long long base = (long long)z * C * (S / 2);
    __syncthreads();
    load_pair_tile(tile, x + base, s0, c0, S, C);
    __syncthreads();
    for (int j = threadIdx.y; j < PAIR_TILE; j += PAIR_ROWS) {
      const int c = c0 + j;
      if (s < S && c < C) {
        const long long o = base + (long long)c * (S / 2) + s / 2;
        const float add = to_f32(v[(v_rows == 1 ? 0 : z) * C + c]);
        const uint32_t xv = tile[j][threadIdx.x ^ (j >> 1)], rv = r ? r[o] : 0u;
        const T* xe = reinterpret_cast<const T*>(&xv);
        const T* re = reinterpret_cast<const T*>(&rv);
        uint32_t ov;
        T* oe = reinterpret_cast<T*>(&ov);
#pragma unroll
        for (int e = 0; e < 2; ++e) oe[e] = channel_sum(xe[e], add, r, re[e]);
        out[o] = ov;
      }
    }
  }
}

template <typename T, int VEC>
__device__ __forceinline__ void add(const T* __restrict__ a, const T* __restrict__ b,
                                    T* __restrict__ out, long long n) {
  const long long stride = (long long)gridDim.x * blockDim.x * VEC;
  for (long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * VEC; i < n; i += stride) {
    if (VEC == 8) {
      uint4 av = *reinterpret_cast<const uint4*>(a + i);
      uint4 bv = *reinterpret_cast<const uint4*>(b + i);
      const T* ae = reinterpret_cast<const T*>(&av);
      const T* be = reinterpret_cast<const T*>(&bv);
      uint4 ov;
      T* oe = reinterpret_cast<T*>(&ov);
#pragma unroll
      for (int e = 0; e < 8; ++e) oe[e] = from_f32<T>(to_f32(ae[e]) + to_f32(be[e]));
      *reinterpret_cast<uint4*>(out + i) = ov;
    } else {
      out[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i]));
    }
  }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(TILE * ROWS)
    transpose_u16(const uint16_t* in, uint16_t* out, int n, int A, int B) {
  transpose(in, out, n, A, B);
}

extern "C" __global__ void __launch_bounds__(32 * PAIR_ROWS)
    transpose_pairs_u16(const uint32_t* in, uint32_t* out, int n, int A, int B) {
  transpose_pairs(in, out, n, A, B);
}

#define CHANNEL_ADD(TN, T, VEC)                                                                  \
  extern "C" __global__ void channel_add_##TN##_v##VEC(const T* x, const T* v, const T* r,      \
                                                        T* out, long long rows, int C, int S,    \
                                                        int v_rows) {                            \
    channel_add<T, VEC>(x, v, r, out, rows, C, S, v_rows);                                       \
  }
CHANNEL_ADD(f16, __half, 1)
CHANNEL_ADD(f16, __half, 8)
CHANNEL_ADD(bf16, __nv_bfloat16, 1)
CHANNEL_ADD(bf16, __nv_bfloat16, 8)

#define CHANNEL_ADD_FROM_CHANNELS_LAST(TN, T)                                                   \
  extern "C" __global__ void __launch_bounds__(TILE * ROWS)                                      \
      channel_add_from_channels_last_##TN(const T* x, const T* v, const T* r, T* out,            \
                                          long long rows, int C, int S, int v_rows) {            \
    channel_add_from_channels_last<T>(x, v, r, out, rows, C, S, v_rows);                         \
  }
CHANNEL_ADD_FROM_CHANNELS_LAST(f16, __half)
CHANNEL_ADD_FROM_CHANNELS_LAST(bf16, __nv_bfloat16)

#define CHANNEL_ADD_FROM_CHANNELS_LAST_PAIRS(TN, T)                                             \
  extern "C" __global__ void __launch_bounds__(32 * PAIR_ROWS)                                   \
      channel_add_from_channels_last_pairs_##TN(const uint32_t* x, const T* v, const uint32_t* r, \
                                                uint32_t* out, long long rows, int C, int S,     \
                                                int v_rows) {                                    \
    channel_add_from_channels_last_pairs<T>(x, v, r, out, rows, C, S, v_rows);                   \
  }
CHANNEL_ADD_FROM_CHANNELS_LAST_PAIRS(f16, __half)
CHANNEL_ADD_FROM_CHANNELS_LAST_PAIRS(bf16, __nv_bfloat16)

#define ADD(TN, T, VEC)                                                                          \
  extern "C" __global__ void add_##TN##_v##VEC(const T* a, const T* b, T* out, long long n) {   \
    add<T, VEC>(a, b, out, n);                                                                   \
  }
ADD(f16, __half, 1)
ADD(f16, __half, 8)
ADD(bf16, __nv_bfloat16, 1)
ADD(bf16, __nv_bfloat16, 8)
