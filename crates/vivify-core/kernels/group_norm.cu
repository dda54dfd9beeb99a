// GroupNorm (+ optional SiLU) for vivify's CUDA build, in two kernels and three passes over the
// data (two reads for the statistics, one read and one write to apply), with f32 statistics.
// candle-op GroupNorm took ~10 passes over an f32 copy.
//
// x is (B, F, C, P) contiguous: group (b, g) is F runs of R = (C/G)·P elements, one per frame,
// C·P apart. F = 1 is the ordinary per-sample GroupNorm; F > 1 pools the statistics over the
// frames of a video (diffusers' GroupNorm on (B, C, F, H, W) in the temporal layers).
// Each group is split into `splits` slices; a slice's block computes its mean and M2 (two
// passes over its slice, the second from L2), then the apply kernel merges the slices (Chan et
// al.) and normalises its slice. For a convolution's or a transformer's input (16-bit types) a
// finalize kernel merges the slices once and apply_channels_last writes the output channels last.
// A slice is walked frame by frame, so no element pays a 64-bit division for its address (the
// first version divided twice per element, which made the kernels compute-bound), and the `_v`
// entries move 16 bytes per access where P is a multiple of that many elements.
#ifdef VIVIFY_KERNEL_EMULATION
#include "emulation/cuda_emulation.h"  // the CPU build (tests/kernel_emulation.rs)
#else
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>
#endif
#include "pair_tile.cuh"

namespace {

constexpr int THREADS = 256;

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float block_sum(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < THREADS / 32; ++w) total += shared[w];
  return total;
}

struct Slice {
  long long begin, end;  // virtual indices within the group: v = f·R + r
};

// Slice s of `splits` over a group's n virtual indices, its bounds on multiples of VEC (n is a
// multiple of VEC).
template <int VEC>
__device__ __forceinline__ Slice slice_of(long long n, int splits, int s) {
  return {n * s / splits / VEC * VEC, n * (s + 1) / splits / VEC * VEC};
}

// Elements per access: 16 bytes, or one.
template <typename T, bool VECTOR>
constexpr int VEC_OF = VECTOR ? 16 / (int)sizeof(T) : 1;

// VEC elements from p (16-byte aligned where VEC > 1) as floats.
template <typename T, int VEC>
__device__ __forceinline__ void load(const T* __restrict__ p, float (&out)[VEC]) {
  if constexpr (VEC == 1) {
    out[0] = to_f32(p[0]);
  } else {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = to_f32(e[i]);
  }
}

// body(index, r) for this thread's groups of VEC elements of the slice: frame by frame, each
// frame's part of the slice is contiguous, and the thread takes every THREADS-th group of it;
// `index` is the first element's, r (< 2^31, checked by the host) its offset in the frame's run
// (its channel: the group's first + r / pixels).
template <int VEC, typename Body>
__device__ __forceinline__ void for_each_run(const Slice& sl, long long run, long long base,
                                             long long frame_stride, Body body) {
  for (long long f = sl.begin / run; f * run < sl.end; ++f) {
    const long long start = f * run;
    const long long lo = (sl.begin > start ? sl.begin : start) - start;
    const long long hi = (sl.end < start + run ? sl.end : start + run) - start;
    for (long long r = lo + (long long)threadIdx.x * VEC; r < hi; r += (long long)THREADS * VEC)
      body(base + f * frame_stride + r, (int)r);
  }
}

