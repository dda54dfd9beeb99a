// kernels/flash_attn.cu under the CPU emulation (cuda_emulation.h): every entry point the host
// launches (nn/cuda/flash_attention.rs: one-warp blocks for 16 queries or fewer, else four warps
// with register, cp.async or ldmatrix tiles), f16 and bf16, head dims 64, 80 and 128, contiguous
// and strided (heads as views of a projection) inputs, partial tiles, under the thread orders and
// cp.async timings that expose a missing barrier or a tile read before its wait. Each output is
// compared with attention computed in double precision on the same rounded inputs. Prints one
// line per case; exits 1 if any case is off.
//
// Build and run (tests/kernel_emulation.rs does this):
//   c++ -std=c++20 -O2 -fno-strict-aliasing -DVIVIFY_KERNEL_EMULATION \
//       kernels/emulation/flash_attn_check.cpp -o flash_attn_check && ./flash_attn_check
#include "../flash_attn.cu"

#include <algorithm>
#include <string>

#include "check_util.h"

namespace {

using emulation::CpAsync;
using emulation::Schedule;

// An entry point: (q, k, v, o, H, L, S, strides, scale·log2 e).
template <typename T>
using Entry = void (*)(const T*, const T*, const T*, T*, int, int, int, Strides, float);

struct Case {
  int n, h, l, s;
  bool strided;  // q, k, v as head views of (N, rows, H·D) projections
};

// The entries the host launches for `tiles` at head dim D (kernel name, function, warps, query
// tiles per warp).
template <typename T>
struct Launch {
  std::string name;
  Entry<T> entry;
  int warps, tiles_per_warp;
};

#define ENTRIES(TN, T)                                                                          \
  template <>                                                                                  \
  std::vector<Launch<T>> launches<T>(int d, int l) {                                           \
    if (l <= 16) {                                                                             \
      if (d == 64) return {{"sync_w1", flash_attn_sync_##TN##_d64_w1, 1, 1}};                  \
      if (d == 80) return {{"sync_w1", flash_attn_sync_##TN##_d80_w1, 1, 1}};                  \
      return {{"sync_w1", flash_attn_sync_##TN##_d128_w1, 1, 1}};                              \
    }                                                                                          \
    if (d == 64)                                                                               \
      return {{"registers", flash_attn_sync_##TN##_d64_w4, 4, 1},                              \
              {"async", flash_attn_##TN##_d64_w4, 4, 1},                                       \
              {"ldmatrix", flash_attn_ldm_##TN##_d64_w4, 4, 2}};                               \
    if (d == 80)                                                                               \
      return {{"registers", flash_attn_sync_##TN##_d80_w4, 4, 1},                              \
              {"async", flash_attn_##TN##_d80_w4, 4, 1},                                       \
              {"ldmatrix", flash_attn_ldm_##TN##_d80_w4, 4, 1}};                               \
    return {{"registers", flash_attn_sync_##TN##_d128_w4, 4, 1},                               \
            {"async", flash_attn_##TN##_d128_w4, 4, 1},                                        \
            {"ldmatrix", flash_attn_ldm_##TN##_d128_w4, 4, 1}};                                \
  }
template <typename T>
std::vector<Launch<T>> launches(int d, int l);
ENTRIES(f16, __half)
ENTRIES(bf16, __nv_bfloat16)

// A (N, H, rows, D) operand stored contiguously, or as the heads of a (N, rows, H·D) projection.
template <typename T>
struct Operand {
  std::vector<T> data;
  long long batch, head;
  int row;
  float at(int b, int hh, int r, int c, int d) const {
    return to_float(data[b * batch + hh * head + (long long)r * row + c]);
  }
};

template <typename T>
Operand<T> random_operand(std::mt19937& rng, int n, int h, int rows, int d, bool strided) {
  Operand<T> op;
  op.data = random_values<T>(rng, (size_t)n * h * rows * d);
  if (strided) {
    op.batch = (long long)rows * h * d;
    op.head = d;
    op.row = h * d;
  } else {
    op.batch = (long long)h * rows * d;
    op.head = (long long)rows * d;
    op.row = d;
  }
  return op;
}

// max |out - reference| / max |reference| for one entry on one case.
template <typename T, int D>
double run_case(const Launch<T>& launch, const Case& c, CpAsync mode, emulation::Schedule order,
                unsigned seed) {
  std::mt19937 rng(seed);
  const auto q = random_operand<T>(rng, c.n, c.h, c.l, D, c.strided);
  const auto k = random_operand<T>(rng, c.n, c.h, c.s, D, c.strided);
  const auto v = random_operand<T>(rng, c.n, c.h, c.s, D, c.strided);
  // Output (N, L, H, D), poisoned so an unwritten element shows.
  std::vector<T> o((size_t)c.n * c.l * c.h * D, from_float<T>(NAN));
  const Strides st{q.batch, q.head, k.batch, k.head, v.batch, v.head, q.row, k.row, v.row};
  const float scale_log2 = 1.f / std::sqrt(float(D)) * 1.4426950408889634f;
  const int rows_per_block = 16 * launch.tiles_per_warp * launch.warps;
  emulation::cp_async_mode = mode;
  emulation::schedule = order;
  // As flash_attention.rs: the ldmatrix kernels take their blocks head-major on x.
  const unsigned tiles = (c.l + rows_per_block - 1) / rows_per_block;
  const Dim3 grid = launch.name == "ldmatrix" ? Dim3{unsigned(c.n * c.h) * tiles, 1, 1}
                                              : Dim3{unsigned(c.n * c.h), tiles, 1};
  emulation::launch(grid, {unsigned(32 * launch.warps), 1, 1}, [&] {
    launch.entry(q.data.data(), k.data.data(), v.data.data(), o.data(), c.h, c.l, c.s, st,
                 scale_log2);
  });
  double worst = 0, scale = 0;
  std::vector<double> p(c.s);
  for (int b = 0; b < c.n; ++b)
    for (int hh = 0; hh < c.h; ++hh)
      for (int i = 0; i < c.l; ++i) {
        double mx = -INFINITY;
        for (int j = 0; j < c.s; ++j) {
          double dot = 0;
          for (int e = 0; e < D; ++e) dot += double(q.at(b, hh, i, e, D)) * k.at(b, hh, j, e, D);
          p[j] = dot / std::sqrt(double(D));
          mx = std::max(mx, p[j]);
        }
        double sum = 0;
        for (int j = 0; j < c.s; ++j) sum += p[j] = std::exp(p[j] - mx);
        for (int e = 0; e < D; ++e) {
          double ref = 0;
          for (int j = 0; j < c.s; ++j) ref += p[j] * v.at(b, hh, j, e, D);
          ref /= sum;
          const double got = to_float(o[(((size_t)b * c.l + i) * c.h + hh) * D + e]);
          const double diff = std::isfinite(got) ? std::abs(got - ref) : INFINITY;
          worst = std::max(worst, diff);
          scale = std::max(scale, std::abs(ref));
        }
      }
  return worst / scale;
}

template <typename T, int D>
bool check(const char* type, double limit, const std::vector<Case>& cases) {
  bool ok = true;
  unsigned seed = 1;
  for (const Case& c : cases)
    for (const auto& launch : launches<T>(D, c.l))
      // Copies landing at issue with warp 0 running ahead (a stage overwritten while another
      // warp reads it), and at their wait with the last warp ahead (a tile read early).
      for (auto [mode, order] : {std::pair{CpAsync::AtIssue, Schedule::LowestFirst},
                                 std::pair{CpAsync::AtWait, Schedule::HighestFirst},
                                 std::pair{CpAsync::AtWait, Schedule::LowestFirst}}) {
        const double err = run_case<T, D>(launch, c, mode, order, seed++);
        const bool pass = err < limit;
        ok &= pass;
        std::printf("%s %s d%d %dx%dx%dx%d%s, cp.async %s, %s: rel err %.2e%s\n",
                    launch.name.c_str(), type, D, c.n, c.h, c.l, c.s, c.strided ? " strided" : "",
                    mode == CpAsync::AtIssue ? "at issue" : "at wait",
                    order == Schedule::LowestFirst ? "lowest first" : "highest first", err,
                    pass ? "" : "  <-- FAILED");
      }
  return ok;
}

}  // namespace

int main() {
  // (batch, heads, queries, keys, strided): more than one block of 128 queries with a partial
  // key tile (with more heads than query blocks: a mix-up of the two in a block's numbering
  // leaves a head unwritten), cross-attention to 77 tokens, fewer queries than one block, several key tiles with
  // a partial last one, temporal attention over 16 frames (one-warp blocks).
  const std::vector<Case> d64 = {
      {1, 2, 200, 150, false}, {1, 3, 200, 150, true}, {2, 1, 64, 77, true},
      {1, 1, 40, 300, false},  {2, 3, 16, 16, true},
  };
  const std::vector<Case> other = {{1, 2, 130, 70, true}, {1, 1, 8, 20, false}};
  bool ok = true;
  ok &= check<__half, 64>("f16", 5e-3, d64);
  ok &= check<__nv_bfloat16, 64>("bf16", 3e-2, d64);
  ok &= check<__half, 80>("f16", 5e-3, other);
  ok &= check<__nv_bfloat16, 80>("bf16", 3e-2, other);
  ok &= check<__half, 128>("f16", 5e-3, other);
  ok &= check<__nv_bfloat16, 128>("bf16", 3e-2, other);
  std::printf(ok ? "all cases match\n" : "some cases FAILED\n");
  return ok ? 0 : 1;
}
