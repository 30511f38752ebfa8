// Whether this addon holds kernel code the current device can run: it is built for the architectures CMake names
// (CMAKE_CUDA_ARCHITECTURES, default sm_90a), and a device outside them otherwise fails only at its first kernel
// launch, in the middle of a step, with "no kernel image". Asking for a kernel's attributes loads its image now.
#include "runtime.h"

namespace owlet::cuda {

namespace {
__global__ void arch_probe_kernel() {}
}  // namespace

bool device_can_run_kernels() {
  cudaFuncAttributes a;
  cudaError_t e = cudaFuncGetAttributes(&a, arch_probe_kernel);
  if (e == cudaErrorNoKernelImageForDevice || e == cudaErrorInvalidDeviceFunction) {
    cudaGetLastError();
    return false;
  }
  return true;  // any other outcome is left to the calls that follow, which check their own errors
}

}  // namespace owlet::cuda
