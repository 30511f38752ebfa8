// The CUDA backend's per-device runtime: one non-default stream per device (created on first use), cuBLAS and
// cuBLASLt handles bound to it, a GEMM workspace, error translation, and deferred kernel-side errors.
//
// Every kernel, copy and GEMM of a device is queued on that device's one stream. That is what lets the caching
// allocator hand a freed block to the next allocation at once: whatever still reads the old tensor was queued
// before whatever writes the new one. The one exception, the NCCL group's communication stream (overlapped gradient
// all-reduce, native/src/dist/nccl), keeps that true by holding the tensors it uses until the compute stream has
// been made to wait for it.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "../core/tensor.h"

namespace owlet::cuda {

constexpr int kMaxDevices = 16;  // device indices a process may use (contexts, allocator pools, timelines)

struct DeviceContext {
  int index = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;  // shared by cuBLAS and cuBLASLt (same stream, so never used concurrently)
  size_t workspace_bytes = 0;
  int* error_flag = nullptr;  // mapped pinned memory: kernels report bad indices here (see deferred errors below)
  int* error_flag_dev = nullptr;
  cudaDeviceProp prop{};
};

// Makes `d` current (cudaSetDevice) and returns its context, creating stream and handles on first use.
DeviceContext& context(Device d);
// The context of the device a tensor lives on; throws Error(Device) for a host tensor.
DeviceContext& context_of(const Tensor& t, const char* op);

// Throw owlet::Error(Backend) naming the op and the CUDA / cuBLAS error (cudaErrorMemoryAllocation becomes
// Error(OutOfMemory)).
void check(cudaError_t e, const char* op, const char* what = nullptr);
void check(cublasStatus_t s, const char* op, const char* what = nullptr);
// After a kernel launch: a bad configuration shows up here (asynchronous faults surface at the next synchronisation).
void check_launch(const char* op);

// Deferred errors: a kernel that finds a bad index (out-of-range embedding id or label) cannot throw, and checking
// at once would synchronise. It writes a code into the device's flag; synchronize(), download() and every other
// call that waits for the device raise it as Error(Argument).
enum DeferredError : int { kNoError = 0, kGatherIndex = 1, kScatterIndex = 2, kLabelRange = 3 };
void raise_deferred_errors(DeviceContext& c);
// A failure found off the calling thread: the NCCL watchdog aborting a collective that failed or timed out while the
// compute stream waited for it (native/src/dist/nccl). What the stream computed after it is not valid, so the next
// raise_deferred_errors() of that device (every sync) throws it as Error(Distributed).
void post_async_failure(int device, const std::string& message);
// Waits for the device's stream, then raises any deferred error.
void sync(DeviceContext& c, const char* op);
// sync() for every device this process has used.
void sync_all(const char* op);

// False when the addon holds no kernel code for the current device (arch_probe.cu).
bool device_can_run_kernels();

// Number of blocks for a grid-stride loop over n items with `threads` per block: enough to fill the device a few
// times over, never more than needed.
int grid_for(const DeviceContext& c, int64_t n, int threads);

// False when OWLET_VEC=0: the memory-bound ops take their element-by-element kernels instead of the 16-byte ones
// (vec_map, norm_rows, pitched_copy, AdamW's float4 path). Read once per process (the ops run ~1500 times a step, and
// scripts/gpu/call.sh's VARIANT_ENV compares in a second process anyway).
bool vec_enabled();

// Whether the environment variable `var` is set to exactly `value` (the backend's OWLET_* switches).
bool env_is(const char* var, const char* value);

// Whether the Hopper kernels (wgmma, TMA, clusters) can run on this device: an sm_90a build and a device of compute
// capability 9.0 exactly (sm_90a code runs nowhere else).
bool sm90a_device(const DeviceContext& c);

// Lets kernel `fn` use `bytes` of dynamic shared memory on `device` (above the default 48 KiB); remembered per function
// and device, so a launch costs no extra driver call.
void set_smem_limit(const void* fn, size_t bytes, int device, const char* op);

}  // namespace owlet::cuda
