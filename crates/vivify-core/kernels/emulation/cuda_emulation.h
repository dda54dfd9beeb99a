// A CPU emulation of what vivify's CUDA kernels use, so kernels/*.cu compile with a C++ compiler
// and run on a machine without a GPU (tests/kernel_emulation.rs): the kernels' logic (indexing,
// fragment layouts, online softmax, barriers) is checked in CI, not only on a lent device.
//
// The model: a block's threads are OS threads that run the kernel function concurrently, blocks
// one after another (so `__shared__` arrays become function statics, one per instantiation).
// Warp-collective instructions (shfl, ldmatrix, mma.sync) exchange every lane's operands through
// a per-warp slot array between two warp barriers, and compute what the PTX ISA specifies for
// each lane. cp.async copies run either at issue (`CpAsync::AtIssue`) or as late as
// cp.async.wait_group allows (`CpAsync::AtWait`): a kernel correct under both neither reads a
// tile before its wait nor overwrites one another warp still reads.
//
// Not modelled: timing, bank conflicts, the tensor cores' internal accumulation order (products
// are summed in f32 in k order), fast-math approximations of exp2f.
#pragma once

#include <array>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <thread>
#include <vector>
#include <stdint.h>

#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __align__(n) __attribute__((aligned(n)))
// One block runs at a time: a block's shared memory is the function's static storage.
#define __shared__ static

struct Dim3 {
  unsigned x, y, z;
};
inline thread_local Dim3 threadIdx, blockIdx;

struct uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// ---- 16-bit floats, stored as their bits; conversions round to nearest even ----

struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
struct __half2 {
  __half x, y;
};
struct __nv_bfloat162 {
  __nv_bfloat16 x, y;
};

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline __half __float2half_rn(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t sign = (u >> 16) & 0x8000;
  const uint32_t a = u & 0x7fffffff;
  if (a >= 0x7f800000) return {uint16_t(sign | 0x7c00 | (a > 0x7f800000 ? 0x200 : 0))};
  if (a >= 0x477ff000) return {uint16_t(sign | 0x7c00)};  // rounds past 65504: infinity
  if (a < 0x38800000) {
    // Subnormal half: the value in units of 2^-24, rounded to nearest even.
    const float scaled = bits_float(a) * 16777216.0f;
    return {uint16_t(sign | uint16_t(std::nearbyint(scaled)))};
  }
  const uint32_t rounded = a + 0xfff + ((a >> 13) & 1);
  return {uint16_t(sign | ((rounded - 0x38000000) >> 13))};
}
inline float __half2float(__half h) {
  const uint32_t sign = uint32_t(h.bits & 0x8000) << 16;
  const uint32_t e = (h.bits >> 10) & 0x1f, m = h.bits & 0x3ff;
  if (e == 0) return (sign ? -1.f : 1.f) * float(m) * 5.9604644775390625e-8f;  // 2^-24
  if (e == 31) return bits_float(sign | 0x7f800000 | (m << 13));
  return bits_float(sign | ((e + 112) << 23) | (m << 13));
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffff) > 0x7f800000) return {uint16_t((u >> 16) | 0x40)};
  return {uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16)};
}
inline float __bfloat162float(__nv_bfloat16 h) { return bits_float(uint32_t(h.bits) << 16); }

