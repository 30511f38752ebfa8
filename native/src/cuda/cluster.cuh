// Thread block clusters (sm_90): a block's rank in its cluster, the cluster-wide barrier, and an arrival on another
// block's mbarrier (PTX ISA: %cluster_ctarank, barrier.cluster, mapa, mbarrier.arrive.shared::cluster). The kernel
// is launched with a cluster dimension (cudaLaunchKernelEx, cudaLaunchAttributeClusterDimension); TMA copies
// multicast to the cluster's blocks are tma.cuh's load_4d_multicast.
//
// Emulated (OWLET_CUDA_EMULATION): the emulator runs a cluster's blocks together (test/native/cuda_emu.h launch's
// cluster_x) and does the same to their mbarriers and shared memory.
#pragma once
#include <cstdint>

namespace owlet::cuda::cluster {

#ifdef OWLET_CUDA_EMULATION
__device__ __forceinline__ int rank() { return ::emu::cluster_rank(); }
__device__ __forceinline__ void sync() { ::emu::cluster_sync(); }
__device__ __forceinline__ void mbar_arrive_remote(uint32_t bar, int r) { ::emu::mbar_arrive_remote(bar, r); }
#else
__device__ __forceinline__ int rank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return int(r);
}
// Every thread of every block of the cluster arrives (release), then waits for all of them (acquire): what each block
// wrote to its shared memory before (its mbarriers' initialisation) is visible to the others after.
__device__ __forceinline__ void sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// One arrival on the mbarrier at the same shared offset `bar` in the cluster's block `r`, with mbarrier.arrive's
// default semantics (release at CTA scope), as CUTLASS's ClusterBarrier::arrive(cta_id): what it signals is that this
// warp's tensor-core reads of a stage are complete (wgmma.wait_group said so), which orders nothing else. With
// .release.cluster each arrival was a cluster-scope memory fence: on session 19's H100 the fused LoRA GEMM's warps
// spent 41% of their cycles stalled on it ("Stall Membar", ncu) and the kernel ran at ≈ 450 TFLOP/s.
__device__ __forceinline__ void mbar_arrive_remote(uint32_t bar, int r) {
  asm volatile(
      "{\n.reg .b32 ra;\nmapa.shared::cluster.u32 ra, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [ra];\n}\n" ::"r"(bar),
      "r"(r)
      : "memory");
}
#endif

}  // namespace owlet::cuda::cluster
