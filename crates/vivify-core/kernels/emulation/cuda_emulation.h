// A CPU emulation of what vivify's CUDA kernels use, so kernels/*.cu compile with a C++ compiler
// and run on a machine without a GPU (tests/kernel_emulation.rs): the kernels' logic (indexing,
// fragment layouts, online softmax, barriers) is checked in CI, not only on a lent device.
//
// The model: blocks run one after another (so `__shared__` arrays become function statics, one
// per instantiation); a block's threads are fibers (ucontext) on one OS thread, with warps formed
// from consecutive thread indices (x fastest) as on the device. A thread runs until it waits at a
// barrier: __syncthreads, or the two warp barriers around each warp-collective instruction
// (shfl, ldmatrix, mma.sync), which exchange every lane's operands through a per-warp slot array
// and compute what the PTX ISA specifies for each lane. Which ready thread runs next is
// `Schedule` (lowest-numbered first lets warp 0 run as far ahead as the barriers allow);
// cp.async copies land at issue (`CpAsync::AtIssue`) or as late as cp.async.wait_group allows
// (`CpAsync::AtWait`). A kernel that matches its reference under every order and both copy
// timings neither reads a tile before its wait nor overwrites one another warp still reads; a
// barrier some threads never reach aborts as a deadlock. Runs are deterministic.
//
// Not modelled: timing, bank conflicts, the tensor cores' internal accumulation order (products
// are summed in f32 in k order), the hardware's approximations of exp2.
#pragma once

#include <stdint.h>
#include <ucontext.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <vector>

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
// The running thread's and block's indices (set by the scheduler before it resumes a thread).
inline Dim3 threadIdx, blockIdx;
// The launch's grid and block shapes, the same for every thread.
inline Dim3 gridDim, blockDim;

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

// Which waiting thread runs next when the running one blocks: the lowest-numbered ready thread
// (warp 0 runs as far ahead of the others as the barriers let it) or the highest-numbered.
// Kernels are run under both, so a missing barrier or a read before a copy's wait changes the
// result under at least one of them.
enum class Schedule { LowestFirst, HighestFirst };
inline Schedule schedule = Schedule::LowestFirst;

enum class CpAsync { AtIssue, AtWait };
inline CpAsync cp_async_mode = CpAsync::AtIssue;

struct Copy {
  void* dst;
  const void* src;
};

struct Barrier;

// One GPU thread: a fiber with its own stack, index, and cp.async groups.
struct Fiber {
  ucontext_t context;
  std::vector<char> stack;
  Dim3 index;
  bool done = false;
  const Barrier* waiting_on = nullptr;  // with the phase it waits to see end
  unsigned long long waiting_phase = 0;
  std::vector<Copy> uncommitted;
  std::deque<std::vector<Copy>> in_flight;
};

inline ucontext_t scheduler_context;
inline Fiber* running = nullptr;

// Back to the scheduler until it resumes this thread.
inline void yield() { swapcontext(&running->context, &scheduler_context); }

// A barrier for `expected` threads; an arriving thread waits (yields) until the phase ends.
struct Barrier {
  explicit Barrier(int expected) : expected(expected) {}
  int expected, arrived = 0;
  unsigned long long phase = 0;

  void arrive_and_wait() {
    const unsigned long long mine = phase;
    if (++arrived == expected) {
      arrived = 0;
      ++phase;
      return;
    }
    running->waiting_on = this;
    running->waiting_phase = mine;
    yield();
  }
  // An exited thread: later phases no longer wait for it.
  void arrive_and_drop() {
    --expected;
    if (arrived > 0 && arrived == expected) {
      arrived = 0;
      ++phase;
    }
  }
};