template <typename T, bool VECTOR>
__device__ void stats(const T* __restrict__ x, float* __restrict__ partial, int frames, int channels,
                      int pixels, int groups, int splits) {
  constexpr int VEC = VEC_OF<T, VECTOR>;
  __shared__ float shared[THREADS / 32];
  const int bg = blockIdx.x, s = blockIdx.y;
  const int b = bg / groups, g = bg % groups;
  const long long run = (long long)(channels / groups) * pixels;
  const long long frame_stride = (long long)channels * pixels;
  const long long base = (long long)b * frames * frame_stride + (long long)g * run;
  const Slice sl = slice_of<VEC>(run * frames, splits, s);
  float sum = 0.f;
  for_each_run<VEC>(sl, run, base, frame_stride, [&](long long at, int) {
    float v[VEC];
    load<T, VEC>(x + at, v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) sum += v[i];
  });
  const float count = (float)(sl.end - sl.begin);
  const float mean = block_sum(sum, shared) / fmaxf(count, 1.f);
  float m2 = 0.f;
  for_each_run<VEC>(sl, run, base, frame_stride, [&](long long at, int) {
    float v[VEC];
    load<T, VEC>(x + at, v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) m2 += (v[i] - mean) * (v[i] - mean);
  });
  m2 = block_sum(m2, shared);
  if (threadIdx.x == 0) {
    float* p = partial + ((long long)bg * splits + s) * 3;
    p[0] = count;
    p[1] = mean;
    p[2] = m2;
  }
}

// Chan's merge of a group's slices' (count, mean, M2), in slice order, into its mean and
// 1/sqrt(var + eps).
__device__ __forceinline__ void merge(const float* __restrict__ partial, int splits, float eps,
                                      float* __restrict__ stat) {
  float n = 0.f, mean = 0.f, m2 = 0.f;
  for (int i = 0; i < splits; ++i) {
    const float* p = partial + i * 3;
    const float nb = p[0];
    if (nb == 0.f) continue;
    const float delta = p[1] - mean, total = n + nb;
    mean += delta * nb / total;
    m2 += p[2] + delta * delta * n * nb / total;
    n = total;
  }
  stat[0] = mean;
  stat[1] = rsqrtf(m2 / n + eps);
}

// Affine and SiLU in f32 with one rounding at the end (PyTorch rounds once more between its
// group_norm and silu kernels).
template <typename T>
__device__ __forceinline__ T normalized(float x, float mean, float rstd, float weight, float bias,
                                        int silu) {
  float h = (x - mean) * rstd;
  h = h * weight + bias;
  if (silu) h = h / (1.f + __expf(-h));
  return from_f32<T>(h);
}

template <typename T, bool VECTOR>
__device__ void apply(const T* __restrict__ x, const float* __restrict__ partial,
                      const T* __restrict__ weight, const T* __restrict__ bias, T* __restrict__ y,
                      int frames, int channels, int pixels, int groups, int splits, float eps,
                      int silu) {
  constexpr int VEC = VEC_OF<T, VECTOR>;
  __shared__ float stat[2];
  const int bg = blockIdx.x, s = blockIdx.y;
  const int b = bg / groups, g = bg % groups;
  if (threadIdx.x == 0) merge(partial + (long long)bg * splits * 3, splits, eps, stat);
  __syncthreads();
  const float mean = stat[0], rstd = stat[1];
  const int cpg = channels / groups;
  const long long run = (long long)cpg * pixels;
  const long long frame_stride = (long long)channels * pixels;
  const long long base = (long long)b * frames * frame_stride + (long long)g * run;
  const Slice sl = slice_of<VEC>(run * frames, splits, s);
  for_each_run<VEC>(sl, run, base, frame_stride, [&](long long at, int r) {
    // pixels is a multiple of VEC: the VEC elements share one channel.
    const int c = g * cpg + r / pixels;
    const float w = to_f32(weight[c]), bi = to_f32(bias[c]);
    float v[VEC];
    load<T, VEC>(x + at, v);
    if constexpr (VEC == 1) {
      y[at] = normalized<T>(v[0], mean, rstd, w, bi, silu);
    } else {
      uint4 raw;
      T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
      for (int i = 0; i < VEC; ++i) e[i] = normalized<T>(v[i], mean, rstd, w, bi, silu);
      *reinterpret_cast<uint4*>(y + at) = raw;
    }
  });
}

// The statistics of every (sample, group), merged once for apply_channels_last's tiles, which
// each need several groups: (mean, rstd) pairs.
__device__ void finalize(const float* __restrict__ partial, float* __restrict__ stat, int count,
                         int splits, float eps) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) merge(partial + (long long)i * splits * 3, splits, eps, stat + 2 * i);
}

