// Bindings: LoRA linear with a frozen base weight (forward, and backward without dW).
#include <cmath>

#include "../core/kernels.h"
#include "native_tensor.h"
#include "registry.h"

using namespace owlet;

namespace {

struct LoraShapes {
  Shape y, xa;  // x's leading shape + [N], + [r]
};

// x [..., K], w [N, K], a [r, K], b [N, r]: all f32 on one device; r, N, K >= 1.
LoraShapes check_lora(Args& a, const Tensor& x, const Tensor& w, const Tensor& la, const Tensor& lb) {
  a.expect_float(x, "x");
  a.expect_float(w, "w");
  a.expect_float(la, "a");
  a.expect_float(lb, "b");
  a.expect_same_device(x, "x", w, "w");
  a.expect_same_device(x, "x", la, "a");
  a.expect_same_device(x, "x", lb, "b");
  OWLET_CHECK(a, x.ndim() >= 1, ErrorKind::Shape, "x must be [..., K], got " + x.describe());
  a.expect_rank(w, "w", 2);
  a.expect_rank(la, "a", 2);
  a.expect_rank(lb, "b", 2);
  int64_t K = x.cols(), N = w.dim(0), r = la.dim(0);
  auto all = [&] { return "x " + x.describe() + ", w " + w.describe() + ", a " + la.describe() + ", b " + lb.describe(); };
  OWLET_CHECK(a, K >= 1 && N >= 1 && r >= 1, ErrorKind::Shape, "K, N and the rank r must be >= 1: " + all());
  OWLET_CHECK(a, w.dim(1) == K, ErrorKind::Shape, "w must be [N, K] with K = x's last dimension: " + all());
  OWLET_CHECK(a, la.dim(1) == K, ErrorKind::Shape, "a must be [r, K] with K = x's last dimension: " + all());
  OWLET_CHECK(a, lb.dim(0) == N && lb.dim(1) == r, ErrorKind::Shape, "b must be [N, r] = [w rows, a rows]: " + all());
  LoraShapes s{Shape(x.shape.begin(), x.shape.end() - 1), {}};
  s.xa = s.y;
  s.y.push_back(N);
  s.xa.push_back(r);
  return s;
}

struct LoraScalars {
  float s, p;
  uint64_t seed;
};

LoraScalars scalars(Args& a, size_t i) {
  double s = a.number(i, "s");
  const float p = a.dropout_p(i + 1, "dropoutP");
  int64_t seed = a.integer(i + 2, "seed");
  OWLET_CHECK(a, std::isfinite(s), ErrorKind::Argument, "scale s must be finite, got " + std::to_string(s));
  OWLET_CHECK(a, seed >= 0, ErrorKind::Argument, "seed must be a non-negative integer, got " + std::to_string(seed));
  return {float(s), p, uint64_t(seed)};
}

}  // namespace

// loraForward(x, w, a, b, s, dropoutP, seed) -> [y [..., N], xa [..., r]]
OWLET_OP(loraForward) {
  Tensor &x = a.tensor(0, "x"), &w = a.tensor(1, "w"), &la = a.tensor(2, "a"), &lb = a.tensor(3, "b");
  LoraShapes sh = check_lora(a, x, w, la, lb);
  LoraScalars sc = scalars(a, 4);
  Tensor y = a.make(x.dtype, sh.y, x.device()), xa = a.make(x.dtype, sh.xa, x.device());  // x's dtype (bf16 on CUDA)
  kern::lora_fwd(x, w, la, lb, sc.s, sc.p, sc.seed, y, xa);
  return a.ret(std::vector<Tensor>{std::move(y), std::move(xa)});
}

// loraBackward(gy, x, w, a, b, xa, s, dropoutP, seed, needX) -> [gx | null, ga, gb]; never a gradient for w.
OWLET_OP(loraBackward) {
  Tensor &gy = a.tensor(0, "gy"), &x = a.tensor(1, "x"), &w = a.tensor(2, "w"), &la = a.tensor(3, "a"),
         &lb = a.tensor(4, "b"), &xa = a.tensor(5, "xa");
  LoraShapes sh = check_lora(a, x, w, la, lb);
  LoraScalars sc = scalars(a, 6);
  bool need_x = a.boolean(9, "needX");
  a.expect_float(gy, "gy");
  a.expect_float(xa, "xa");
  a.expect_same_device(x, "x", gy, "gy");
  a.expect_same_device(x, "x", xa, "xa");
  a.expect_shape(gy, "gy", sh.y);
  a.expect_shape(xa, "xa", sh.xa);
  Tensor ga = a.like(la), gb = a.like(lb), gx;
  if (need_x) gx = a.like(x);
  kern::lora_bwd(gy, x, w, la, lb, xa, sc.s, sc.p, sc.seed, need_x ? &gx : nullptr, ga, gb);
  Napi::Array out = Napi::Array::New(a.env(), 3);
  a.set_result(out, 0, need_x ? Napi::Value(NativeTensor::wrap(a.env(), std::move(gx))) : a.env().Null());
  a.set_result(out, 1, NativeTensor::wrap(a.env(), std::move(ga)));
  a.set_result(out, 2, NativeTensor::wrap(a.env(), std::move(gb)));
  return out;
}
