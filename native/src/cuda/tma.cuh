// The Hopper tensor memory accelerator (TMA) for the attention kernels' tiles: one thread's instruction copies a box
// of a global tensor into shared memory, swizzled, and reports the bytes to an mbarrier (PTX ISA:
// "cp.async.bulk.tensor", "mbarrier.expect_tx"; CUDA driver API: cuTensorMapEncodeTiled).
//
// Why: the warp-specialised forward's producer warpgroup copied each 128-key tile of K and V with 16-byte cp.async,
// 16 + 16 per producer thread per tile at D = 128 plus their address arithmetic, issued from the same schedulers as the
// consumers' softmax — the part of the loop the ping-pong exists to hide. A box copy is one instruction per 64
// columns, and the producer's other threads are idle.
//
// The maps here describe a [B, T, H, D]-shaped bf16 sequence whose heads may sit `hs` elements apart (D for
// contiguous q, k, v; 3·D for views into a packed [B, T, H, 3, D] tensor), as four dimensions innermost first:
// (column, head, token, batch). A box is 64 columns (128 bytes: the 128-byte swizzle's span) of one head of `rows`
// tokens; a tile of D columns is D / 64 boxes, each landing at column block c of the layout rows::Swizzle128
// describes (ROWS × 128 bytes per block, chunk k of row r at k ^ (r mod 8)) — the TMA's 128-byte swizzle at a
// 1024-byte-aligned destination, which the kernels' tiles are. Tokens at or past T are filled with zeros, as the
// cp.async copies zero-filled rows past `limit`, and their bytes count towards the mbarrier's transaction as well.
//
// Emulated (OWLET_CUDA_EMULATION): the map holds the emulator's description (test/native/cuda_emu.h tma_load),
// which copies the box by these rules when a thread waits on the mbarrier, as late as the hardware may.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#ifndef OWLET_CUDA_EMULATION
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>
#endif

namespace owlet::cuda::tma {

constexpr int kBoxCols = 64;  // bf16 columns per box: the 128-byte swizzle's span

// The 128-byte tensor map (CUtensorMap's size and alignment: 64 bytes the driver requires, 128 CUDA 13 declares). A
// kernel takes it as a __grid_constant__ parameter: the TMA reads it from parameter space by its generic address.
struct alignas(128) Map {
  uint64_t opaque[16];
};
// The forward's three maps, one kernel parameter.
struct QkvMaps {
  Map q, k, v;
};

// A [B, T, H, D]-shaped bf16 sequence as the maps see it.
struct Seq {
  const void* base;   // batch 0, token 0, head 0, column 0
  int B, T, H, D, hs;  // hs: elements between consecutive heads of a token (D or 3·D)
};

#ifdef OWLET_CUDA_EMULATION
// The emulator's description in the map's bytes (test/native/cuda_emu.h reads it back).
inline bool encode(Map& m, const Seq& s, int rows, std::string& why) {
  (void)why;
  ::emu::TmaDesc d{};
  d.base = s.base;
  d.dims[0] = uint32_t(s.D), d.dims[1] = uint32_t(s.H), d.dims[2] = uint32_t(s.T), d.dims[3] = uint32_t(s.B);
  d.strides[0] = uint64_t(s.hs) * 2;
  d.strides[1] = d.strides[0] * uint64_t(s.H);
  d.strides[2] = d.strides[1] * uint64_t(s.T);
  d.box[0] = kBoxCols, d.box[1] = 1, d.box[2] = uint32_t(rows), d.box[3] = 1;
  static_assert(sizeof(::emu::TmaDesc) <= sizeof(Map), "the emulator's description fits in a map");
  std::memcpy(m.opaque, &d, sizeof d);
  return true;
}
__device__ __forceinline__ void prefetch(const Map*) {}
__device__ __forceinline__ void fence_barrier_init() {}
__device__ __forceinline__ void arrive_expect_tx(uint32_t bar, uint32_t bytes) { ::emu::mbar_arrive_expect_tx(bar, bytes); }
__device__ __forceinline__ void expect_tx(uint32_t bar, uint32_t bytes) { ::emu::mbar_expect_tx(bar, bytes); }
__device__ __forceinline__ void load_4d(uint32_t dst, const Map* map, int c0, int c1, int c2, int c3, uint32_t bar) {
  ::emu::tma_load(dst, map->opaque, {c0, c1, c2, c3}, bar);
}
__device__ __forceinline__ void store_4d(const Map* map, int c0, int c1, int c2, int c3, uint32_t src) {
  ::emu::tma_store(src, map->opaque, {c0, c1, c2, c3});
}
__device__ __forceinline__ void load_4d_multicast(uint32_t dst, const Map* map, int c0, int c1, int c2, int c3,
                                                  uint32_t bar, uint16_t mask) {
  ::emu::tma_load_multicast(dst, map->opaque, {c0, c1, c2, c3}, bar, mask);
}
#else
// cuTensorMapEncodeTiled through the runtime's driver entry point (no link against libcuda: the driver comes with the
// GPU machine's driver, the build machine has only stubs).
inline PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
#if CUDART_VERSION >= 12050  // the versioned lookup (the unversioned one is deprecated in CUDA 13)
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q);
#else
    const cudaError_t e = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &p, cudaEnableDefault, &q);
