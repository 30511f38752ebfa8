// Flags in global memory by which one block of a persistent grid tells the others that something it wrote is out.
//
// A flag holds the number of the launch that last set it (an "epoch", one more per launch: grid_flag_epoch in
// lora.cu), so the array is never cleared between launches: a waiter wants its own launch's number and an older one
// means "not yet". Waiting on another block is safe only where every block the waiter depends on is running or will
// run without the waiter leaving first: a grid of at most as many blocks as the device holds at once, each block
// waiting only on work that comes earlier in a fixed order (lora_gemm.cuh's column block 0 of the same rows).
// The writer's stores are made visible at GPU scope (__threadfence by each writing thread, then a barrier among the
// writers) before one thread stores the flag with release semantics; the waiter's acquire load orders its later loads
// after it. The host emulator (test/native/cuda_emu.h) parks a waiting thread until some flag is stored.
#pragma once
#include <cstdint>

namespace owlet::cuda::grid_flags {

constexpr unsigned long long kWaitLimitNs = 10'000'000'000ull;

// Spins until *f == v (acquire at GPU scope). A flag still not set after kWaitLimitNs (the waits here last
// microseconds) means a block that was to set it never will — a grid larger than the device holds at once, or a bug:
// the kernel then traps (the stream reports an illegal instruction at the next check) instead of hanging the device.
__device__ __forceinline__ void wait(const unsigned* f, unsigned v) {
#ifdef OWLET_CUDA_EMULATION
  ::emu::flag_wait(f, v);
#else
  unsigned long long start = 0;
  for (;;) {
    unsigned x;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(x) : "l"(f) : "memory");
    if (x == v) return;
    unsigned long long now;
    asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(now));
    if (start == 0) start = now;
    else if (now - start > kWaitLimitNs) __trap();  // (no printf: its registers would spill the waiting warps')
    __nanosleep(32);
  }
#endif
}

// *f = v (release at GPU scope): after the writers' stores and fences (see above).
__device__ __forceinline__ void set(unsigned* f, unsigned v) {
#ifdef OWLET_CUDA_EMULATION
  ::emu::flag_store(f, v);
#else
  asm volatile("st.release.gpu.global.u32 [%0], %1;\n" ::"l"(f), "r"(v) : "memory");
#endif
}

// A writer's stores visible at GPU scope before the flag that announces them.
__device__ __forceinline__ void fence_gpu() {
#ifndef OWLET_CUDA_EMULATION
  __threadfence();
#endif
}

}  // namespace owlet::cuda::grid_flags
