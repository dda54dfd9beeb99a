// Shared by elementwise.cu and group_norm.cu: 16-bit transposes two elements per access (4-byte
// loads and stores, a warp's row 128 bytes). One element per access moved 1.3 TB/s on the H200,
// a third of its bandwidth. Blocks of (32, PAIR_ROWS) threads, 64x64-element tiles.
#pragma once

constexpr int PAIR_TILE = 64;
constexpr int PAIR_ROWS = 8;
using PairTile = uint32_t[PAIR_TILE][PAIR_TILE / 2];

// The pair of row `row` (of the tile) as loaded.
struct SamePair {
  __device__ __forceinline__ uint32_t operator()(int, uint32_t pair) const { return pair; }
};

// Rows a0.. and columns b0.. of the (A, B) matrix `in` (even A and B; B / 2 pairs a row) go
// into `tile` as the transposed matrix's pairs, each loaded pair first passed through
// `transform(row - a0, pair)` (both its elements are of that row): each thread loads one column
// pair of two adjacent rows and pairs them per column in registers. tile[b - b0][k ^ ((b - b0)
// / 2)] holds (in[a0 + 2k][b], in[a0 + 2k + 1][b]): the XOR keeps both these writes and the
// caller's row reads, tile[j][threadIdx.x ^ (j >> 1)], off each other's banks. The caller syncs
// around it.
template <typename Transform = SamePair>
__device__ __forceinline__ void load_pair_tile(PairTile& tile, const uint32_t* __restrict__ in,
                                               int a0, int b0, int A, int B,
                                               Transform transform = {}) {
  const int tx = threadIdx.x, half_b = B / 2, bp = b0 / 2 + tx;
  for (int k = threadIdx.y; k < PAIR_TILE / 2; k += PAIR_ROWS) {
    const int a = a0 + 2 * k;
    if (a < A && bp < half_b) {
      const uint32_t r0 = transform(2 * k, in[(long long)a * half_b + bp]);
      const uint32_t r1 = transform(2 * k + 1, in[(long long)(a + 1) * half_b + bp]);
      tile[2 * tx][k ^ tx] = (r0 & 0xffffu) | (r1 << 16);
      tile[2 * tx + 1][k ^ tx] = (r0 >> 16) | (r1 & 0xffff0000u);
    }
  }
}
