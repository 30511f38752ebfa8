// The order in which a tiled attention kernel's blocks take their (batch, head, tile): the GPU starts blocks roughly
// in launch order (x fastest), and under a causal mask the blocks of one head do unequal work (the forward's last
// query tile sees every key tile, its first sees one; the backward's first key tile is seen by every query tile). In
// launch order each head's longest block starts only when the heads before it have been started, so the launch ends
// with a few long blocks running on a mostly idle GPU. Taking the longest tiles of many heads first and leaving the
// short ones for the end ("longest processing time first") fills that tail: a simulation of greedy dispatch onto 132
// SMs (one block each, a tile's work per visible key or query tile plus half a tile per block) gives, for the LLaMA
// shapes, B4 T2048: 149.5 → 141.0 tile-times (the lower bound is 139.6), B2 T2048: 79.5 → 72.0, B16 T512: 49.5 →
// 47.5 (bench/block_order_sim.py).
//
// Heads are taken in sections (FlashAttention-3's "LPT" tile scheduler does the same): inside a section, rank 0 (the
// longest tile) of every head, then rank 1, …, so the keys and values (forward) or queries and output gradients
// (backward) of one section's heads are what the running blocks share in L2. The dispatch picks the number of
// sections so that a section's heads fill at most half of the L2 cache (attention.cu block_sections); the sections'
// widths differ by at most one head (the first ones wider): a narrow last section would start its long tiles late
// (B4 T2048 in sections of 25 heads, the last of 3: 151.0 in the simulation, worse than launch order).
// sections ≤ 0: launch order, rank = blockIdx.x. The mma.sync backward always keeps launch order (attention_flash.cuh
// Params::sections).
//
// Host and device: the mapping is a bijection from the grid onto (b, h, rank), tested on the host for many grids
// (test/native/block_order_test.cc) and used by the emulated kernels (test/native/flash_emu.cc).
#pragma once

#if !defined(__CUDACC__) && !defined(OWLET_CUDA_EMULATION)  // a plain host compile (block_order_test.cc)
#define __host__
#define __device__
#define __forceinline__ inline
#endif

namespace owlet::cuda {

struct BlockTile {
  int b, h, rank;  // rank 0: the tile of head (b, h) that starts first
};

// Block (x, y, z) of an nx × ny × nz grid (nx tiles per head, ny heads, nz batches), heads in `sections` sections.
__host__ __device__ __forceinline__ BlockTile block_tile(int x, int y, int z, int nx, int ny, int nz, int sections) {
  const int groups = ny * nz, launch = x + nx * (y + ny * z);
  if (sections <= 0) return {z, y, x};
  if (sections > groups) sections = groups;
  const int narrow = groups / sections, wide_count = groups - narrow * sections;  // wide_count sections of narrow + 1
  const int wide_blocks = wide_count * (narrow + 1) * nx;
  int first, width, r;  // the section's first head, its width, and this block's place in it
  if (launch < wide_blocks) {
    const int s = launch / ((narrow + 1) * nx);
    first = s * (narrow + 1);
    width = narrow + 1;
    r = launch - s * (narrow + 1) * nx;
  } else {
    const int s = (launch - wide_blocks) / (narrow * nx);
    first = wide_count * (narrow + 1) + s * narrow;
    width = narrow;
    r = launch - wide_blocks - s * narrow * nx;
  }
  const int rank = r / width, g = first + (r - rank * width);
  return {g / ny, g - (g / ny) * ny, rank};
}

// Work item w of a persistent kernel's nx · ny · nz: the (b, h, rank) of the block (x, y, z) that a launch grid would
// have run it as, w = x + nx·(y + ny·z).
__host__ __device__ __forceinline__ BlockTile item_tile(int w, int nx, int ny, int nz, int sections) {
  const int yz = w / nx;
  return block_tile(w - yz * nx, yz % ny, yz / ny, nx, ny, nz, sections);
}

#if defined(__CUDACC__) || defined(OWLET_CUDA_EMULATION)
// This block's (b, h, rank) for the kernel's launch grid; with ORDERED false always launch order, without the
// mapping's registers: b, h and the tile are then re-read from blockIdx where used instead of held. The kernels order
// their blocks at D = 128 only (ORDERED = D == 128): causal attention in the model is LLaMA's (D = 128), and at
// D = 64 the mapping cost the one-warpgroup forward 6 registers, 3 → 2 blocks per SM (ptxas, CUDA 13).
template <bool ORDERED = true>
__device__ __forceinline__ BlockTile block_tile(int sections) {
  if constexpr (!ORDERED) return {int(blockIdx.z), int(blockIdx.y), int(blockIdx.x)};
  return block_tile(int(blockIdx.x), int(blockIdx.y), int(blockIdx.z), int(gridDim.x), int(gridDim.y),
                    int(gridDim.z), sections);
}

// A persistent kernel's next work item from the launch's counter (one thread of the block takes it): items
// 0 … n_items − 1, then one "none left" (≥ n_items) per block. The take that hands out the last of those resets the
// counter to zero for the next launch on the stream (attention.cu item_counter).
__device__ __forceinline__ int take_item(int* taken, int n_items) {
  const int w = atomicAdd(taken, 1);
  if (w == n_items + int(gridDim.x) - 1) atomicExch(taken, 0);
  return w;
}
#endif

}  // namespace owlet::cuda
