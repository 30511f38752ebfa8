// The CUDA addon's identity (name, devices, info) and its per-device runtime: stream, cuBLAS/cuBLASLt handles,
// workspace, error translation and deferred kernel errors. Nothing touches the driver before the first tensor or
// info call, so loading the addon on a machine without a GPU fails only where a device is actually needed.
#include <napi.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#include "../core/backend.h"
#include "allocator_cuda.h"
#include "attention.h"
#include "gemm.h"
#include "runtime.h"

namespace owlet {

namespace cuda {

namespace {
constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // cuBLAS's recommendation for Hopper
DeviceContext* contexts[kMaxDevices] = {};
std::mutex contexts_mutex;

const char* blas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
  }
}

int device_count(const char* op) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess)
    fail(ErrorKind::Backend, std::string(op) + ": no usable CUDA device (" + cudaGetErrorName(e) + ": " +
                                 cudaGetErrorString(e) + "); the CUDA backend needs an NVIDIA GPU and its driver");
  return n;
}

DeviceContext* create(int index) {
  auto* c = new DeviceContext();
  c->index = index;
  check(cudaSetDevice(index), "cuda init", "cudaSetDevice");
  check(cudaGetDeviceProperties(&c->prop, index), "cuda init", "cudaGetDeviceProperties");
  if (!device_can_run_kernels()) {
    const std::string sm = std::to_string(c->prop.major) + std::to_string(c->prop.minor), name = c->prop.name;
    const bool too_old = c->prop.major < 8;  // (the kernels' bf16 tensor-core instructions start with sm_80)
    delete c;
    if (too_old)
      fail(ErrorKind::Backend, "cuda init: owlet's CUDA kernels need compute capability 8.0 or newer (bf16 tensor "
                               "cores); this " + name + " is sm_" + sm + ": train on the CPU (run.device: cpu)");
    fail(ErrorKind::Backend, "cuda init: this CUDA addon was built for CUDA architectures " OWLET_CUDA_ARCHS
                             " only, which cannot run on this " + name + " (sm_" + sm +
                             "); rebuild it with cmake-js compile --CDCMAKE_CUDA_ARCHITECTURES=" + sm);
  }
  check(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "cuda init", "cudaStreamCreate");
  check(cublasCreate(&c->blas), "cuda init", "cublasCreate");
  check(cublasSetStream(c->blas, c->stream), "cuda init", "cublasSetStream");
  check(cublasLtCreate(&c->lt), "cuda init", "cublasLtCreate");
  // The workspace is allocated directly (not through the caching allocator): it lives as long as the process.
  check(cudaMalloc(&c->workspace, kWorkspaceBytes), "cuda init", "cudaMalloc(cuBLAS workspace)");
  c->workspace_bytes = kWorkspaceBytes;
  check(cublasSetWorkspace(c->blas, c->workspace, c->workspace_bytes), "cuda init", "cublasSetWorkspace");
  check(cudaHostAlloc(reinterpret_cast<void**>(&c->error_flag), sizeof(int), cudaHostAllocMapped), "cuda init",
        "cudaHostAlloc(error flag)");
  *c->error_flag = kNoError;
  check(cudaHostGetDevicePointer(reinterpret_cast<void**>(&c->error_flag_dev), c->error_flag, 0), "cuda init",
        "cudaHostGetDevicePointer");
  return c;
}
}  // namespace

