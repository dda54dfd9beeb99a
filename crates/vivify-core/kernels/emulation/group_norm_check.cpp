// kernels/group_norm.cu under the CPU emulation: the statistics and apply kernels as
// nn/cuda/group_norm.rs launches them (a block per (video, group) and slice, 256 threads;
// element by element and 16 bytes per access), over
// one frame and pooled over several, with one slice and with several (Chan's merge), with and
// without SiLU, f32/f16/bf16, against GroupNorm computed in double precision; and the
// channels-last output (statistics, finalize, tiled apply) at shapes with partial tiles, tiles
// that span several groups and more samples than z blocks.
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

// GroupNorm of x (videos, frames, channels, pixels) in double precision, a group pooling its
// channels over every frame; written (videos, pixels, frames, channels) when `channels_last`,
// else as x.
template <typename T>
std::vector<double> reference(const std::vector<T>& x, const std::vector<T>& w,
                              const std::vector<T>& b, int videos, int frames, int channels,
                              int pixels, int groups, float eps, bool silu, bool channels_last) {
  std::vector<double> want(x.size());
  const int cpg = channels / groups;
  auto index = [&](int v, int f, int ch, int p) {
    return (((size_t)v * frames + f) * channels + ch) * pixels + p;
  };
  for (int v = 0; v < videos; ++v)
    for (int g = 0; g < groups; ++g) {
      double sum = 0, sq = 0, count = 0;
      for (int f = 0; f < frames; ++f)
        for (int ch = g * cpg; ch < (g + 1) * cpg; ++ch)
          for (int p = 0; p < pixels; ++p) {
            const double xv = to_float(x[index(v, f, ch, p)]);
            sum += xv;
            sq += xv * xv;
            ++count;
          }
      const double mean = sum / count, var = sq / count - mean * mean;
      for (int f = 0; f < frames; ++f)
        for (int ch = g * cpg; ch < (g + 1) * cpg; ++ch)
          for (int p = 0; p < pixels; ++p) {
            double h = (to_float(x[index(v, f, ch, p)]) - mean) / std::sqrt(var + eps) *
                           to_float(w[ch]) +
                       to_float(b[ch]);
            if (silu) h = h / (1 + std::exp(-h));
            want[channels_last ? (((size_t)v * pixels + p) * frames + f) * channels + ch
                               : index(v, f, ch, p)] = h;
          }
    }
  return want;
}

// The scalar entries on every case, the `_v` ones (16 bytes per access) where P is a multiple
// of `vec`.
template <typename T>
bool check(const char* type, Stats<T> stats_scalar, Apply<T> apply_scalar, Stats<T> stats_v,
           Apply<T> apply_v, int vec) {
  // (videos, frames, channels, pixels, groups, splits, silu): a slice per group; slices that do
  // not divide the group; statistics pooled over frames; more slices than threads have work;
  // slices that cross frames and slices left empty by rounding to whole vectors.
  const Case cases[] = {{2, 1, 32, 50, 8, 1, true},   {1, 1, 16, 1000, 4, 7, false},
                        {2, 3, 16, 100, 4, 3, true},  {1, 2, 8, 4, 2, 5, false},
                        {2, 3, 16, 64, 4, 5, true},   {1, 1, 8, 8, 2, 7, false},
                        {1, 4, 16, 128, 4, 6, true}};
  bool ok = true;
  std::mt19937 rng(7);
  for (const Case& c : cases)
   for (const bool vector : {false, true}) {
    if (vector && c.pixels % vec) continue;
    const auto stats = vector ? stats_v : stats_scalar;
    const auto apply = vector ? apply_v : apply_scalar;
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
    const auto want = reference(x, w, b, c.videos, c.frames, c.channels, c.pixels, c.groups,
                                eps, c.silu, false);
    const std::string what = std::string("group_norm ") + type + " " + std::to_string(c.videos) +
                             "x" + std::to_string(c.frames) + "x" + std::to_string(c.channels) +
                             "x" + std::to_string(c.pixels) + " groups " +
                             std::to_string(c.groups) + " splits " + std::to_string(c.splits) +
                             (c.silu ? " silu" : "") + (vector ? " by 16 bytes" : "");
    ok &= report(what.c_str(), rel_err(y, want), std::max(tolerance<T>(), 1e-4));
  }
  return ok;
}

template <typename T>
using ApplyChannelsLast = void (*)(const T*, const float*, const T*, const T*, T*, int, int, int,
                                   int, int, int);
template <typename T>
using ApplyChannelsLastPairs = void (*)(const uint32_t*, const float*, const T*, const T*,
                                        uint32_t*, int, int, int, int, int, int);

