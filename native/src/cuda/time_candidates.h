// Timing a few ways of doing one thing on the device, for the ops that keep the fastest of several on their first
// call of a shape: cuBLASLt's algorithms (gemm.cu) and the attention kernels' variants (attention.cu).
#pragma once
#include <cuda_runtime.h>

#include <functional>
#include <vector>

namespace owlet::cuda {

constexpr int kTimingRounds = 2;      // passes over all candidates; each keeps its fastest
constexpr float kSwitchMargin = 0.02f;  // another candidate must beat the first by more than this fraction

// run(i) enqueues candidate i on `stream` and returns false when it cannot run (it is then skipped; a CUDA error it
// left is cleared, and an exception it throws counts as false). Each candidate runs once as a warm-up, then
// kTimingRounds passes over the candidates time `reps` runs of each between two events (the host waits for each).
// Returns every candidate's mean time per run in its faster pass, in ms, negative for the ones that did not run (or
// when no event could be created).
std::vector<float> time_candidates(cudaStream_t stream, int n, const std::function<bool(int)>& run, int reps);

// The index of the smallest non-negative time, or -1; the first candidate when none beats it by kSwitchMargin.
int fastest(const std::vector<float>& ms);

}  // namespace owlet::cuda
