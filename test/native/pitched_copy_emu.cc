// Runs the 16-byte pitched copy (native/src/cuda/pitched_copy.cuh) through the host emulator against memcpy row by
// row: narrow rows (the q|k|v split's 128 bytes), wide ones, one row, pitches wider than the rows on either side;
// the destination's bytes between rows must stay untouched. Build and run: scripts/flash-emu.sh.
#include "emu_kernel.h"

#include "../../native/src/cuda/pitched_copy.cuh"

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

int main() {
  struct Case { size_t width, spitch, dpitch, height; };
  const Case cases[] = {{128, 384, 128, 300}, {128, 128, 384, 301}, {4096, 4096, 4096, 3}, {16, 48, 32, 97}, {2048, 2048, 6144, 1}};
  int failures = 0;
  std::mt19937 rng(1);
  for (const Case& c : cases) {
    std::vector<uint8_t> src(c.spitch * c.height), dst(c.dpitch * c.height), want;
    for (auto& b : src) b = uint8_t(rng());
    for (auto& b : dst) b = uint8_t(rng());
    want = dst;
    for (size_t r = 0; r < c.height; r++) std::memcpy(want.data() + r * c.dpitch, src.data() + r * c.spitch, c.width);
    // std::vector<uint8_t> storage is at least 16-byte aligned from the allocator; the fast path requires it.
    if (!owlet::cuda::pitched_copy_fits(dst.data(), c.dpitch, src.data(), c.spitch, c.width)) {
      std::printf("FAIL test setup: buffers not 16-byte aligned\n");
      return 1;
    }
    const int64_t w16 = int64_t(c.width / 16);
    ::emu::launch(::emu::Dim{2, 1, 1}, 64, 0, [&] {
      owlet::cuda::pitched_copy_kernel(reinterpret_cast<uint4*>(dst.data()), int64_t(c.dpitch / 16),
                                       reinterpret_cast<const uint4*>(src.data()), int64_t(c.spitch / 16), w16, int64_t(c.height));
    });
    size_t wrong = 0;
    for (size_t i = 0; i < dst.size(); i++) wrong += dst[i] != want[i];
    std::printf("%s pitched copy width %zu spitch %zu dpitch %zu height %zu: %zu bytes differ\n", wrong ? "FAIL" : "PASS",
                c.width, c.spitch, c.dpitch, c.height, wrong);
    failures += wrong != 0;
  }
  const bool refuses = !owlet::cuda::pitched_copy_fits(reinterpret_cast<void*>(16), 128, reinterpret_cast<void*>(32), 120, 64);
  std::printf("%s a pitch that is not a multiple of 16 bytes is left to cudaMemcpy2DAsync\n", refuses ? "PASS" : "FAIL");
  return failures || !refuses ? 1 : 0;
}
