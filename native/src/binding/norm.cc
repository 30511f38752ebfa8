// Bindings: LayerNorm and RMSNorm over the last axis, forward and backward.
#include <cmath>

#include "../core/kernels.h"
#include "optional_results.h"
#include "registry.h"

using namespace owlet;

namespace {

// x: f32 with at least one axis and a non-empty last axis; returns the per-row statistics shape (x without its last
// axis).
Shape check_input(Args& a, const Tensor& x, const char* name) {
  a.expect_float(x, name);
  OWLET_CHECK(a, x.ndim() >= 1 && x.dim(-1) > 0, ErrorKind::Shape,
          std::string(name) + " needs a non-empty last axis to normalise over, got " + x.describe());
  return Shape(x.shape.begin(), x.shape.end() - 1);
}

// A weight or bias: f32 [C] on x's device, C = x's last axis.
void check_param(Args& a, const Tensor* p, const char* name, const Tensor& x) {
  if (!p) return;
  a.expect_float(*p, name);
  a.expect_same_device(*p, name, x, "x");
  OWLET_CHECK(a, p->ndim() == 1 && p->dim(0) == x.dim(-1), ErrorKind::Shape,
          std::string(name) + " " + p->describe() + " must be [" + std::to_string(x.dim(-1)) + "], the last axis of x " +
              x.describe());
}

void check_stat(Args& a, const Tensor& s, const char* name, const Tensor& x, const Shape& rows) {
  a.expect_float(s, name);
  a.expect_same_device(s, name, x, "x");
  OWLET_CHECK(a, s.shape == rows, ErrorKind::Shape,
          std::string(name) + " " + s.describe() + " must be " + shape_str(rows) + " (x " + x.describe() +
              " without its last axis)");
}

void check_grad(Args& a, const Tensor& gy, const Tensor& x) {
  a.expect_float(gy, "gy");
  a.expect_same_device(gy, "gy", x, "x");
  a.expect_same_shape(gy, "gy", x, "x");
}

// The residual a fused forward adds to x first (x's dtype, shape and device), or null.
Tensor* residual_arg(Args& a, size_t i, const Tensor& x, const char* name) {
  Tensor* r = a.opt_tensor(i, name);
  if (!r) return nullptr;
  a.expect_dtype(*r, name, x.dtype);
  a.expect_same_device(*r, name, x, "x");
  a.expect_same_shape(*r, name, x, "x");
  return r;
}

float eps_arg(Args& a, size_t i) {
  double eps = a.number(i, "eps");
  OWLET_CHECK(a, std::isfinite(eps) && float(eps) > 0.f, ErrorKind::Argument,
          "eps must be a finite number > 0 (in fp32), got " + std::to_string(eps));
  return float(eps);
}

}  // namespace

// layerNormForward(x, w | null, b | null, eps, residual?) -> [y, mean, rstd] (+ sum)
// With a residual: sum = x + residual, then y = LayerNorm(sum), and sum is returned last (the residual stream).
OWLET_OP(layerNormForward) {
  Tensor& x = a.tensor(0, "x");
  Tensor *w = a.opt_tensor(1, "w"), *b = a.opt_tensor(2, "b");
  Shape rows = check_input(a, x, "x");
  check_param(a, w, "w", x);
  check_param(a, b, "b", x);
  float eps = eps_arg(a, 3);
  Tensor* res = residual_arg(a, 4, x, "residual");
  Tensor y = a.like(x), mean = a.make(DType::F32, rows, x.device()), rstd = a.make(DType::F32, rows, x.device());
  if (res) {
    Tensor sum = a.like(x);
    kern::layernorm_fwd(x, w, b, y, mean, rstd, eps, res, &sum);
    return a.ret(std::vector<Tensor>{std::move(y), std::move(mean), std::move(rstd), std::move(sum)});
  }
  kern::layernorm_fwd(x, w, b, y, mean, rstd, eps);
  return a.ret(std::vector<Tensor>{std::move(y), std::move(mean), std::move(rstd)});
}