// Statistics, finalize and the channels-last apply as nn/cuda/group_norm.rs launches them; where
// F·C and P are even the pairs apply too, which must give the same bits.
template <typename T>
bool check_channels_last(const char* type, Stats<T> stats, ApplyChannelsLast<T> apply,
                         ApplyChannelsLastPairs<T> apply_pairs) {
  // (videos, frames, channels, pixels, groups, splits, z blocks, silu): partial tiles both ways
  // with 5 channels per group (tiles span groups); 4 per group (the VAE's 128 / 32); more videos
  // than z blocks; one tile; statistics pooled over 3 frames with tiles that span frames; 6
  // channels per group over several 64-row tiles.
  const int cases[][8] = {{3, 1, 40, 70, 8, 3, 2, 1},  {1, 1, 128, 33, 32, 1, 1, 0},
                          {2, 1, 32, 32, 4, 2, 2, 1},  {2, 3, 20, 50, 4, 2, 1, 0},
                          {1, 1, 192, 100, 32, 1, 1, 1}};
  bool ok = true;
  std::mt19937 rng(11);
  for (const auto& c : cases) {
    const int videos = c[0], frames = c[1], channels = c[2], pixels = c[3], groups = c[4],
              splits = c[5];
    const bool silu = c[7];
    const size_t n = (size_t)videos * frames * channels * pixels;
    const auto x = random_values<T>(rng, n, 0.5f, 2.f);
    const auto w = random_values<T>(rng, channels);
    const auto b = random_values<T>(rng, channels);
    const int count = videos * groups;
    std::vector<float> partial((size_t)count * splits * 3, NAN), stat(2 * count, NAN);
    std::vector<T> y(n, from_float<T>(NAN));
    const float eps = 1e-6f;
    emulation::launch({unsigned(count), unsigned(splits), 1}, {THREADS, 1, 1}, [&] {
      stats(x.data(), partial.data(), frames, channels, pixels, groups, splits);
    });
    emulation::launch({unsigned((count + THREADS - 1) / THREADS), 1, 1}, {THREADS, 1, 1}, [&] {
      group_norm_finalize(partial.data(), stat.data(), count, splits, eps);
    });
    const int rows = frames * channels;
    emulation::launch({unsigned((pixels + TILE - 1) / TILE), unsigned((rows + TILE - 1) / TILE),
                       unsigned(c[6])},
                      {TILE, TILE_ROWS, 1}, [&] {
                        apply(x.data(), stat.data(), w.data(), b.data(), y.data(), videos, frames,
                              channels, pixels, groups, silu);
                      });
    const auto want = reference(x, w, b, videos, frames, channels, pixels, groups, eps, silu, true);
    const std::string what = std::string("group_norm channels last ") + type + " " +
                             std::to_string(videos) + "x" + std::to_string(frames) + "x" +
                             std::to_string(channels) + "x" + std::to_string(pixels) + " groups " +
                             std::to_string(groups) + " splits " + std::to_string(splits) +
                             (silu ? " silu" : "");
    ok &= report(what.c_str(), rel_err(y, want), std::max(tolerance<T>(), 1e-4));
    if (rows % 2 || pixels % 2) continue;
    std::vector<T> pairs(n, from_float<T>(NAN));
    emulation::launch({unsigned((pixels + PAIR_TILE - 1) / PAIR_TILE),
                       unsigned((rows + PAIR_TILE - 1) / PAIR_TILE), unsigned(c[6])},
                      {32, PAIR_ROWS, 1}, [&] {
                        apply_pairs(reinterpret_cast<const uint32_t*>(x.data()), stat.data(),
                                    w.data(), b.data(), reinterpret_cast<uint32_t*>(pairs.data()),
                                    videos, frames, channels, pixels, groups, silu);
                      });
    size_t other_bits = 0;
    for (size_t i = 0; i < n; ++i) other_bits += pairs[i].bits != y[i].bits;
    ok &= report((what + ", by pairs, bits against 32x32").c_str(), other_bits ? INFINITY : 0.0,
                 1e-30);
  }
  return ok;
}

}  // namespace

int main() {
  const bool ok = under_both_orders([] {
    bool ok = check<float>("f32", group_norm_stats_f32, group_norm_apply_f32,
                           group_norm_stats_f32_v, group_norm_apply_f32_v, 4);
    ok &= check<__half>("f16", group_norm_stats_f16, group_norm_apply_f16, group_norm_stats_f16_v,
                        group_norm_apply_f16_v, 8);
    ok &= check<__nv_bfloat16>("bf16", group_norm_stats_bf16, group_norm_apply_bf16,
                               group_norm_stats_bf16_v, group_norm_apply_bf16_v, 8);
    ok &= check_channels_last<__half>("f16", group_norm_stats_f16,
                                      group_norm_apply_channels_last_f16,
                                      group_norm_apply_channels_last_pairs_f16);
    return ok & check_channels_last<__nv_bfloat16>("bf16", group_norm_stats_bf16,
                                                   group_norm_apply_channels_last_bf16,
                                                   group_norm_apply_channels_last_pairs_bf16);
  });
  std::printf(ok ? "all cases match\n" : "some cases FAILED\n");
  return ok ? 0 : 1;
}
