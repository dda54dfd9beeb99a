// Fused scaled-dot-product attention forward (FlashAttention-2 style) for vivify's CUDA build.
// One warp owns MT x 16 query rows; a block of WARPS warps walks the keys in tiles of 64, keeping
// the running row max and sum (online softmax) so no score matrix ever reaches global memory.
// Tensor-core math through mma.sync m16n8k16 (f16/bf16 in, f32 accumulate); P is rounded to the
// input type before P·V, as in FlashAttention. Inputs: q (B, H, L, D), k and v (B, H, S, D) as
// strided views (batch, head and row strides in elements, D contiguous, rows 16-byte aligned), so
// the heads are read straight from the projections' (B, L, H·D) output; output o (B, L, H, D)
// contiguous, which is the out-projection's input as it stands.
#ifdef VIVIFY_KERNEL_EMULATION
// The CPU build of kernels/emulation/: the CUDA types and the PTX helpers below emulated.
#include "emulation/cuda_emulation.h"
#else
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>
#endif

namespace {

constexpr int BC = 64;  // keys per tile
constexpr int PAD = 8;  // shared-memory row padding (halves): conflict-free fragment loads

// Element strides of the (batch, head) axes of q, k and v, and of their rows (rows fit in 32 bits;
// the host checks), passed by value.
struct Strides {
  long long q_batch, q_head, k_batch, k_head, v_batch, v_head;
  int q_row, k_row, v_row;
};

#ifndef VIVIFY_KERNEL_EMULATION
// Asynchronous 16-byte global -> shared copies (sm_80+): the next K/V tile loads while this one
// is multiplied.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
#endif  // VIVIFY_KERNEL_EMULATION

// Max / sum over the four threads (t = 0..3) that hold parts of one MMA row.
__device__ __forceinline__ float row_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float row_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

__device__ __forceinline__ uint32_t pack_f32(float a, float b, __half) {
  __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&h);
}
__device__ __forceinline__ uint32_t pack_f32(float a, float b, __nv_bfloat16) {
  __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <typename T>
__device__ __forceinline__ uint32_t pack_raw(T lo, T hi) {
  uint16_t l = *reinterpret_cast<uint16_t*>(&lo), h = *reinterpret_cast<uint16_t*>(&hi);
  return (uint32_t)l | ((uint32_t)h << 16);
}

#ifndef VIVIFY_KERNEL_EMULATION
// Four 8x8 b16 matrices from shared memory; lanes 8i..8i+7 give the row addresses of matrix i.
// Without .trans lane (g, t) receives row g, columns 2t and 2t+1 of each (a K tile's B fragment);
// with .trans rows 2t and 2t+1 of column g (a V tile's B fragment).
template <bool TRANS>
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  if (TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

// 2^x as one MUFU.EX2 (ex2.approx.ftz, as FlashAttention gets exp2f under --use_fast_math);
// exp2f adds a range check and two scalings per call for subnormal results, which the softmax
// weights never need: they are rounded to the input type before P·V.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ void mma(float c[4], const uint32_t a[4], const uint32_t b[2], __half) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void mma(float c[4], const uint32_t a[4], const uint32_t b[2], __nv_bfloat16) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif  // VIVIFY_KERNEL_EMULATION

// ASYNC: K/V tiles through cp.async, double-buffered where two stages fit in 48 KiB of shared
// memory (head dims 64 and 80), else single-buffered; otherwise loaded through registers.
// MT: 16-row query tiles per warp; with 2, each K/V fragment read from shared memory feeds two
// MMAs (FlashAttention-2's 128-query blocks for head dim 64). LDM: fragments through ldmatrix
// (one instruction per four 8x8 matrices) instead of 32- and 16-bit shared loads.
template <typename T, int D, int WARPS, bool ASYNC, int MT, bool LDM>
__device__ __forceinline__ void flash_fwd(const T* __restrict__ q, const T* __restrict__ k,
                                          const T* __restrict__ v, T* __restrict__ o, int H, int L,
                                          int S, Strides st, float scale_log2) {
  static_assert(D % 16 == 0, "head dim must be a multiple of 16");
  constexpr int LDS = D + PAD;
  constexpr int STAGES = (ASYNC && 2 * 2 * BC * LDS * sizeof(T) <= 48 * 1024) ? 2 : 1;
  __shared__ __align__(16) T ks[STAGES * BC * LDS];
  __shared__ __align__(16) T vs[STAGES * BC * LDS];

  // Batch·heads on x (up to 2^31 - 1 blocks: temporal attention has one row per pixel), query
  // tiles on y. The LDM variant numbers its blocks bh · tiles + tile on x instead, so a head's
  // query tiles run in consecutive blocks, as FlashAttention-2's grid orders them: the blocks
  // resident at once then share a few heads' K/V through L2 rather than each streaming its own
  // head's from memory.
  constexpr int ROWS = WARPS * 16 * MT;
  int bh, qtile;
  if (LDM) {
    const int tiles = (L + ROWS - 1) / ROWS;
    bh = blockIdx.x / tiles;
    qtile = blockIdx.x % tiles;
  } else {
    bh = blockIdx.x;
    qtile = blockIdx.y;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;
  // In the LDM variant a warp whose rows all lie past L (in the last block of a sequence that
  // does not fill it) still loads its share of each tile and meets the barriers, but skips the
  // math.
  const bool active = !LDM || qtile * ROWS + warp * MT * 16 < L;
  // Rows g and g + 8 of each of the warp's MT tiles.
  int r0[MT], r1[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    r0[mt] = qtile * ROWS + (warp * MT + mt) * 16 + g;
    r1[mt] = r0[mt] + 8;
  }
  const long long bi = bh / H, hi = bh % H;
  const int qrow = st.q_row, krow = st.k_row, vrow = st.v_row;
  const T* qb = q + bi * st.q_batch + hi * st.q_head;
  const T* kb = k + bi * st.k_batch + hi * st.k_head;
  const T* vb = v + bi * st.v_batch + hi * st.v_head;

  // Q as A fragments (row-major 16 x D), loaded once.
  uint32_t qf[MT][D / 16][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const int a = r0[mt], b = r1[mt];
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
      const int c = kc * 16 + 2 * t;
      qf[mt][kc][0] = a < L ? *reinterpret_cast<const uint32_t*>(qb + a * qrow + c) : 0u;
      qf[mt][kc][1] = b < L ? *reinterpret_cast<const uint32_t*>(qb + b * qrow + c) : 0u;
      qf[mt][kc][2] = a < L ? *reinterpret_cast<const uint32_t*>(qb + a * qrow + c + 8) : 0u;
      qf[mt][kc][3] = b < L ? *reinterpret_cast<const uint32_t*>(qb + b * qrow + c + 8) : 0u;
    }
  }

  // Running max and sum of rows g (index 0) and g + 8 (index 1) of each tile.
  float m[MT][2], l[MT][2];
  float of[MT][D / 8][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.f;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) of[mt][dn][0] = of[mt][dn][1] = of[mt][dn][2] = of[mt][dn][3] = 0.f;
  }

  // One K/V tile (keys kt .. kt + BC) into shared-memory stage `stage`; rows past S are zeros.
  auto load_tile = [&](int stage, int kt) {
    T* kd = ks + stage * BC * LDS;
    T* vd = vs + stage * BC * LDS;
    for (int i = threadIdx.x; i < BC * D / 8; i += WARPS * 32) {
      const int row = i / (D / 8), col = (i % (D / 8)) * 8;
      T* kdst = kd + row * LDS + col;
      T* vdst = vd + row * LDS + col;
      if (kt + row < S) {
        const T* ksrc = kb + (kt + row) * krow + col;
        const T* vsrc = vb + (kt + row) * vrow + col;
        if (ASYNC) {
          cp_async16(kdst, ksrc);
          cp_async16(vdst, vsrc);
        } else {
          *reinterpret_cast<uint4*>(kdst) = *reinterpret_cast<const uint4*>(ksrc);
          *reinterpret_cast<uint4*>(vdst) = *reinterpret_cast<const uint4*>(vsrc);
        }
      } else {
        *reinterpret_cast<uint4*>(kdst) = make_uint4(0, 0, 0, 0);
        *reinterpret_cast<uint4*>(vdst) = make_uint4(0, 0, 0, 0);
      }
    }
    if (ASYNC) cp_async_commit();
  };

  if (STAGES == 2) load_tile(0, 0);
  for (int kt = 0, tile = 0; kt < S; kt += BC, ++tile) {
    const int cur = STAGES == 2 ? (tile & 1) : 0;
    if (STAGES == 2) {
      // Stage cur ^ 1 was last read in the previous iteration, which ended with a barrier.
      if (kt + BC < S) {
        load_tile(cur ^ 1, kt + BC);
        cp_async_wait<1>();  // this tile's group has landed (the next one may still fly)
      } else {
        cp_async_wait<0>();
      }
    } else {
      __syncthreads();  // the previous tile is no longer read
      load_tile(0, kt);
      if (ASYNC) cp_async_wait<0>();
    }
    __syncthreads();
    if (active) {
      const T* kst = ks + cur * BC * LDS;
      const T* vst = vs + cur * BC * LDS;

      // S = Q Kᵀ for this warp's rows and the tile's 64 keys (each sum over kc in the same order
      // whichever way the fragments are read).
      float sf[MT][BC / 8][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int n = 0; n < BC / 8; ++n)
          sf[mt][n][0] = sf[mt][n][1] = sf[mt][n][2] = sf[mt][n][3] = 0.f;
      if (LDM) {
        // Matrices: keys n·8.. and n·8+8.. (lanes 16-31), dims kc·16.. and kc·16+8.. (lanes
        // 8-15, 24-31): B fragments of key tiles n and n + 1.
        const T* kl = kst + ((lane & 7) + ((lane >> 4) << 3)) * LDS + ((lane >> 3) & 1) * 8;
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc)
#pragma unroll
          for (int n = 0; n < BC / 8; n += 2) {
            uint32_t b[4];
            ldmatrix_x4<false>(b, kl + n * 8 * LDS + kc * 16);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
              mma(sf[mt][n], qf[mt][kc], b, T());
              mma(sf[mt][n + 1], qf[mt][kc], b + 2, T());
            }
          }
      } else {
#pragma unroll
        for (int n = 0; n < BC / 8; ++n)
#pragma unroll
          for (int kc = 0; kc < D / 16; ++kc) {
            const T* kr = kst + (n * 8 + g) * LDS + kc * 16 + 2 * t;
            const uint32_t b[2] = {*reinterpret_cast<const uint32_t*>(kr),
                                   *reinterpret_cast<const uint32_t*>(kr + 8)};
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) mma(sf[mt][n], qf[mt][kc], b, T());
          }
      }

      // Online softmax in the log2 domain; e 0,1 belong to row g, e 2,3 to row g + 8. The LDM
      // variant keeps raw scores (the scale goes into the exponent's FMA), masks only in the last
      // tile (a uniform branch) and takes 2^x as one MUFU.EX2: five instructions fewer per score.
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        float mx0 = m[mt][0], mx1 = m[mt][1];
        if (LDM) {
          if (kt + BC > S) {
#pragma unroll
            for (int n = 0; n < BC / 8; ++n)
#pragma unroll
              for (int e = 0; e < 4; ++e)
                if (kt + n * 8 + 2 * t + (e & 1) >= S) sf[mt][n][e] = -INFINITY;
          }
          float raw0 = -INFINITY, raw1 = -INFINITY;
#pragma unroll
          for (int n = 0; n < BC / 8; ++n) {
            raw0 = fmaxf(raw0, fmaxf(sf[mt][n][0], sf[mt][n][1]));
            raw1 = fmaxf(raw1, fmaxf(sf[mt][n][2], sf[mt][n][3]));
          }
          raw0 = row_max(raw0);
          raw1 = row_max(raw1);
          // The scale is positive, so the largest raw score is the largest scaled one.
          mx0 = fmaxf(mx0, raw0 * scale_log2);
          mx1 = fmaxf(mx1, raw1 * scale_log2);
        } else {
#pragma unroll
          for (int n = 0; n < BC / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int col = kt + n * 8 + 2 * t + (e & 1);
              sf[mt][n][e] = col < S ? sf[mt][n][e] * scale_log2 : -INFINITY;
            }
            mx0 = fmaxf(mx0, fmaxf(sf[mt][n][0], sf[mt][n][1]));
            mx1 = fmaxf(mx1, fmaxf(sf[mt][n][2], sf[mt][n][3]));
          }
          mx0 = row_max(mx0);
          mx1 = row_max(mx1);
        }
        const float c0 = LDM ? exp2_approx(m[mt][0] - mx0) : exp2f(m[mt][0] - mx0);
        const float c1 = LDM ? exp2_approx(m[mt][1] - mx1) : exp2f(m[mt][1] - mx1);
        m[mt][0] = mx0;
        m[mt][1] = mx1;
        float rs0 = 0.f, rs1 = 0.f;