inline __half2 __floats2half2_rn(float a, float b) { return {__float2half_rn(a), __float2half_rn(b)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return {__float2bfloat16_rn(a), __float2bfloat16_rn(b)};
}

inline float to_float(__half h) { return __half2float(h); }
inline float to_float(__nv_bfloat16 h) { return __bfloat162float(h); }

// ---- blocks, barriers and warp collectives ----

namespace emulation {

// The running block: its barrier and each warp's barrier and operand slots.
struct Block {
  explicit Block(int warps) : all(warps * 32), slots(warps) {
    for (int w = 0; w < warps; ++w) warp.push_back(std::make_unique<std::barrier<>>(32));
  }
  std::barrier<> all;
  std::vector<std::unique_ptr<std::barrier<>>> warp;
  struct alignas(16) Slot {
    unsigned char bytes[64];
  };
  std::vector<std::array<Slot, 32>> slots;
};
inline Block* block = nullptr;

// Every lane of the calling warp passes `mine`; each gets `f(lane, operand_of)`, where
// operand_of(j) is lane j's `mine`.
template <typename In, typename F>
auto warp_collective(const In& mine, F f) {
  static_assert(sizeof(In) <= sizeof(Block::Slot), "operand too large for a slot");
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  auto& slots = block->slots[w];
  std::memcpy(slots[lane].bytes, &mine, sizeof(In));
  block->warp[w]->arrive_and_wait();
  auto operand_of = [&](int j) {
    In v;
    std::memcpy(&v, slots[j].bytes, sizeof(In));
    return v;
  };
  auto out = f(lane, operand_of);
  block->warp[w]->arrive_and_wait();  // every lane has read before the slots are reused
  return out;
}

enum class CpAsync { AtIssue, AtWait };
inline CpAsync cp_async_mode = CpAsync::AtIssue;

struct Copy {
  void* dst;
  const void* src;
};
inline thread_local std::vector<Copy> uncommitted;
inline thread_local std::deque<std::vector<Copy>> in_flight;

// Runs `kernel()` on a grid of (gx, gy) blocks of `warps` warps each.
template <typename K>
void launch(unsigned gx, unsigned gy, int warps, K kernel) {
  for (unsigned by = 0; by < gy; ++by)
    for (unsigned bx = 0; bx < gx; ++bx) {
      Block b(warps);
      block = &b;
      std::vector<std::thread> threads;
      for (int tid = 0; tid < warps * 32; ++tid)
        threads.emplace_back([&, tid] {
          threadIdx = {unsigned(tid), 0, 0};
          blockIdx = {bx, by, 0};
          kernel();
          // A kernel that ends with copies not waited for would race with its own exit.
          if (!uncommitted.empty() || !in_flight.empty()) std::abort();
        });
      for (auto& t : threads) t.join();
      block = nullptr;
    }
}

}  // namespace emulation

inline void __syncthreads() { emulation::block->all.arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float x, int mask) {
  return emulation::warp_collective(x, [&](int lane, auto of) { return of(lane ^ mask); });
}

// ---- the PTX helpers of kernels/flash_attn.cu ----

inline void cp_async16(void* smem, const void* gmem) {
  if (emulation::cp_async_mode == emulation::CpAsync::AtIssue)
    std::memcpy(smem, gmem, 16);
  else
    emulation::uncommitted.push_back({smem, gmem});
}
inline void cp_async_commit() {
  emulation::in_flight.push_back(std::move(emulation::uncommitted));
  emulation::uncommitted.clear();
}
// cp.async.wait_group N: all but the newest N committed groups have landed.
template <int N>
inline void cp_async_wait() {
  while (emulation::in_flight.size() > size_t(N)) {
    for (const auto& c : emulation::in_flight.front()) std::memcpy(c.dst, c.src, 16);
    emulation::in_flight.pop_front();
  }
}

// ex2.approx.ftz.f32: 2^x (the hardware's approximation is within 2 ulp; subnormals flush).
inline float exp2_approx(float x) { return exp2f(x); }

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8i..8i+7 address the rows of matrix i;
// lane L receives, of each matrix i, row L/4, columns 2(L%4) and 2(L%4)+1 (with .trans: rows
// 2(L%4) and 2(L%4)+1 of column L/4), the lower-numbered element in the low half.
template <bool TRANS>
inline void ldmatrix_x4(uint32_t r[4], const void* smem) {
  struct Out {
    uint32_t r[4];
  };
  const Out out = emulation::warp_collective(smem, [](int lane, auto of) {
    Out o;
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
      auto at = [&](int row, int col) {
        uint16_t v;
        std::memcpy(&v, static_cast<const uint16_t*>(of(8 * i + row)) + col, 2);
        return uint32_t(v);
      };
      o.r[i] = TRANS ? at(2 * t, g) | (at(2 * t + 1, g) << 16) : at(g, 2 * t) | (at(g, 2 * t + 1) << 16);
    }
    return o;
  });
  std::memcpy(r, out.r, sizeof(out.r));
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: D (16x8) = A (16x16) B (16x8) + C, with
// lane (g, t) = (L/4, L%4) holding A rows g and g+8, columns 2t, 2t+1 (registers 0, 1) and
// 2t+8, 2t+9 (registers 2, 3); B rows 2t, 2t+1 (register 0) and 2t+8, 2t+9 (register 1) of
// column g; C and D rows g (0, 1) and g+8 (2, 3), columns 2t and 2t+1.
template <typename T>
inline void mma_emulated(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  struct In {
    uint32_t a[4], b[2];
    float c[4];
  };
  struct Out {
    float d[4];
  };
  In mine;
  std::memcpy(mine.a, a, sizeof(mine.a));
  std::memcpy(mine.b, b, sizeof(mine.b));
  std::memcpy(mine.c, c, sizeof(mine.c));
  const Out out = emulation::warp_collective(mine, [](int lane, auto of) {
    auto half_of = [](uint32_t reg, int hi) {
      T h;
      const uint16_t bits = uint16_t(hi ? reg >> 16 : reg);
      std::memcpy(&h, &bits, 2);
      return to_float(h);
    };
    float A[16][16], B[16][8];
    for (int j = 0; j < 32; ++j) {
      const In in = of(j);
      const int g = j / 4, t = j % 4;
      for (int e = 0; e < 2; ++e) {
        A[g][2 * t + e] = half_of(in.a[0], e);
        A[g + 8][2 * t + e] = half_of(in.a[1], e);
        A[g][2 * t + 8 + e] = half_of(in.a[2], e);
        A[g + 8][2 * t + 8 + e] = half_of(in.a[3], e);
        B[2 * t + e][g] = half_of(in.b[0], e);
        B[2 * t + 8 + e][g] = half_of(in.b[1], e);
      }
    }
    const In me = of(lane);
    const int g = lane / 4, t = lane % 4;
    Out o;
    for (int e = 0; e < 4; ++e) {
      const int row = g + (e >= 2 ? 8 : 0), col = 2 * t + (e & 1);
      float acc = me.c[e];
      for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
      o.d[e] = acc;
    }
    return o;
  });
  std::memcpy(c, out.d, sizeof(out.d));
}
inline void mma(float c[4], const uint32_t a[4], const uint32_t b[2], __half) {
  mma_emulated<__half>(c, a, b);
}
inline void mma(float c[4], const uint32_t a[4], const uint32_t b[2], __nv_bfloat16) {
  mma_emulated<__nv_bfloat16>(c, a, b);
}