// The calling thread's index in its block (x fastest), as warps are formed from it.
inline int linear_thread() {
  return int(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}

// The running block: its barrier and each warp's barrier and operand slots.
struct Block {
  explicit Block(int threads)
      : all(threads),
        slots((threads + 31) / 32),
        results((threads + 31) / 32),
        results_phase((threads + 31) / 32, ~0ull) {
    for (int first = 0; first < threads; first += 32) warp.emplace_back(std::min(32, threads - first));
  }
  Barrier all;
  std::vector<Barrier> warp;
  struct alignas(16) Slot {
    unsigned char bytes[64];
  };
  std::vector<std::array<Slot, 32>> slots;
  // Per warp: each lane's result of a collective computed once for the whole warp, and the
  // barrier phase it was computed in.
  std::vector<std::array<Slot, 32>> results;
  std::vector<unsigned long long> results_phase;
};
inline Block* block = nullptr;

// A warp-collective instruction: every lane of the calling warp passes `mine`; `all(operand_of)`,
// where operand_of(j) is lane j's `mine`, returns every lane's result (an array of 32), computed
// once per warp; each lane gets its own.
template <typename In, typename Out, typename F>
Out warp_collective(const In& mine, F all) {
  static_assert(sizeof(In) <= sizeof(Block::Slot) && sizeof(Out) <= sizeof(Block::Slot),
                "operand too large for a slot");
  const int w = linear_thread() / 32, lane = linear_thread() % 32;
  auto& slots = block->slots[w];
  std::memcpy(slots[lane].bytes, &mine, sizeof(In));
  Barrier& barrier = block->warp[w];
  barrier.arrive_and_wait();
  if (block->results_phase[w] != barrier.phase) {
    auto operand_of = [&](int j) {
      In v;
      std::memcpy(&v, slots[j].bytes, sizeof(In));
      return v;
    };
    const std::array<Out, 32> outs = all(operand_of);
    for (int j = 0; j < 32; ++j) std::memcpy(block->results[w][j].bytes, &outs[j], sizeof(Out));
    block->results_phase[w] = barrier.phase;
  }
  Out out;
  std::memcpy(&out, block->results[w][lane].bytes, sizeof(Out));
  barrier.arrive_and_wait();  // every lane has read before the slots are reused
  return out;
}

// An `all` for warp_collective from each lane's result alone: f(lane, operand_of).
template <typename Out, typename F>
auto each_lane(F f) {
  return [f](auto operand_of) {
    std::array<Out, 32> outs;
    for (int lane = 0; lane < 32; ++lane) outs[lane] = f(lane, operand_of);
    return outs;
  };
}

inline std::function<void()> fiber_body;

inline void fiber_main() {
  fiber_body();
  Fiber* me = running;
  // A kernel that ends with copies not waited for would race with its own exit.
  if (!me->uncommitted.empty() || !me->in_flight.empty()) {
    std::fprintf(stderr, "emulation: a thread exited with cp.async copies not waited for\n");
    std::abort();
  }
  // An exited thread no longer holds up its block's or its warp's barriers.
  block->all.arrive_and_drop();
  block->warp[linear_thread() / 32].arrive_and_drop();
  me->done = true;
  // returning resumes the scheduler (uc_link)
}

// Runs `kernel()` on every thread of every block of `grid`, blocks of shape `shape`, one block
// after another, the block's threads as fibers on this OS thread switching at barriers and warp
// collectives in the order `schedule` says. A block whose threads all wait is a deadlock: abort.
template <typename K>
void launch(Dim3 grid, Dim3 shape, K kernel) {
  gridDim = grid;
  blockDim = shape;
  const int threads = int(shape.x * shape.y * shape.z);
  std::vector<Fiber> fibers(threads);
  for (auto& f : fibers) f.stack.resize(256 * 1024);
  fiber_body = kernel;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Block b(threads);
        block = &b;
        blockIdx = {bx, by, bz};
        for (int tid = 0; tid < threads; ++tid) {
          Fiber& f = fibers[tid];
          f.index = {tid % shape.x, tid / shape.x % shape.y, tid / (shape.x * shape.y)};
          f.done = false;
          f.waiting_on = nullptr;
          getcontext(&f.context);
          f.context.uc_stack.ss_sp = f.stack.data();
          f.context.uc_stack.ss_size = f.stack.size();
          f.context.uc_link = &scheduler_context;
          makecontext(&f.context, fiber_main, 0);
        }
        for (;;) {
          auto ready = [&](int i) {
            const Fiber& f = fibers[i];
            return !f.done && (!f.waiting_on || f.waiting_on->phase != f.waiting_phase);
          };
          int next = -1;
          for (int k = 0; k < threads && next < 0; ++k) {
            const int i = schedule == Schedule::LowestFirst ? k : threads - 1 - k;
            if (ready(i)) next = i;
          }
          if (next < 0) {
            if (std::all_of(fibers.begin(), fibers.end(), [](const Fiber& f) { return f.done; })) break;
            std::fprintf(stderr, "emulation: deadlock in block (%u, %u, %u): every thread waits\n",
                         bx, by, bz);
            std::abort();
          }
          running = &fibers[next];
          running->waiting_on = nullptr;
          threadIdx = running->index;
          swapcontext(&scheduler_context, &running->context);
        }
        running = nullptr;
        block = nullptr;
      }
}

}  // namespace emulation

inline void __syncthreads() { emulation::block->all.arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float x, int mask) {
  return emulation::warp_collective<float, float>(
      x, emulation::each_lane<float>([mask](int lane, auto of) { return of(lane ^ mask); }));
}

// Math functions the kernels call under their CUDA names.
inline float __expf(float x) { return expf(x); }
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }

// ---- the PTX helpers of kernels/flash_attn.cu ----

inline void cp_async16(void* smem, const void* gmem) {
  if (emulation::cp_async_mode == emulation::CpAsync::AtIssue)
    std::memcpy(smem, gmem, 16);
  else
    emulation::running->uncommitted.push_back({smem, gmem});
}
inline void cp_async_commit() {
  auto* me = emulation::running;
  me->in_flight.push_back(std::move(me->uncommitted));
  me->uncommitted.clear();
}
// cp.async.wait_group N: all but the newest N committed groups have landed.
template <int N>
inline void cp_async_wait() {
  auto& in_flight = emulation::running->in_flight;
  while (in_flight.size() > size_t(N)) {
    for (const auto& c : in_flight.front()) std::memcpy(c.dst, c.src, 16);
    in_flight.pop_front();
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
  const Out out = emulation::warp_collective<const void*, Out>(smem, emulation::each_lane<Out>([](int lane, auto of) {
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
  }));
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
  const Out out = emulation::warp_collective<In, Out>(mine, [](auto of) {
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
    std::array<Out, 32> outs;
    for (int lane = 0; lane < 32; ++lane) {
      const In me = of(lane);
      const int g = lane / 4, t = lane % 4;
      for (int e = 0; e < 4; ++e) {
        const int row = g + (e >= 2 ? 8 : 0), col = 2 * t + (e & 1);
        float acc = me.c[e];
        for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
        outs[lane].d[e] = acc;
      }
    }
    return outs;
  });
  std::memcpy(c, out.d, sizeof(out.d));
}
inline void mma(float c[4], const uint32_t a[4], const uint32_t b[2], __half) {
  mma_emulated<__half>(c, a, b);
}
inline void mma(float c[4], const uint32_t a[4], const uint32_t b[2], __nv_bfloat16) {
  mma_emulated<__nv_bfloat16>(c, a, b);
}