#pragma unroll
        for (int n = 0; n < BC / 8; ++n) {
          if (LDM) {
            sf[mt][n][0] = exp2_approx(fmaf(sf[mt][n][0], scale_log2, -mx0));
            sf[mt][n][1] = exp2_approx(fmaf(sf[mt][n][1], scale_log2, -mx0));
            sf[mt][n][2] = exp2_approx(fmaf(sf[mt][n][2], scale_log2, -mx1));
            sf[mt][n][3] = exp2_approx(fmaf(sf[mt][n][3], scale_log2, -mx1));
          } else {
            sf[mt][n][0] = exp2f(sf[mt][n][0] - mx0);
            sf[mt][n][1] = exp2f(sf[mt][n][1] - mx0);
            sf[mt][n][2] = exp2f(sf[mt][n][2] - mx1);
            sf[mt][n][3] = exp2f(sf[mt][n][3] - mx1);
          }
          rs0 += sf[mt][n][0] + sf[mt][n][1];
          rs1 += sf[mt][n][2] + sf[mt][n][3];
        }
        // Per-thread partial sums, reduced across the row's 4 threads at the end.
        l[mt][0] = l[mt][0] * c0 + rs0;
        l[mt][1] = l[mt][1] * c1 + rs1;
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn) {
          of[mt][dn][0] *= c0;
          of[mt][dn][1] *= c0;
          of[mt][dn][2] *= c1;
          of[mt][dn][3] *= c1;
        }
      }

      // O += P V: the S accumulators are already in the A-fragment layout of P.
