// Included after emu_kernel.h by the emulator tests of kernels that declare static __shared__ arrays: such an array
// is one per block, and the emulator runs a block's threads as fibers of one OS thread and its blocks one after
// another, so a function-local static is exactly that. (Not for kernels whose shared arrays are dynamic: flash_emu.)
#undef __shared__
#define __shared__ static
