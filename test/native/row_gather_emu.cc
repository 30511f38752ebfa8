// The 16-byte row gather and scatter-copy (native/src/cuda/row_gather.cuh) through the host emulator, against plain
// loops: rows of 32 and 130 chunks (bf16 256 wide, f32 520 wide), more rows than blocks (the grid-stride loop),
// repeated indices for the gather, and an index out of range in each (the gathered row zeroed, the scattered row
// skipped, the error code raised). Build and run: scripts/flash-emu.sh.
#include "emu_kernel.h"

#include "../../native/src/cuda/row_gather.cuh"

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace r16 = owlet::cuda::rows16;

namespace {

int failures = 0;

void report(bool ok, const char* what, int64_t c16) {
  std::printf("%s %s, rows of %lld chunks\n", ok ? "PASS" : "FAIL", what, (long long)c16);
  failures += !ok;
}

void check(int64_t c16) {
  const int64_t rows = 5, n = 7, words = c16 * 4;  // 4 uint32 per chunk
  std::mt19937 rng(static_cast<unsigned>(c16));
  std::vector<uint32_t> src(size_t(rows * words)), out(size_t(n * words), 0xdeadbeefu);
  for (auto& w : src) w = rng();
  const std::vector<int32_t> idx = {3, 0, 4, 3, 7, 1, 2};  // 7: out of range
  int err = 0;
  ::emu::launch(::emu::Dim{3, 1, 1}, r16::kThreads, 0, [&] {
    r16::gather_kernel(reinterpret_cast<const uint4*>(src.data()), idx.data(), reinterpret_cast<uint4*>(out.data()), n,
                       rows, c16, &err, 11);
  });
  bool ok = err == 11;
  for (int64_t i = 0; i < n; i++)
    for (int64_t w = 0; w < words; w++)
      ok &= out[size_t(i * words + w)] == (idx[size_t(i)] < rows ? src[size_t(idx[size_t(i)] * words + w)] : 0u);
  report(ok, "gather (repeated indices, one out of range: zeros and the error)", c16);

  std::vector<uint32_t> dst(size_t(rows * words), 7u), from(size_t(4 * words));
  for (auto& w : from) w = rng();
  const std::vector<int32_t> sidx = {2, -1, 0, 4};  // -1: out of range
  err = 0;
  ::emu::launch(::emu::Dim{3, 1, 1}, r16::kThreads, 0, [&] {
    r16::scatter_kernel(reinterpret_cast<uint4*>(dst.data()), sidx.data(), reinterpret_cast<const uint4*>(from.data()),
                        4, rows, c16, &err, 12);
  });
  ok = err == 12;
  std::vector<uint32_t> want(size_t(rows * words), 7u);
  for (int64_t i = 0; i < 4; i++)
    if (sidx[size_t(i)] >= 0)
      std::memcpy(&want[size_t(sidx[size_t(i)] * words)], &from[size_t(i * words)], size_t(words) * 4);
  ok &= dst == want;
  report(ok, "scatter (one index out of range: skipped, the error)", c16);
}

}  // namespace

int main() {
  check(32);
  check(130);
  if (failures) std::printf("%d failed\n", failures);
  return failures ? 1 : 0;
}
