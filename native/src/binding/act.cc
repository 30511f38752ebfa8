// Bindings: activations (quick GELU, SiLU, SwiGLU), softmax over the last axis, inverted dropout.
#include <cmath>

#include "../core/kernels.h"
#include "optional_results.h"
#include "registry.h"

using namespace owlet;

namespace {

void check_pair(Args& a, const Tensor& x, const char* xn, const Tensor& y, const char* yn) {
  a.expect_float(x, xn);
  a.expect_float(y, yn);
  a.expect_same_device(x, xn, y, yn);
  a.expect_same_shape(x, xn, y, yn);
}

uint64_t seed_arg(Args& a, size_t i) {
  int64_t s = a.integer(i, "seed");
  OWLET_CHECK(a, s >= 0 && s <= (int64_t(1) << 53), ErrorKind::Argument,
          "seed must be an integer in [0, 2^53], got " + std::to_string(s));
  return uint64_t(s);
}

}  // namespace

// quickGeluForward(x) -> x·sigmoid(1.702x)
OWLET_OP(quickGeluForward) {
  Tensor& x = a.tensor(0, "x");
  a.expect_float(x, "x");
  Tensor y = a.like(x);
  kern::quick_gelu_fwd(x, y);
  return a.ret(std::move(y));
}

// quickGeluBackward(gy, x) -> gx
OWLET_OP(quickGeluBackward) {
  Tensor &gy = a.tensor(0, "gy"), &x = a.tensor(1, "x");
  check_pair(a, gy, "gy", x, "x");
  Tensor gx = a.like(x);
  kern::quick_gelu_bwd(gy, x, gx);
  return a.ret(std::move(gx));
}

// quickGeluBackwardForward(gy, x) -> [gx, y]: quickGeluBackward and quickGeluForward in one pass over x (a layer
// that did not keep y recomputes it for its weight gradient).
OWLET_OP(quickGeluBackwardForward) {
  Tensor &gy = a.tensor(0, "gy"), &x = a.tensor(1, "x");
  check_pair(a, gy, "gy", x, "x");
  Tensor gx = a.like(x), y = a.like(x);
  kern::quick_gelu_bwd_fwd(gy, x, gx, y);
  return a.ret(std::vector<Tensor>{std::move(gx), std::move(y)});
}

// siluForward(x) -> x·sigmoid(x)
OWLET_OP(siluForward) {
  Tensor& x = a.tensor(0, "x");
  a.expect_float(x, "x");
  Tensor y = a.like(x);
  kern::silu_fwd(x, y);
  return a.ret(std::move(y));
}

// siluBackward(gy, x) -> gx
OWLET_OP(siluBackward) {
  Tensor &gy = a.tensor(0, "gy"), &x = a.tensor(1, "x");
  check_pair(a, gy, "gy", x, "x");
  Tensor gx = a.like(x);
  kern::silu_bwd(gy, x, gx);
  return a.ret(std::move(gx));
}

// swigluForward(gate, up) -> silu(gate)·up
OWLET_OP(swigluForward) {
  Tensor &gate = a.tensor(0, "gate"), &up = a.tensor(1, "up");
  check_pair(a, gate, "gate", up, "up");
  Tensor y = a.like(gate);
  kern::swiglu_fwd(gate, up, y);
  return a.ret(std::move(y));
}

// swigluBackward(gy, gate, up, needGate = true, needUp = true) -> [ggate | null, gup | null]
OWLET_OP(swigluBackward) {
  Tensor &gy = a.tensor(0, "gy"), &gate = a.tensor(1, "gate"), &up = a.tensor(2, "up");
  check_pair(a, gate, "gate", up, "up");
  check_pair(a, gy, "gy", gate, "gate");
  bool need_gate = a.boolean_or(3, "needGate", true), need_up = a.boolean_or(4, "needUp", true);
  std::optional<Tensor> gg, gu;
  if (need_gate) gg = a.like(gate);
  if (need_up) gu = a.like(up);
  if (gg || gu) kern::swiglu_bwd(gy, gate, up, gg ? &*gg : nullptr, gu ? &*gu : nullptr);
  return ret_optional(a, {std::move(gg), std::move(gu)});
}

// softmaxForward(x) -> softmax over the last axis
OWLET_OP(softmaxForward) {
  Tensor& x = a.tensor(0, "x");
  a.expect_float(x, "x");
  OWLET_CHECK(a, x.ndim() >= 1, ErrorKind::Shape, "x needs at least one axis, got " + x.describe());
  Tensor y = a.like(x);
  if (x.numel() > 0) kern::softmax_fwd(x, y);
  return a.ret(std::move(y));
}

// softmaxBackward(gy, y) -> gx, from the forward's output y
OWLET_OP(softmaxBackward) {
  Tensor &gy = a.tensor(0, "gy"), &y = a.tensor(1, "y");
  check_pair(a, gy, "gy", y, "y");
  OWLET_CHECK(a, y.ndim() >= 1, ErrorKind::Shape, "y needs at least one axis, got " + y.describe());
  Tensor gx = a.like(y);
  if (y.numel() > 0) kern::softmax_bwd(gy, y, gx);
  return a.ret(std::move(gx));
}

// dropoutForward(x, p, seed) -> x masked and scaled by 1/(1-p); the mask is a function of (seed, element index)
OWLET_OP(dropoutForward) {
  Tensor& x = a.tensor(0, "x");
  a.expect_float(x, "x");
  float p = a.dropout_p(1, "p");
  uint64_t seed = seed_arg(a, 2);
  Tensor y = a.like(x);
  kern::dropout_fwd(x, y, p, seed);
  return a.ret(std::move(y));
}

// dropoutBackward(gy, p, seed) -> gy through the same mask
OWLET_OP(dropoutBackward) {
  Tensor& gy = a.tensor(0, "gy");
  a.expect_float(gy, "gy");
  float p = a.dropout_p(1, "p");
  uint64_t seed = seed_arg(a, 2);
  Tensor gx = a.like(gy);
  kern::dropout_bwd(gy, gx, p, seed);
  return a.ret(std::move(gx));
}
