// Shared by the kernels' CPU checks (kernels/emulation/*_check.cpp): inputs, rounding and the
// comparison against a reference computed in double precision.
#pragma once

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

template <typename T>
T from_float(float f);
template <>
inline float from_float<float>(float f) {
  return f;
}
template <>
inline __half from_float<__half>(float f) {
  return __float2half_rn(f);
}
template <>
inline __nv_bfloat16 from_float<__nv_bfloat16>(float f) {
  return __float2bfloat16_rn(f);
}
inline float to_float(float f) { return f; }

// n values from N(mean, std), rounded to T.
template <typename T>
std::vector<T> random_values(std::mt19937& rng, size_t n, float mean = 0.f, float std = 1.f) {
  std::normal_distribution<float> normal(mean, std);
  std::vector<T> v(n);
  for (auto& x : v) x = from_float<T>(normal(rng));
  return v;
}

// max |got - want| / max(max |want|, 1e-30); an unwritten (NaN) or infinite output counts as
// infinitely far.
template <typename T>
double rel_err(const std::vector<T>& got, const std::vector<double>& want) {
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = to_float(got[i]);
    worst = std::max(worst, std::isfinite(g) ? std::abs(g - want[i]) : INFINITY);
    scale = std::max(scale, std::abs(want[i]));
  }
  return worst / scale;
}

// Runs `check()` with the block's threads ordered lowest first, then highest first (see
// emulation::Schedule); returns whether both passed.
template <typename F>
bool under_both_orders(F check) {
  bool ok = true;
  for (auto order : {emulation::Schedule::LowestFirst, emulation::Schedule::HighestFirst}) {
    emulation::schedule = order;
    std::printf("-- threads %s first\n",
                order == emulation::Schedule::LowestFirst ? "lowest" : "highest");
    ok &= check();
  }
  return ok;
}

// Prints the case and returns whether `err` is under `limit`.
inline bool report(const char* what, double err, double limit) {
  const bool pass = err < limit;
  std::printf("%s: rel err %.2e%s\n", what, err, pass ? "" : "  <-- FAILED");
  return pass;
}

// The tolerance of an output rounded to T: a few units in its last place.
template <typename T>
double tolerance() {
  if constexpr (sizeof(T) == 4) return 1e-5;
  else if constexpr (std::is_same_v<T, __half>) return 2e-3;
  else return 1.6e-2;
}
