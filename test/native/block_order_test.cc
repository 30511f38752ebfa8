// The attention kernels' block order (native/src/cuda/block_order.h) on the host: for grids of 1–9 tiles per head,
// 1–7 heads and 1–4 batches and every number of sections (0: launch order; more sections than heads: one head each),
// the blocks in launch order must take exactly the order the header describes — sections of heads in order, widths
// differing by at most one with the wider first; inside a section rank 0 of each of its heads in order, then rank 1,
// and so on — and so every (b, h, rank) exactly once.
#include <cstdio>
#include <vector>

#include "../../native/src/cuda/block_order.h"

using owlet::cuda::block_tile;
using owlet::cuda::BlockTile;

namespace {

int failures = 0;

// The (b, h, rank) sequence the header specifies, built the plain way.
std::vector<BlockTile> expected(int nx, int ny, int nz, int sections) {
  std::vector<BlockTile> out;
  const int groups = ny * nz;
  if (sections <= 0) {
    for (int z = 0; z < nz; z++)
      for (int y = 0; y < ny; y++)
        for (int x = 0; x < nx; x++) out.push_back({z, y, x});
    return out;
  }
  const int n = sections < groups ? sections : groups;
  int first = 0;
  for (int s = 0; s < n; s++) {
    const int width = groups / n + (s < groups % n ? 1 : 0);
    for (int rank = 0; rank < nx; rank++)
      for (int g = first; g < first + width; g++) out.push_back({g / ny, g % ny, rank});
    first += width;
  }
  return out;
}

void check_grid(int nx, int ny, int nz, int sections) {
  const std::vector<BlockTile> want = expected(nx, ny, nz, sections);
  std::vector<int> seen(want.size(), 0);
  for (int launch = 0; launch < int(want.size()); launch++) {
    const int x = launch % nx, y = (launch / nx) % ny, z = launch / (nx * ny);
    const BlockTile t = block_tile(x, y, z, nx, ny, nz, sections), w = want[size_t(launch)];
    if (t.b >= 0 && t.b < nz && t.h >= 0 && t.h < ny && t.rank >= 0 && t.rank < nx)
      seen[size_t((t.b * ny + t.h) * nx + t.rank)]++;
    if ((t.b != w.b || t.h != w.h || t.rank != w.rank) && ++failures <= 10)
      std::printf("FAIL grid %d x %d x %d, %d sections: block %d in launch order took (b %d, h %d, rank %d), not "
                  "(b %d, h %d, rank %d)\n", nx, ny, nz, sections, launch, t.b, t.h, t.rank, w.b, w.h, w.rank);
  }
  for (size_t i = 0; i < seen.size(); i++)
    if (seen[i] != 1 && ++failures <= 10)
      std::printf("FAIL grid %d x %d x %d, %d sections: tile %zu taken %d times\n", nx, ny, nz, sections, i, seen[i]);
}

}  // namespace

int main() {
  int grids = 0;
  for (int nx = 1; nx <= 9; nx++)
    for (int ny = 1; ny <= 7; ny++)
      for (int nz = 1; nz <= 4; nz++)
        for (int sections = 0; sections <= ny * nz + 1; sections++, grids++) check_grid(nx, ny, nz, sections);
  // The LLaMA 7B shapes: 16 query tiles, 32 heads, batch 4 in 6 sections (the dispatch's for a 50 MiB L2), batch 2.
  check_grid(16, 32, 4, 6);
  check_grid(16, 32, 2, 3);
  grids += 2;
  if (failures) {
    std::printf("block order: %d failures\n", failures);
    return 1;
  }
  std::printf("PASS block order: %d grids, every block where the order puts it, every tile once\n", grids);
  return 0;
}