#pragma unroll
      for (int kc = 0; kc < BC / 16; ++kc) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          a[mt][0] = pack_f32(sf[mt][2 * kc][0], sf[mt][2 * kc][1], T());
          a[mt][1] = pack_f32(sf[mt][2 * kc][2], sf[mt][2 * kc][3], T());
          a[mt][2] = pack_f32(sf[mt][2 * kc + 1][0], sf[mt][2 * kc + 1][1], T());
          a[mt][3] = pack_f32(sf[mt][2 * kc + 1][2], sf[mt][2 * kc + 1][3], T());
        }
        if (LDM) {
          // Transposed matrices: keys kc·16.. and kc·16+8.. (lanes 8-15, 24-31), dims dn·8.. and
          // dn·8+8.. (lanes 16-31): B fragments of output tiles dn and dn + 1.
          const T* vl =
              vst + (kc * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LDS + (lane >> 4) * 8;
#pragma unroll
          for (int dn = 0; dn < D / 8; dn += 2) {
            uint32_t b[4];
            ldmatrix_x4<true>(b, vl + dn * 8);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
              mma(of[mt][dn], a[mt], b, T());
              mma(of[mt][dn + 1], a[mt], b + 2, T());
            }
          }
        } else {
#pragma unroll
          for (int dn = 0; dn < D / 8; ++dn) {
            const T* vr = vst + (kc * 16 + 2 * t) * LDS + dn * 8 + g;
            const uint32_t b[2] = {pack_raw(vr[0], vr[LDS]), pack_raw(vr[8 * LDS], vr[9 * LDS])};
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) mma(of[mt][dn], a[mt], b, T());
          }
        }
      }
    }
    if (STAGES == 2) __syncthreads();  // everyone is done with stage cur before it is refilled
  }

  const long long orow = (long long)H * D;
  T* ob = o + bi * L * orow + hi * D;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float l0 = l[mt][0], l1 = l[mt][1];
    l0 = row_sum(l0);
    l1 = row_sum(l1);
    const float inv0 = 1.f / l0, inv1 = 1.f / l1;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      const int col = dn * 8 + 2 * t;
      if (r0[mt] < L)
        *reinterpret_cast<uint32_t*>(ob + r0[mt] * orow + col) =
            pack_f32(of[mt][dn][0] * inv0, of[mt][dn][1] * inv0, T());
      if (r1[mt] < L)
        *reinterpret_cast<uint32_t*>(ob + r1[mt] * orow + col) =
            pack_f32(of[mt][dn][2] * inv1, of[mt][dn][3] * inv1, T());
    }
  }
}

}  // namespace

