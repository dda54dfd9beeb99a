// kernels/group_norm.cu under the CPU emulation: the statistics and apply kernels as
// nn/cuda/group_norm.rs launches them (a block per (video, group) and slice, 256 threads), over
// one frame and pooled over several, with one slice and with several (Chan's merge), with and
// without SiLU, f32/f16/bf16, against GroupNorm computed in double precision.
#include "../group_norm.cu"

#include <string>

#include "check_util.h"

namespace {

struct Case {
  int videos, frames, channels, pixels, groups, splits;
  bool silu;
};

template <typename T>
using Stats = void (*)(const T*, float*, int, int, int, int, int);
template <typename T>
using Apply = void (*)(const T*, const float*, const T*, const T*, T*, int, int, int, int, int,
                       float, int);

template <typename T>
bool check(const char* type, Stats<T> stats, Apply<T> apply) {
  // (videos, frames, channels, pixels, groups, splits, silu): a slice per group; slices that do
  // not divide the group; statistics pooled over frames; more slices than threads have work.
  const Case cases[] = {{2, 1, 32, 50, 8, 1, true},
                        {1, 1, 16, 1000, 4, 7, false},
                        {2, 3, 16, 100, 4, 3, true},
                        {1, 2, 8, 4, 2, 5, false}};
  bool ok = true;
  std::mt19937 rng(7);
  for (const Case& c : cases) {
    const size_t n = (size_t)c.videos * c.frames * c.channels * c.pixels;
    const auto x = random_values<T>(rng, n, 0.5f, 2.f);
    const auto w = random_values<T>(rng, c.channels);
    const auto b = random_values<T>(rng, c.channels);
    std::vector<float> partial((size_t)c.videos * c.groups * c.splits * 3, NAN);
    std::vector<T> y(n, from_float<T>(NAN));
    const float eps = 1e-6f;
    const Dim3 grid{unsigned(c.videos * c.groups), unsigned(c.splits), 1}, block{THREADS, 1, 1};
    emulation::launch(grid, block, [&] {
      stats(x.data(), partial.data(), c.frames, c.channels, c.pixels, c.groups, c.splits);
    });
    emulation::launch(grid, block, [&] {
      apply(x.data(), partial.data(), w.data(), b.data(), y.data(), c.frames, c.channels, c.pixels,
            c.groups, c.splits, eps, c.silu);
    });
    // x is (videos, frames, channels, pixels); a group pools its channels over every frame.
    std::vector<double> want(n);
    const int cpg = c.channels / c.groups;
    auto index = [&](int v, int f, int ch, int p) {
      return (((size_t)v * c.frames + f) * c.channels + ch) * c.pixels + p;
    };
    for (int v = 0; v < c.videos; ++v)
      for (int g = 0; g < c.groups; ++g) {
        double sum = 0, sq = 0, count = 0;
        for (int f = 0; f < c.frames; ++f)
          for (int ch = g * cpg; ch < (g + 1) * cpg; ++ch)
            for (int p = 0; p < c.pixels; ++p) {
              const double xv = to_float(x[index(v, f, ch, p)]);
              sum += xv;
              sq += xv * xv;
              ++count;
            }
        const double mean = sum / count, var = sq / count - mean * mean;
        for (int f = 0; f < c.frames; ++f)
          for (int ch = g * cpg; ch < (g + 1) * cpg; ++ch)
            for (int p = 0; p < c.pixels; ++p) {
              const size_t i = index(v, f, ch, p);
              double h = (to_float(x[i]) - mean) / std::sqrt(var + eps) * to_float(w[ch]) +
                         to_float(b[ch]);
              if (c.silu) h = h / (1 + std::exp(-h));
              want[i] = h;
            }
      }
    const std::string what = std::string("group_norm ") + type + " " + std::to_string(c.videos) +
                             "x" + std::to_string(c.frames) + "x" + std::to_string(c.channels) +
                             "x" + std::to_string(c.pixels) + " groups " +
                             std::to_string(c.groups) + " splits " + std::to_string(c.splits) +
                             (c.silu ? " silu" : "");
    ok &= report(what.c_str(), rel_err(y, want), std::max(tolerance<T>(), 1e-4));
  }
  return ok;
}

}  // namespace

int main() {
  const bool ok = under_both_orders([] {
    bool ok = check<float>("f32", group_norm_stats_f32, group_norm_apply_f32);
    ok &= check<__half>("f16", group_norm_stats_f16, group_norm_apply_f16);
    return ok & check<__nv_bfloat16>("bf16", group_norm_stats_bf16, group_norm_apply_bf16);
  });
  std::printf(ok ? "all cases match\n" : "some cases FAILED\n");
  return ok ? 0 : 1;
}
