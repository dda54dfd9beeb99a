// kernels/geglu.cu under the CPU emulation: out[r, j] = h[r, j] · gelu(h[r, H + j]) with even
// (two elements per access) and odd half widths, more rows than blocks (the grid-stride loop),
// f16/bf16, against the exact (erf) GELU in double precision.
#include "../geglu.cu"

#include <string>

#include "check_util.h"

namespace {

template <typename T>
using Entry = void (*)(const T*, T*, long long, int);

template <typename T>
bool check(const char* type, Entry<T> entry) {
  const int shapes[][3] = {{5, 64, 5}, {7, 33, 3}, {2, 640, 2}};  // (rows, half width, blocks)
  bool ok = true;
  std::mt19937 rng(13);
  for (const auto& shape : shapes) {
    const int rows = shape[0], half = shape[1];
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
    const std::string what = std::string("geglu ") + type + " " + std::to_string(rows) + "x" +
                             std::to_string(half) + " on " + std::to_string(shape[2]) + " blocks";
    // The GELU is rounded to T before the product, as PyTorch does: two roundings.
    ok &= report(what.c_str(), rel_err(out, want), 2 * tolerance<T>());
  }
  return ok;
}

}  // namespace

int main() {
  const bool ok = under_both_orders(
      [] { return check<__half>("f16", geglu_f16) & check<__nv_bfloat16>("bf16", geglu_bf16); });
  std::printf(ok ? "all cases match\n" : "some cases FAILED\n");
  return ok ? 0 : 1;
}