// Entry points: flash_attn_{f16,bf16}_d{D}_w{WARPS} (cp.async tiles), flash_attn_sync_... (tiles
// through registers, the first version, kept as the fallback) and flash_attn_ldm_... (cp.async
// tiles, ldmatrix fragments; for head dim 64 two query tiles per warp, 128-query blocks: with
// head dims 80 and 128 that would spill registers). WARPS = 1 serves short sequences (the
// temporal attention's 16-32 frames) without idle warps; 4 serves the spatial ones.
#define FLASH_ENTRY(NAME, T, D, W, ASYNC, MT, LDM)                                            \
  extern "C" __global__ void __launch_bounds__(W * 32)                                        \
      NAME(const T* q, const T* k, const T* v, T* o, int H, int L, int S, Strides st,         \
           float scale_log2) {                                                                \
    flash_fwd<T, D, W, ASYNC, MT, LDM>(q, k, v, o, H, L, S, st, scale_log2);                  \
  }
#define FLASH_DIMS(TN, T, W)                                                \
  FLASH_ENTRY(flash_attn_##TN##_d64_w##W, T, 64, W, true, 1, false)         \
  FLASH_ENTRY(flash_attn_##TN##_d80_w##W, T, 80, W, true, 1, false)         \
  FLASH_ENTRY(flash_attn_##TN##_d128_w##W, T, 128, W, true, 1, false)       \
  FLASH_ENTRY(flash_attn_sync_##TN##_d64_w##W, T, 64, W, false, 1, false)   \
  FLASH_ENTRY(flash_attn_sync_##TN##_d80_w##W, T, 80, W, false, 1, false)   \
  FLASH_ENTRY(flash_attn_sync_##TN##_d128_w##W, T, 128, W, false, 1, false)
#define FLASH_LDM_DIMS(TN, T)                                           \
  FLASH_ENTRY(flash_attn_ldm_##TN##_d64_w4, T, 64, 4, true, 2, true)    \
  FLASH_ENTRY(flash_attn_ldm_##TN##_d80_w4, T, 80, 4, true, 1, true)    \
  FLASH_ENTRY(flash_attn_ldm_##TN##_d128_w4, T, 128, 4, true, 1, true)

FLASH_DIMS(f16, __half, 1)
FLASH_DIMS(f16, __half, 4)
FLASH_DIMS(bf16, __nv_bfloat16, 1)
FLASH_DIMS(bf16, __nv_bfloat16, 4)
FLASH_LDM_DIMS(f16, __half)
FLASH_LDM_DIMS(bf16, __nv_bfloat16)
