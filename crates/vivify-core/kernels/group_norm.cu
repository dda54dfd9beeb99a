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
#ifdef VIVIFY_KERNEL_EMULATION
#include "emulation/cuda_emulation.h"  // the CPU build (tests/kernel_emulation.rs)
#else
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>
#endif

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

__device__ __forceinline__ Slice slice_of(long long n, int splits, int s) {
  return {n * s / splits, n * (s + 1) / splits};
}

__device__ __forceinline__ long long address(long long group_base, long long v, long long run,
                                             long long frame_stride) {
  return group_base + (v / run) * frame_stride + (v % run);
}

template <typename T>
__device__ void stats(const T* __restrict__ x, float* __restrict__ partial, int frames, int channels,
                      int pixels, int groups, int splits) {
  __shared__ float shared[THREADS / 32];
  const int bg = blockIdx.x, s = blockIdx.y;
  const int b = bg / groups, g = bg % groups;
  const long long run = (long long)(channels / groups) * pixels;
  const long long frame_stride = (long long)channels * pixels;
  const long long base = (long long)b * frames * frame_stride + (long long)g * run;
  const Slice sl = slice_of(run * frames, splits, s);
  float sum = 0.f;
  for (long long v = sl.begin + threadIdx.x; v < sl.end; v += THREADS)
    sum += to_f32(x[address(base, v, run, frame_stride)]);
  const float count = (float)(sl.end - sl.begin);
  const float mean = block_sum(sum, shared) / fmaxf(count, 1.f);
  float m2 = 0.f;
  for (long long v = sl.begin + threadIdx.x; v < sl.end; v += THREADS) {
    const float d = to_f32(x[address(base, v, run, frame_stride)]) - mean;
    m2 += d * d;
  }
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
__device__ __forceinline__ T normalized(T x, float mean, float rstd, T weight, T bias, int silu) {
  float h = (to_f32(x) - mean) * rstd;
  h = h * to_f32(weight) + to_f32(bias);
  if (silu) h = h / (1.f + __expf(-h));
  return from_f32<T>(h);
}

template <typename T>
__device__ void apply(const T* __restrict__ x, const float* __restrict__ partial,
                      const T* __restrict__ weight, const T* __restrict__ bias, T* __restrict__ y,
                      int frames, int channels, int pixels, int groups, int splits, float eps,
                      int silu) {
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
  const Slice sl = slice_of(run * frames, splits, s);
  for (long long v = sl.begin + threadIdx.x; v < sl.end; v += THREADS) {
    const long long a = address(base, v, run, frame_stride);
    const int c = g * cpg + (int)((v % run) / pixels);
    y[a] = normalized(x[a], mean, rstd, weight[c], bias[c], silu);
  }
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

template <typename T>
__device__ void apply_channels_last(const T* __restrict__ x, const float* __restrict__ stat,
                                    const T* __restrict__ weight, const T* __restrict__ bias,
                                    T* __restrict__ y, int batch, int frames, int channels,
                                    int pixels, int groups, int silu) {
  __shared__ T tile[TILE][TILE + 1];
  const int p0 = blockIdx.x * TILE, r0 = blockIdx.y * TILE;
  const int rows = frames * channels, cpg = channels / groups;
  for (int b = blockIdx.z; b < batch; b += gridDim.z) {
    const long long base = (long long)b * rows * pixels;
    __syncthreads();
    for (int j = threadIdx.y; j < TILE; j += TILE_ROWS) {
      const int r = r0 + j, p = p0 + threadIdx.x;
      if (r < rows && p < pixels) {
        const int c = r % channels;
        const float* s = stat + 2 * ((long long)b * groups + c / cpg);
        tile[j][threadIdx.x] =
            normalized(x[base + (long long)r * pixels + p], s[0], s[1], weight[c], bias[c], silu);
      }
    }
    __syncthreads();
    for (int j = threadIdx.y; j < TILE; j += TILE_ROWS) {
      const int p = p0 + j, r = r0 + threadIdx.x;
      if (r < rows && p < pixels) y[base + (long long)p * rows + r] = tile[threadIdx.x][j];
    }
  }
}

}  // namespace

#define GROUP_NORM_ENTRIES(TN, T)                                                                \
  extern "C" __global__ void __launch_bounds__(THREADS) group_norm_stats_##TN(                   \
      const T* x, float* partial, int frames, int channels, int pixels, int groups, int splits) { \
    stats<T>(x, partial, frames, channels, pixels, groups, splits);                              \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(THREADS) group_norm_apply_##TN(                   \
      const T* x, const float* partial, const T* weight, const T* bias, T* y, int frames,        \
      int channels, int pixels, int groups, int splits, float eps, int silu) {                   \
    apply<T>(x, partial, weight, bias, y, frames, channels, pixels, groups, splits, eps, silu);  \
  }                                                                                              \
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

GROUP_NORM_ENTRIES(f32, float)
GROUP_NORM_ENTRIES(f16, __half)
GROUP_NORM_ENTRIES(bf16, __nv_bfloat16)