#endif
    if (e != cudaSuccess) cudaGetLastError();  // not an error of the next launch's (check_launch reads the last one)
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess) p = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// Encodes the map of sequence `s` with boxes of `rows` tokens; false (and why) where the driver refuses it or the
// sequence breaks the TMA's rules (16-byte aligned base and strides).
inline bool encode(Map& m, const Seq& s, int rows, std::string& why) {
  static_assert(sizeof(Map) == sizeof(CUtensorMap) && alignof(Map) >= alignof(CUtensorMap), "a map is a CUtensorMap");
  const auto fn = encode_fn();
  if (!fn) return why = "the driver has no cuTensorMapEncodeTiled", false;
  if (reinterpret_cast<uintptr_t>(s.base) % 16 || (int64_t(s.hs) * 2) % 16)
    return why = "the sequence's start or head stride is not a multiple of 16 bytes", false;
  const cuuint64_t dims[4] = {cuuint64_t(s.D), cuuint64_t(s.H), cuuint64_t(s.T), cuuint64_t(s.B)};
  const cuuint64_t head = cuuint64_t(s.hs) * 2, token = head * cuuint64_t(s.H), batch = token * cuuint64_t(s.T);
  const cuuint64_t strides[3] = {head, token, batch};
  const cuuint32_t box[4] = {cuuint32_t(kBoxCols), 1, cuuint32_t(rows), 1};
  const cuuint32_t elem[4] = {1, 1, 1, 1};
  const CUresult r = fn(reinterpret_cast<CUtensorMap*>(&m), CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4,
                        const_cast<void*>(s.base), dims, strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
                        CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) return why = "cuTensorMapEncodeTiled failed (CUresult " + std::to_string(int(r)) + ")", false;
  return true;
}

__device__ __forceinline__ void prefetch(const Map* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}
// Makes initialised mbarriers visible to the async proxy (the TMA's transaction counts) before any copy names them.
__device__ __forceinline__ void fence_barrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// One arrival on `bar` that also expects `bytes` more transaction bytes in the current phase: the phase completes
// when its arrivals are in and the copies have delivered those bytes.
__device__ __forceinline__ void arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// The current phase expects `bytes` more transaction bytes, without an arrival: the phase still waits for its
// arrivals, which another thread can make once what the copies do not deliver is in place too.
__device__ __forceinline__ void expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// The box at coordinates (c0 column, c1 head, c2 token, c3 batch) into shared memory at `dst` (1024-byte aligned for
// the 128-byte swizzle's pattern to start at its row 0), its bytes reported to `bar`.
__device__ __forceinline__ void load_4d(uint32_t dst, const Map* map, int c0, int c1, int c2, int c3, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
}
// load_4d into every block of the cluster in `mask` (bit r: rank r): the box lands at `dst` in each one's shared
// memory and reports its bytes to each one's mbarrier at `bar` (each block expects them on its own barrier).
__device__ __forceinline__ void load_4d_multicast(uint32_t dst, const Map* map, int c0, int c1, int c2, int c3,
                                                  uint32_t bar, uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%2, %3, %4, %5}], [%6], %7;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar), "h"(mask)
      : "memory");
}
// The box at (c0, c1, c2, c3) of the map's tensor from shared memory at `src` (the same swizzled layout a load
// writes), elements outside the tensor not written; a bulk async-group operation of the calling thread (commit, then
// wait_group.read before `src` is written again, wait_group before the data is needed or the block ends). The source
// was written through the generic proxy: the writers fence.proxy.async before the barrier that precedes the store.
__device__ __forceinline__ void store_4d(const Map* map, int c0, int c1, int c2, int c3, uint32_t src) {
  asm volatile(
      "cp.async.bulk.tensor.4d.global.shared::cta.bulk_group [%0, {%2, %3, %4, %5}], [%1];\n" ::"l"(
          reinterpret_cast<uint64_t>(map)),
      "r"(src), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}
#endif

// The tile of `rows` tokens from token r0 of head h of batch b, all D / 64 column blocks, into the Swizzle128 layout
// at `dst` (block c at dst + c·rows·128); `bar` is told about rows · D · 2 bytes by the caller's arrive_expect_tx.
template <int D>
__device__ __forceinline__ void load_tile(uint32_t dst, const Map* map, int rows, int b, int h, int r0, uint32_t bar) {
#pragma unroll
  for (int c = 0; c < D / kBoxCols; c++) load_4d(dst + uint32_t(c * rows * 128), map, c * kBoxCols, h, r0, b, bar);
}

}  // namespace owlet::cuda::tma
