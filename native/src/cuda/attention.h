// What the CUDA attention reports beyond kern::attention_fwd/bwd (core/kernels.h), for the backend's info().
#pragma once
#include <string>

namespace owlet::kern {

// The variants autotuning chose so far, one entry per (forward or backward, shape, causal, key mask): the chosen
// variant's time and the static default's, e.g. "bwd B64 H16 Tq257 Tk257 D64: wgmma1 0.301 ms (default 0.334)".
std::string attention_tune_report();

}  // namespace owlet::kern
