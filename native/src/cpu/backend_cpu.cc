// The CPU addon's identity: OpenMP threads, OpenBLAS, host memory.
#include <cblas.h>
#include <malloc.h>
#include <omp.h>

#include "../core/backend.h"

extern "C" {
// OpenBLAS-specific; declared here so a non-OpenBLAS cblas.h still compiles against the link-time symbol.
void openblas_set_num_threads(int);
char* openblas_get_config(void);
int openblas_get_num_threads(void);
}

namespace owlet {

namespace {
// Activations and gradients are allocated and freed every step. glibc serves large blocks with mmap and returns them
// at free, so every step page-faults its whole working set in again (measured ~1600 faults per attention step).
// Keeping large blocks in the heap lets freed memory be reused at once.
struct HeapTuning {
  HeapTuning() {
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
  }
} heap_tuning;
}  // namespace

const char* backend_name() { return "cpu"; }
Device default_device() { return Device{}; }

Device parse_device(const std::string& s) {
  if (s == "cpu" || s == "cpu:0") return Device{};
  fail(ErrorKind::Device, "the CPU backend cannot place tensors on '" + s + "'");
}

int device_count() { return 1; }

void set_num_threads(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

Napi::Object backend_info(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("backend", "cpu");
  o.Set("threads", omp_get_max_threads());
  o.Set("blas", std::string(openblas_get_config()));
  o.Set("blasThreads", openblas_get_num_threads());
  return o;
}

}  // namespace owlet