// layerNormBackward(gy, x, w | null, mean, rstd, needX, needW, gxAdd?) -> [gx | null, gw | null, gb | null]
// needW asks for the affine gradients: gw when w is given, and gb (which does not depend on w) always. gxAdd (x's
// shape and dtype) is added to gx in the same pass.
OWLET_OP(layerNormBackward) {
  Tensor &gy = a.tensor(0, "gy"), &x = a.tensor(1, "x");
  Tensor* w = a.opt_tensor(2, "w");
  Tensor &mean = a.tensor(3, "mean"), &rstd = a.tensor(4, "rstd");
  bool need_x = a.boolean(5, "needX"), need_w = a.boolean(6, "needW");
  Shape rows = check_input(a, x, "x");
  check_grad(a, gy, x);
  Tensor* gadd = residual_arg(a, 7, x, "gxAdd");
  check_param(a, w, "w", x);
  check_stat(a, mean, "mean", x, rows);
  check_stat(a, rstd, "rstd", x, rows);
  std::optional<Tensor> gx, gw, gb;
  if (need_x) gx = a.like(x);
  // Parameter gradients take the weight's dtype (x's without a weight): f32 on the CPU.
  if (need_w && w) gw = a.make(w->dtype, {x.dim(-1)}, x.device());
  if (need_w) gb = a.make(w ? w->dtype : x.dtype, {x.dim(-1)}, x.device());
  if (gx || gw || gb)
    kern::layernorm_bwd(gy, x, w, mean, rstd, gx ? &*gx : nullptr, gw ? &*gw : nullptr, gb ? &*gb : nullptr, gadd);
  return ret_optional(a, {std::move(gx), std::move(gw), std::move(gb)});
}

// rmsNormForward(x, w, eps, residual?) -> [y, rstd] (+ sum): with a residual, sum = x + residual is normalised and
// returned last.
OWLET_OP(rmsNormForward) {
  Tensor &x = a.tensor(0, "x"), &w = a.tensor(1, "w");
  Shape rows = check_input(a, x, "x");
  check_param(a, &w, "w", x);
  float eps = eps_arg(a, 2);
  Tensor* res = residual_arg(a, 3, x, "residual");
  Tensor y = a.like(x), rstd = a.make(DType::F32, rows, x.device());
  if (res) {
    Tensor sum = a.like(x);
    kern::rmsnorm_fwd(x, w, y, rstd, eps, res, &sum);
    return a.ret(std::vector<Tensor>{std::move(y), std::move(rstd), std::move(sum)});
  }
  kern::rmsnorm_fwd(x, w, y, rstd, eps);
  return a.ret(std::vector<Tensor>{std::move(y), std::move(rstd)});
}

// rmsNormBackward(gy, x, w, rstd, needX, needW, gxAdd?) -> [gx | null, gw | null]; gxAdd is added to gx in the same pass.
OWLET_OP(rmsNormBackward) {
  Tensor &gy = a.tensor(0, "gy"), &x = a.tensor(1, "x"), &w = a.tensor(2, "w"), &rstd = a.tensor(3, "rstd");
  bool need_x = a.boolean(4, "needX"), need_w = a.boolean(5, "needW");
  Shape rows = check_input(a, x, "x");
  check_grad(a, gy, x);
  Tensor* gadd = residual_arg(a, 6, x, "gxAdd");
  check_param(a, &w, "w", x);
  check_stat(a, rstd, "rstd", x, rows);
  std::optional<Tensor> gx, gw;
  if (need_x) gx = a.like(x);
  if (need_w) gw = a.make(w.dtype, {x.dim(-1)}, x.device());
  if (gx || gw) kern::rmsnorm_bwd(gy, x, w, rstd, gx ? &*gx : nullptr, gw ? &*gw : nullptr, gadd);
  return ret_optional(a, {std::move(gx), std::move(gw)});
}