// The apply pass writing channels last: x (B, F, C, P) -> y (B, P, F, C), the layout the next
// convolution (F = 1) or the transformers' tokens read, so no transpose follows. Rows
// r = f·C + c of the (B, F·C, P) view in 32x32 (row, pixel) tiles through shared memory, as
// elementwise.cu's transpose, so both the reads and writes are coalesced; blocks of (32, 8)
// threads, pixel tiles on x, row tiles on y, videos on z (grid-stride).
constexpr int TILE = 32;
constexpr int TILE_ROWS = 8;

// Each tile row's channel and group are worked out once per tile (by its first warp, into
// shared memory), not per element.
template <typename T>
__device__ void apply_channels_last(const T* __restrict__ x, const float* __restrict__ stat,
                                    const T* __restrict__ weight, const T* __restrict__ bias,
                                    T* __restrict__ y, int batch, int frames, int channels,
                                    int pixels, int groups, int silu) {
  __shared__ T tile[TILE][TILE + 1];
  __shared__ float row_mean[TILE], row_rstd[TILE], row_weight[TILE], row_bias[TILE];
  const int p0 = blockIdx.x * TILE, r0 = blockIdx.y * TILE;
  const int rows = frames * channels, cpg = channels / groups;
  for (int b = blockIdx.z; b < batch; b += gridDim.z) {
    const long long base = (long long)b * rows * pixels;
    __syncthreads();
    if (threadIdx.y == 0 && r0 + (int)threadIdx.x < rows) {
      const int c = (r0 + threadIdx.x) % channels;
      const float* s = stat + 2 * ((long long)b * groups + c / cpg);
      row_mean[threadIdx.x] = s[0];
      row_rstd[threadIdx.x] = s[1];
      row_weight[threadIdx.x] = to_f32(weight[c]);
      row_bias[threadIdx.x] = to_f32(bias[c]);
    }
    __syncthreads();
    for (int j = threadIdx.y; j < TILE; j += TILE_ROWS) {
      const int r = r0 + j, p = p0 + threadIdx.x;
      if (r < rows && p < pixels)
        tile[j][threadIdx.x] = normalized<T>(to_f32(x[base + (long long)r * pixels + p]),
                                             row_mean[j], row_rstd[j], row_weight[j],
                                             row_bias[j], silu);
    }
    __syncthreads();
    for (int j = threadIdx.y; j < TILE; j += TILE_ROWS) {
      const int p = p0 + j, r = r0 + threadIdx.x;
      if (r < rows && p < pixels) y[base + (long long)p * rows + r] = tile[threadIdx.x][j];
    }
  }
}

// apply_channels_last for even F·C and P through load_pair_tile (pair_tile.cuh): x read and y
// written as 16-bit pairs, each loaded pair normalised with its row's statistics and affine
// (the same floats as apply_channels_last, so the same bits).
template <typename T>
__device__ void apply_channels_last_pairs(const uint32_t* __restrict__ x,
                                          const float* __restrict__ stat,
                                          const T* __restrict__ weight, const T* __restrict__ bias,
                                          uint32_t* __restrict__ y, int batch, int frames,
                                          int channels, int pixels, int groups, int silu) {
  static_assert(sizeof(T) == 2, "pairs of 16-bit elements");
  __shared__ PairTile tile;
  __shared__ float row_mean[PAIR_TILE], row_rstd[PAIR_TILE], row_weight[PAIR_TILE],
      row_bias[PAIR_TILE];
  const int p0 = blockIdx.x * PAIR_TILE, r0 = blockIdx.y * PAIR_TILE;
  const int rows = frames * channels, cpg = channels / groups;
  const int thread = threadIdx.y * blockDim.x + threadIdx.x;
  const int r = r0 + 2 * threadIdx.x;  // this thread's output pair: rows r and r + 1
  for (int b = blockIdx.z; b < batch; b += gridDim.z) {
    const long long base = (long long)b * rows * (pixels / 2);  // pairs before video b
    __syncthreads();
    if (thread < PAIR_TILE && r0 + thread < rows) {
      const int c = (r0 + thread) % channels;
      const float* s = stat + 2 * ((long long)b * groups + c / cpg);
      row_mean[thread] = s[0];
      row_rstd[thread] = s[1];
      row_weight[thread] = to_f32(weight[c]);
      row_bias[thread] = to_f32(bias[c]);
    }
    __syncthreads();
    load_pair_tile(tile, x + base, r0, p0, rows, pixels, [&](int j, uint32_t pair) {
      const T* e = reinterpret_cast<const T*>(&pair);
      uint32_t out;
      T* o = reinterpret_cast<T*>(&out);
#pragma unroll
      for (int i = 0; i < 2; ++i)
        o[i] = normalized<T>(to_f32(e[i]), row_mean[j], row_rstd[j], row_weight[j], row_bias[j],
                             silu);
      return out;
    });
    __syncthreads();
    for (int j = threadIdx.y; j < PAIR_TILE; j += PAIR_ROWS) {
      const int p = p0 + j;
      if (p < pixels && r < rows)
        y[base + (long long)p * (rows / 2) + r / 2] = tile[j][threadIdx.x ^ (j >> 1)];
    }
  }
}

}  // namespace

