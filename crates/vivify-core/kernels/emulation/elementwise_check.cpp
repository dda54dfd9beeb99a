// kernels/elementwise.cu under the CPU emulation, each kernel with the block shape
// nn/cuda/elementwise.rs gives it and grids smaller than the work (their grid-stride loops):
// the 32x32-tile transpose (partial tiles, more matrices than z blocks), the 64x64 one by
// 32-bit pairs (the same, even sides), the per-channel add
// (8-wide and scalar, one vector or one per sample, with and without a residual), the same sum
// from a channels-last input (partial tiles, more samples than z blocks) and the same-shape add,
// f16/bf16, against sums in double precision.
#include "../elementwise.cu"

#include <algorithm>
#include <array>
#include <string>

#include "check_util.h"

namespace {

// One transpose kernel on (n, A, B, y blocks, z blocks) shapes, each element checked in place;
// `run(in, out, n, a, b, y, z)` launches it.
template <typename Run>
bool check_transposes(const char* name, const std::vector<std::array<int, 5>>& shapes,
                      unsigned seed, Run run) {
  bool ok = true;
  std::mt19937 rng(seed);
  for (const auto& s : shapes) {
    const int n = s[0], a = s[1], b = s[2];
    std::vector<uint16_t> in((size_t)n * a * b), out(in.size(), 0xffff);
    for (auto& v : in) v = uint16_t(rng());
    run(in.data(), out.data(), n, a, b, unsigned(s[3]), unsigned(s[4]));
    size_t wrong = 0;
    for (int z = 0; z < n; ++z)
      for (int i = 0; i < a; ++i)
        for (int j = 0; j < b; ++j)
          wrong += out[((size_t)z * b + j) * a + i] != in[((size_t)z * a + i) * b + j];
    const std::string what = std::string(name) + " " + std::to_string(n) + "x" +
                             std::to_string(a) + "x" + std::to_string(b) + " on " +
                             std::to_string(s[3]) + " y and " + std::to_string(s[4]) +
                             " z blocks";
    ok &= report(what.c_str(), wrong ? INFINITY : 0.0, 1e-30);
  }
  return ok;
}

bool check_transpose() {
  // Fewer y blocks than A tiles, as the host launches past 65535 tiles; more matrices than z
  // blocks.
  const std::vector<std::array<int, 5>> shapes = {
      {3, 40, 70, 2, 2}, {1, 32, 32, 1, 1}, {5, 7, 100, 1, 3}, {2, 100, 40, 2, 1}};
  return check_transposes("transpose", shapes, 17,
                          [](const uint16_t* in, uint16_t* out, int n, int a, int b, unsigned y,
                             unsigned z) {
                            emulation::launch({unsigned((b + 31) / 32), y, z}, {32, 8, 1},
                                              [&] { transpose_u16(in, out, n, a, b); });
                          });
}

// transpose_pairs: even A and B, whole and partial 64-element tiles on both sides, fewer y and z
// blocks than tiles and matrices; the 16-bit halves must land in order.
bool check_transpose_pairs() {
  const std::vector<std::array<int, 5>> shapes = {{3, 40, 70, 1, 2}, {1, 64, 64, 1, 1},
                                                  {2, 130, 66, 2, 1}, {5, 2, 128, 1, 3},
                                                  {2, 200, 2, 1, 2},  {1, 192, 320, 2, 1}};
  return check_transposes(
      "transpose pairs", shapes, 19,
      [](const uint16_t* in, uint16_t* out, int n, int a, int b, unsigned y, unsigned z) {
        const auto* in32 = reinterpret_cast<const uint32_t*>(in);
        auto* out32 = reinterpret_cast<uint32_t*>(out);
        emulation::launch({unsigned((b + 63) / 64), y, z}, {32, 8, 1},
                          [&] { transpose_pairs_u16(in32, out32, n, a, b); });
      });
}

template <typename T>
using ChannelAdd = void (*)(const T*, const T*, const T*, T*, long long, int, int, int);
template <typename T>
using ChannelAddPairs = void (*)(const uint32_t*, const T*, const uint32_t*, uint32_t*,
                                 long long, int, int, int);
template <typename T>
using Add = void (*)(const T*, const T*, T*, long long);

// Both channels-last kernels; where C and S are even the pairs kernel must also give the
// 32x32 one's bits.
template <typename T>
bool check_from_channels_last(const char* type, ChannelAdd<T> kernel,
                              ChannelAddPairs<T> pairs_kernel) {
  bool ok = true;
  std::mt19937 rng(23);
  // (N, C, S, one vector per sample, residual, z blocks)
  const int cases[][6] = {{3, 40, 70, 1, 1, 2}, {1, 32, 33, 0, 0, 1}, {2, 5, 64, 1, 0, 1},
                          {2, 66, 130, 0, 1, 1}, {1, 64, 64, 1, 0, 1}, {4, 2, 200, 1, 1, 3}};
  for (const auto& c : cases) {
    const int n = c[0], ch = c[1], s = c[2], v_rows = c[3] ? n : 1;
    const bool residual = c[4];
    const size_t len = (size_t)n * ch * s;
    const auto x = random_values<T>(rng, len);  // (N, S, C)
    const auto r = random_values<T>(rng, len);  // (N, C, S)
    const auto v = random_values<T>(rng, (size_t)v_rows * ch);
    std::vector<T> out(len, from_float<T>(NAN));
    emulation::launch({unsigned((s + 31) / 32), unsigned((ch + 31) / 32), unsigned(c[5])},
                      {32, 8, 1}, [&] {
                        kernel(x.data(), v.data(), residual ? r.data() : nullptr, out.data(),
                               (long long)n * ch, ch, s, v_rows);
                      });
    std::vector<double> want(len);
    for (int z = 0; z < n; ++z)
      for (int k = 0; k < ch; ++k)
        for (int i = 0; i < s; ++i) {
          const size_t o = ((size_t)z * ch + k) * s + i;
          want[o] = double(to_float(x[((size_t)z * s + i) * ch + k])) +
                    to_float(v[(v_rows == 1 ? 0 : z) * ch + k]) +
                    (residual ? to_float(r[o]) : 0.0);
        }
    const std::string what = std::string("channel_add_from_channels_last ") + type + " " +
                             std::to_string(n) + "x" + std::to_string(ch) + "x" +
                             std::to_string(s) + (c[3] ? " per sample" : "") +
                             (residual ? " + residual" : "") + " on " + std::to_string(c[5]) +
                             " z blocks";
    ok &= report(what.c_str(), rel_err(out, want), tolerance<T>());
    if (ch % 2 || s % 2) continue;
    std::vector<T> pairs(len, from_float<T>(NAN));
    const auto* x32 = reinterpret_cast<const uint32_t*>(x.data());
    const auto* r32 = reinterpret_cast<const uint32_t*>(r.data());
    emulation::launch({unsigned((s + 63) / 64), unsigned((ch + 63) / 64), unsigned(c[5])},
                      {32, 8, 1}, [&] {
                        pairs_kernel(x32, v.data(), residual ? r32 : nullptr,
                                     reinterpret_cast<uint32_t*>(pairs.data()),
                                     (long long)n * ch, ch, s, v_rows);
                      });
    size_t other_bits = 0;
    for (size_t i = 0; i < len; ++i) other_bits += pairs[i].bits != out[i].bits;
    ok &= report((what + ", by pairs").c_str(), rel_err(pairs, want), tolerance<T>());
    ok &= report((what + ", by pairs, bits against 32x32").c_str(), other_bits ? INFINITY : 0.0,
                 1e-30);
  }
  return ok;
}

template <typename T>
bool check_adds(const char* type, ChannelAdd<T> channel_add_v1, ChannelAdd<T> channel_add_v8,
                Add<T> add_v1, Add<T> add_v8) {
  bool ok = true;
  std::mt19937 rng(19);
  // (N, C, S, one vector per sample, residual)
  const int cases[][5] = {{2, 3, 64, 1, 1}, {2, 5, 40, 0, 0}, {1, 4, 13, 1, 1}, {3, 2, 7, 0, 1}};
  for (const auto& c : cases) {
    const int n = c[0], ch = c[1], s = c[2], v_rows = c[3] ? n : 1;
    const bool residual = c[4];
    const size_t len = (size_t)n * ch * s;
    const auto x = random_values<T>(rng, len);
    const auto r = random_values<T>(rng, len);
    const auto v = random_values<T>(rng, (size_t)v_rows * ch);
    std::vector<T> out(len, from_float<T>(NAN));
    const int vec = s % 8 == 0 ? 8 : 1;
    const unsigned threads = ((std::clamp(s / vec, 32, 256) + 31) / 32) * 32;
    emulation::launch({2, 1, 1}, {threads, 1, 1}, [&] {
      (vec == 8 ? channel_add_v8 : channel_add_v1)(x.data(), v.data(), residual ? r.data() : nullptr,
                                                   out.data(), (long long)n * ch, ch, s, v_rows);
    });
    std::vector<double> want(len);
    for (size_t i = 0; i < len; ++i) {
      const size_t row = i / s, sample = row / ch, channel = row % ch;
      want[i] = double(to_float(x[i])) + to_float(v[(v_rows == 1 ? 0 : sample) * ch + channel]) +
                (residual ? to_float(r[i]) : 0.0);
    }
    const std::string what = std::string("channel_add ") + type + " v" + std::to_string(vec) +
                             " " + std::to_string(n) + "x" + std::to_string(ch) + "x" +
                             std::to_string(s) + (c[3] ? " per sample" : "") +
                             (residual ? " + residual" : "");
    ok &= report(what.c_str(), rel_err(out, want), tolerance<T>());
  }
  for (const long long len : {4096LL, 1001LL}) {
    const auto a = random_values<T>(rng, len);
    const auto b = random_values<T>(rng, len);
    std::vector<T> out(len, from_float<T>(NAN));
    const int vec = len % 8 == 0 ? 8 : 1;
    emulation::launch({1, 1, 1}, {256, 1, 1},
                      [&] { (vec == 8 ? add_v8 : add_v1)(a.data(), b.data(), out.data(), len); });
    std::vector<double> want(len);
    for (long long i = 0; i < len; ++i) want[i] = double(to_float(a[i])) + to_float(b[i]);
    const std::string what =
        std::string("add ") + type + " v" + std::to_string(vec) + " " + std::to_string(len);
    ok &= report(what.c_str(), rel_err(out, want), tolerance<T>());
  }
  return ok;
}

}  // namespace

int main() {
  const bool ok = under_both_orders([] {
    bool ok = check_transpose();
    ok &= check_transpose_pairs();
    ok &= check_adds<__half>("f16", channel_add_f16_v1, channel_add_f16_v8, add_f16_v1, add_f16_v8);
    ok &= check_adds<__nv_bfloat16>("bf16", channel_add_bf16_v1, channel_add_bf16_v8,
                                    add_bf16_v1, add_bf16_v8);
    ok &= check_from_channels_last<__half>("f16", channel_add_from_channels_last_f16,
                                           channel_add_from_channels_last_pairs_f16);
    return ok & check_from_channels_last<__nv_bfloat16>("bf16",
                                                        channel_add_from_channels_last_bf16,
                                                        channel_add_from_channels_last_pairs_bf16);
  });
  std::printf(ok ? "all cases match\n" : "some cases FAILED\n");
  return ok ? 0 : 1;
}
