// Timing a few ways of doing one thing on the device, for the ops that keep the fastest of several on their first
// call of a shape: cuBLASLt's algorithms (gemm.cu) and the attention kernels' variants (attention.cu).
#pragma once
#include <cuda_runtime.h>

#include <functional>
#include <vector>

namespace owlet::cuda {

// run(i) enqueues candidate i on `stream` and returns false when it cannot run (it is then skipped; a CUDA error it
// left is cleared, and an exception it throws counts as false). Each candidate runs once as a warm-up, then `reps`
// times between two events; the host waits for each candidate's events. Returns every candidate's mean time in ms,
// negative for the ones that did not run (or when no event could be created).
std::vector<float> time_candidates(cudaStream_t stream, int n, const std::function<bool(int)>& run, int reps);

// The index of the smallest non-negative time, or -1.
int fastest(const std::vector<float>& ms);

}  // namespace owlet::cuda
