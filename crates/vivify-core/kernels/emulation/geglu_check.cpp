// kernels/geglu.cu under the CPU emulation: out[r, j] = h[r, j] · gelu(h[r, H + j]) with even
// (two elements per access) and odd half widths, multiples of 8 (geglu_v8, 16 bytes per
// access), more rows than blocks (the grid-stride loops),
// f16/bf16, against the exact (erf) GELU in double precision.
#include "../geglu.cu"

#include <string>

#include "check_util.h"

namespace {

template <typename T>
using Entry = void (*)(const T*, T*, long long, int);

// The row kernel on every shape, the 8-wide one where H is a multiple of 8 (with blocks as the
// host sizes them, and fewer: the grid-stride loop).
template <typename T>
bool check(const char* type, Entry<T> row_entry, Entry<T> v8_entry) {
  // (rows, half width, blocks)
  const int shapes[][3] = {{5, 64, 5}, {7, 33, 3}, {2, 640, 2},
                           {9, 40, 1}, {4, 2, 2},  {70, 64, 1}};
  bool ok = true;
  std::mt19937 rng(13);
  for (const auto& shape : shapes)
   for (const bool v8 : {false, true}) {
    const int rows = shape[0], half = shape[1];
    if (v8 && half % 8) continue;
    const auto entry = v8 ? v8_entry : row_entry;
    const auto h = random_values<T>(rng, (size_t)rows * 2 * half, 0.f, 2.f);
    std::vector<T> out((size_t)rows * half, from_float<T>(NAN));
    emulation::launch({unsigned(shape[2]), 1, 1}, {256, 1, 1},
                      [&] { entry(h.data(), out.data(), rows, half); });
    std::vector<double> want(out.size());
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < half; ++j) {
        const double value = to_float(h[(size_t)r * 2 * half + j]);
        const double gate = to_float(h[(size_t)r * 2 * half + half + j]);
        want[(size_t)r * half + j] = value * 0.5 * gate * (1 + std::erf(gate / std::sqrt(2.0)));
      }
    const std::string what = std::string(v8 ? "geglu_v8 " : "geglu ") + type + " " +
                             std::to_string(rows) + "x" + std::to_string(half) + " on " +
                             std::to_string(shape[2]) + " blocks";
    // The GELU is rounded to T before the product, as PyTorch does: two roundings.
    ok &= report(what.c_str(), rel_err(out, want), 2 * tolerance<T>());
  }
  return ok;
}

}  // namespace

int main() {
  const bool ok = under_both_orders(
      [] { return check<__half>("f16", geglu_f16, geglu_v8_f16) &
                  check<__nv_bfloat16>("bf16", geglu_bf16, geglu_v8_bf16); });
  std::printf(ok ? "all cases match\n" : "some cases FAILED\n");
  return ok ? 0 : 1;
}
