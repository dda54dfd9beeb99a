// kernels/layer_norm.cu under the CPU emulation: one warp per row, eight rows per block as
// nn/cuda/layer_norm.rs launches it (the last block partly empty), rows wider and narrower than
// a warp, 16 bytes per access (layer_norm_v) where the width allows, f32/f16/bf16, against
// LayerNorm computed in double precision.
#include "../layer_norm.cu"

#include <string>

#include "check_util.h"

namespace {

template <typename T>
using Entry = void (*)(const T*, const T*, const T*, T*, long long, int, float);

// The plain kernel on every shape; layer_norm_v where the row is whole 16-byte chunks, up to
// 32 · MAX_CHUNKS of them (the UNet's widths, fewer chunks than lanes, the most a lane keeps).
template <typename T>
bool check(const char* type, Entry<T> plain, Entry<T> vector) {
  const int shapes[][2] = {{37, 320}, {8, 77}, {3, 20}, {9, 1280}, {5, 64}, {3, 2048}};
  const int vec = 16 / (int)sizeof(T);
  bool ok = true;
  std::mt19937 rng(11);
  for (const auto& shape : shapes)
   for (const bool v : {false, true}) {
    const int rows = shape[0], dim = shape[1];
    if (v && (dim % vec || dim / vec > 32 * MAX_CHUNKS)) continue;
    const auto entry = v ? vector : plain;
    const auto x = random_values<T>(rng, (size_t)rows * dim, -0.3f, 1.5f);
    const auto w = random_values<T>(rng, dim);
    const auto b = random_values<T>(rng, dim);
    std::vector<T> y(x.size(), from_float<T>(NAN));
    const float eps = 1e-5f;
    emulation::launch({unsigned((rows + WARPS - 1) / WARPS), 1, 1}, {WARPS * 32, 1, 1},
                      [&] { entry(x.data(), w.data(), b.data(), y.data(), rows, dim, eps); });
    std::vector<double> want(x.size());
    for (int r = 0; r < rows; ++r) {
      double sum = 0, sq = 0;
      for (int i = 0; i < dim; ++i) sum += to_float(x[(size_t)r * dim + i]);
      const double mean = sum / dim;
      for (int i = 0; i < dim; ++i) sq += std::pow(to_float(x[(size_t)r * dim + i]) - mean, 2);
      const double rstd = 1 / std::sqrt(sq / dim + eps);
      for (int i = 0; i < dim; ++i) {
        const size_t k = (size_t)r * dim + i;
        want[k] = (to_float(x[k]) - mean) * rstd * to_float(w[i]) + to_float(b[i]);
      }
    }
    const std::string what = std::string(v ? "layer_norm_v " : "layer_norm ") + type + " " +
                             std::to_string(rows) + "x" + std::to_string(dim);
    ok &= report(what.c_str(), rel_err(y, want), std::max(tolerance<T>(), 1e-4));
  }
  return ok;
}

}  // namespace

int main() {
  const bool ok = under_both_orders([] {
    bool ok = check<float>("f32", layer_norm_f32, layer_norm_v_f32);
    ok &= check<__half>("f16", layer_norm_f16, layer_norm_v_f16);
    return ok & check<__nv_bfloat16>("bf16", layer_norm_bf16, layer_norm_v_bf16);
  });
  std::printf(ok ? "all cases match\n" : "some cases FAILED\n");
  return ok ? 0 : 1;
}