// `_v` entries: 16 bytes per access, for P a multiple of 16 bytes' elements and x 16-byte aligned.
#define GROUP_NORM_PASSES(TN, T, SUFFIX, VECTOR)                                                 \
  extern "C" __global__ void __launch_bounds__(THREADS) group_norm_stats_##TN##SUFFIX(           \
      const T* x, float* partial, int frames, int channels, int pixels, int groups, int splits) { \
    stats<T, VECTOR>(x, partial, frames, channels, pixels, groups, splits);                      \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(THREADS) group_norm_apply_##TN##SUFFIX(           \
      const T* x, const float* partial, const T* weight, const T* bias, T* y, int frames,        \
      int channels, int pixels, int groups, int splits, float eps, int silu) {                   \
    apply<T, VECTOR>(x, partial, weight, bias, y, frames, channels, pixels, groups, splits, eps, \
                     silu);                                                                      \
  }

#define GROUP_NORM_ENTRIES(TN, T)                                                                \
  GROUP_NORM_PASSES(TN, T, , false)                                                              \
  GROUP_NORM_PASSES(TN, T, _v, true)                                                             \
  extern "C" __global__ void __launch_bounds__(TILE * TILE_ROWS)                                 \
      group_norm_apply_channels_last_##TN(const T* x, const float* stat, const T* weight,        \
                                          const T* bias, T* y, int batch, int frames,            \
                                          int channels, int pixels, int groups, int silu) {      \
    apply_channels_last<T>(x, stat, weight, bias, y, batch, frames, channels, pixels, groups,    \
                           silu);                                                                \
  }

extern "C" __global__ void group_norm_finalize(const float* partial, float* stat, int count,
                                               int splits, float eps) {
  finalize(partial, stat, count, splits, eps);
}

// The pairs entry: 16-bit types only.
#define GROUP_NORM_PAIRS_ENTRY(TN, T)                                                            \
  extern "C" __global__ void __launch_bounds__(32 * PAIR_ROWS)                                   \
      group_norm_apply_channels_last_pairs_##TN(const uint32_t* x, const float* stat,            \
                                                const T* weight, const T* bias, uint32_t* y,     \
                                                int batch, int frames, int channels, int pixels, \
                                                int groups, int silu) {                          \
    apply_channels_last_pairs<T>(x, stat, weight, bias, y, batch, frames, channels, pixels,      \
                                 groups, silu);                                                  \
  }

GROUP_NORM_ENTRIES(f32, float)
GROUP_NORM_ENTRIES(f16, __half)
GROUP_NORM_ENTRIES(bf16, __nv_bfloat16)
GROUP_NORM_PAIRS_ENTRY(f16, __half)
GROUP_NORM_PAIRS_ENTRY(bf16, __nv_bfloat16)