void check(cudaError_t e, const char* op, const char* what) {
  if (e == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so the next call does not report it again
  std::string msg = std::string(op) + ": " + (what ? std::string(what) + " failed: " : std::string()) +
                    cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
  fail(e == cudaErrorMemoryAllocation ? ErrorKind::OutOfMemory : ErrorKind::Backend, msg);
}

void check(cublasStatus_t s, const char* op, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  std::string msg = std::string(op) + ": " + (what ? std::string(what) + " failed: " : std::string()) +
                    blas_status_name(s);
  fail(s == CUBLAS_STATUS_ALLOC_FAILED ? ErrorKind::OutOfMemory : ErrorKind::Backend, msg);
}

void check_launch(const char* op) { check(cudaGetLastError(), op, "kernel launch"); }

DeviceContext& context(Device d) {
  if (d.kind != DeviceKind::CUDA) fail(ErrorKind::Device, "the CUDA backend cannot run on " + d.name());
  if (d.index < 0 || d.index >= kMaxDevices) fail(ErrorKind::Device, "device index out of range: " + d.name());
  DeviceContext* c = contexts[d.index];
  if (!c) {
    std::lock_guard<std::mutex> lock(contexts_mutex);
    if (!contexts[d.index]) {
      int n = device_count("cuda init");
      if (d.index >= n)
        fail(ErrorKind::Device, d.name() + " does not exist (" + std::to_string(n) + " CUDA device(s) visible)");
      contexts[d.index] = create(d.index);
    }
    c = contexts[d.index];
  }
  // Contexts exist for at most a handful of devices; switching costs little and is skipped when already current.
  int cur = -1;
  if (cudaGetDevice(&cur) != cudaSuccess || cur != d.index) check(cudaSetDevice(d.index), "cuda", "cudaSetDevice");
  return *c;
}

DeviceContext& context_of(const Tensor& t, const char* op) {
  if (t.device().kind != DeviceKind::CUDA)
    fail(ErrorKind::Device, std::string(op) + ": " + t.describe() + " is not on a CUDA device");
  return context(t.device());
}

namespace {
std::mutex async_failure_mutex;
std::string async_failure[kMaxDevices];
}  // namespace

void post_async_failure(int device, const std::string& message) {
  if (device < 0 || device >= kMaxDevices) return;
  std::lock_guard<std::mutex> lock(async_failure_mutex);
  if (async_failure[device].empty()) async_failure[device] = message;
}

void raise_deferred_errors(DeviceContext& c) {
  {
    std::lock_guard<std::mutex> lock(async_failure_mutex);
    if (!async_failure[c.index].empty()) {
      std::string m = async_failure[c.index];
      async_failure[c.index].clear();
      fail(ErrorKind::Distributed, m);
    }
  }
  int code = *static_cast<volatile int*>(c.error_flag);
  if (code == kNoError) return;
  *c.error_flag = kNoError;
  switch (code) {
    case kGatherIndex:
      fail(ErrorKind::Argument, "gatherRows (earlier, asynchronously): an index was outside the rows of the source; "
                                "those output rows were set to 0");
    case kScatterIndex:
      fail(ErrorKind::Argument, "scatterRows (earlier, asynchronously): an index was outside the rows of the "
                                "destination; those rows were skipped");
    case kLabelRange:
      fail(ErrorKind::Argument, "crossEntropy (earlier, asynchronously): a label was outside [0, vocabulary) and "
                                "not the ignore index; its row was treated as ignored");
    default: fail(ErrorKind::Backend, "unknown deferred device error " + std::to_string(code));
  }
}

void sync(DeviceContext& c, const char* op) {
  check(cudaStreamSynchronize(c.stream), op, "cudaStreamSynchronize");
  raise_deferred_errors(c);
}

void sync_all(const char* op) {
  for (int i = 0; i < kMaxDevices; i++)
    if (contexts[i]) sync(context(Device{DeviceKind::CUDA, i}), op);
}

int grid_for(const DeviceContext& c, int64_t n, int threads) {
  int64_t want = (n + threads - 1) / threads;
  int64_t cap = int64_t(c.prop.multiProcessorCount) * 16;
  if (want < 1) want = 1;
  return int(want < cap ? want : cap);
}

bool env_is(const char* var, const char* value) {
  const char* e = std::getenv(var);
  return e && std::strcmp(e, value) == 0;
}

bool sm90a_device(const DeviceContext& c) {
#ifdef OWLET_HAVE_SM90A
  // OWLET_SM90A=0 (read per call): as on a GPU without them — the generic kernels an A100 or an RTX card runs, checked
  // on a Hopper card (scripts/gpu/run.sh's check-generic).
  return c.prop.major == 9 && c.prop.minor == 0 && !env_is("OWLET_SM90A", "0");
#else
  (void)c;
  return false;
#endif
}

void set_smem_limit(const void* fn, size_t bytes, int device, const char* op) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, size_t> set;
  std::lock_guard<std::mutex> lock(mu);
  size_t& have = set[{fn, device}];
  if (have >= bytes) return;
  // (the kernels' choices stay within 99 KB where a device allows no more — sm_86/89 cards — unless a switch forces a
  // larger variant: this says so instead of cudaFuncSetAttribute's bare "invalid argument")
  int optin = 0;
  if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) == cudaSuccess &&
      bytes > size_t(optin))
    fail(ErrorKind::Backend, std::string(op) + ": the kernel chosen needs " + std::to_string(bytes) +
                                 " bytes of shared memory per block; this GPU allows " + std::to_string(optin) +
                                 " (an OWLET_ATTN_* switch may have forced a larger variant)");
  check(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)), op,
        "cudaFuncSetAttribute(max dynamic shared memory)");
  have = bytes;
}

