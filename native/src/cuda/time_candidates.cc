#include "time_candidates.h"

#include <exception>

namespace owlet::cuda {

std::vector<float> time_candidates(cudaStream_t stream, int n, const std::function<bool(int)>& run, int reps) {
  std::vector<float> ms(size_t(n), -1.f);
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess) {
    if (e0) cudaEventDestroy(e0);
    cudaGetLastError();
    return ms;
  }
  auto attempt = [&](int i) {
    try {
      return run(i);
    } catch (const std::exception&) {
      return false;
    }
  };
  for (int i = 0; i < n; i++) {
    if (!attempt(i)) {  // warm-up; a candidate that fails here is not one
      cudaGetLastError();
      continue;
    }
    bool ok = cudaEventRecord(e0, stream) == cudaSuccess;
    for (int r = 0; r < reps && ok; r++) ok = attempt(i);
    ok = ok && cudaEventRecord(e1, stream) == cudaSuccess && cudaEventSynchronize(e1) == cudaSuccess;
    float t = 0.f;
    if (ok && cudaEventElapsedTime(&t, e0, e1) == cudaSuccess) ms[size_t(i)] = t / float(reps);
    cudaGetLastError();  // a failed trial must not surface as some later op's error
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return ms;
}

int fastest(const std::vector<float>& ms) {
  int best = -1;
  for (int i = 0; i < int(ms.size()); i++)
    if (ms[size_t(i)] >= 0.f && (best < 0 || ms[size_t(i)] < ms[size_t(best)])) best = i;
  return best;
}

}  // namespace owlet::cuda