bool vec_enabled() {
  static const bool on = !env_is("OWLET_VEC", "0");
  return on;
}

}  // namespace cuda

const char* backend_name() { return "cuda"; }
Device default_device() { return Device{DeviceKind::CUDA, 0}; }

Device parse_device(const std::string& s) {
  Device d{DeviceKind::CUDA, 0};
  if (s == "cuda") return d;
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5 && s.size() <= 7 &&
      s.find_first_not_of("0123456789", 5) == std::string::npos) {
    d.index = std::stoi(s.substr(5));
    int n = cuda::device_count("parse device");
    if (d.index >= n)
      fail(ErrorKind::Device, "device '" + s + "' does not exist (" + std::to_string(n) + " CUDA device(s) visible)");
    return d;
  }
  fail(ErrorKind::Device, "the CUDA backend places tensors on 'cuda' or 'cuda:N', not '" + s +
                              "' (host tensors belong to the CPU backend)");
}

int device_count() { return cuda::device_count("deviceCount"); }

void set_num_threads(int) {}  // host threads do no math in this backend

Napi::Object backend_info(Napi::Env env) {
  cuda::DeviceContext& c = cuda::context(default_device());
  Napi::Object o = Napi::Object::New(env);
  o.Set("backend", "cuda");
  o.Set("device", std::string(c.prop.name));
  o.Set("computeCapability", std::to_string(c.prop.major) + "." + std::to_string(c.prop.minor));
  o.Set("multiprocessors", c.prop.multiProcessorCount);
  o.Set("l2Bytes", double(c.prop.l2CacheSize));
  o.Set("sharedMemoryPerBlockOptin", double(c.prop.sharedMemPerBlockOptin));
  // what the addon was built for, and which kernels this device takes of them (owlet doctor prints both)
  o.Set("builtArchitectures", OWLET_CUDA_ARCHS);
  o.Set("kernels", cuda::sm90a_device(c) ? "hopper" : "generic");
  size_t free_b = 0, total_b = 0;
  cuda::check(cudaMemGetInfo(&free_b, &total_b), "info", "cudaMemGetInfo");
  o.Set("memoryBytes", double(total_b));
  o.Set("memoryFreeBytes", double(free_b));
  int rt = 0, drv = 0, major = 0, minor = 0, patch = 0;
  cudaRuntimeGetVersion(&rt);
  cudaDriverGetVersion(&drv);
  cublasGetProperty(MAJOR_VERSION, &major);
  cublasGetProperty(MINOR_VERSION, &minor);
  cublasGetProperty(PATCH_LEVEL, &patch);
  o.Set("cudaRuntime", rt);
  o.Set("cudaDriver", drv);
  o.Set("cublas", std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch));
  int count = 0;
  cudaGetDeviceCount(&count);
  o.Set("deviceCount", count);
  cuda::AllocatorStats st = cuda::allocator_stats(c.index);
  o.Set("allocatorReservedBytes", double(st.reserved));
  o.Set("allocatorCachedBytes", double(st.cached));
  o.Set("allocatorMallocs", double(st.mallocs));
  cuda::GemmStats gs = cuda::gemm_stats();
  o.Set("gemmLt", double(gs.lt));
  o.Set("gemmTuned", double(gs.tuned));
  o.Set("gemmTunedChanged", double(gs.tuned_changed));
  o.Set("gemmTuneReused", double(gs.tune_reused));
  o.Set("gemmTuneSavedMsPerCall", gs.tune_saved_ms);
  o.Set("gemmEx", double(gs.ex));
  o.Set("gemmBiasEpilogue", double(gs.bias_epilogue));
  o.Set("gemmBiasGradEpilogue", double(gs.bias_grad_epilogue));
  o.Set("gemmExShapes", gs.ex_shapes);
  o.Set("attentionTuned", kern::attention_tune_report());
  return o;
}

}  // namespace owlet
