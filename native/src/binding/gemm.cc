// Bindings: batched matrix multiply.
#include "../core/kernels.h"
#include "optional_results.h"
#include "registry.h"

using namespace owlet;

namespace {
struct Dims {
  int64_t M, N, K;
  Shape out;
};

Dims check(Args& a, const Tensor& x, const Tensor& y, bool ta, bool tb) {
  a.expect_float(x, "a");
  a.expect_float(y, "b");
  a.expect_same_device(x, "a", y, "b");
  OWLET_CHECK(a, x.ndim() >= 2 && y.ndim() >= 2, ErrorKind::Shape,
          "a and b need at least 2 dimensions, got " + x.describe() + " and " + y.describe());
  int64_t M = ta ? x.dim(-1) : x.dim(-2), Ka = ta ? x.dim(-2) : x.dim(-1);
  int64_t Kb = tb ? y.dim(-1) : y.dim(-2), N = tb ? y.dim(-2) : y.dim(-1);
  auto desc = [&] { return std::string("a") + (ta ? "ᵀ " : " ") + x.describe() + " times b" + (tb ? "ᵀ " : " ") + y.describe(); };
  OWLET_CHECK(a, Ka == Kb, ErrorKind::Shape, "inner dimensions differ: " + desc());
  if (y.ndim() > 2) {
    OWLET_CHECK(a, y.ndim() == x.ndim(), ErrorKind::Shape, "batch dimensions differ: " + desc());
    for (int i = 0; i < x.ndim() - 2; i++)
      OWLET_CHECK(a, x.shape[size_t(i)] == y.shape[size_t(i)], ErrorKind::Shape, "batch dimensions differ: " + desc());
  }
  Shape out(x.shape.begin(), x.shape.end() - 2);
  out.push_back(M);
  out.push_back(N);
  return {M, N, Ka, out};
}
}  // namespace

// matmul(a, b, transA = false, transB = false, alpha = 1) -> alpha * op(a) op(b)
OWLET_OP(matmul) {
  Tensor &x = a.tensor(0, "a"), &y = a.tensor(1, "b");
  bool ta = a.boolean_or(2, "transA", false), tb = a.boolean_or(3, "transB", false);
  Dims d = check(a, x, y, ta, tb);
  Tensor c = a.make(x.dtype, d.out, x.device());  // the operands' dtype (f32 on the CPU; f32 or bf16 on CUDA)
  if (c.numel() == 0) return a.ret(std::move(c));
  if (d.K == 0) kern::fill(c, 0);
  else kern::matmul(x, y, c, ta, tb, float(a.number_or(4, "alpha", 1)), 0.f);
  return a.ret(std::move(c));
}

// matmulInto(c, a, b, transA, transB, alpha = 1, beta = 1): c = alpha * op(a) op(b) + beta * c, in place.
OWLET_OP(matmulInto) {
  Tensor &c = a.tensor(0, "c"), &x = a.tensor(1, "a"), &y = a.tensor(2, "b");
  bool ta = a.boolean_or(3, "transA", false), tb = a.boolean_or(4, "transB", false);
  Dims d = check(a, x, y, ta, tb);
  a.expect_float(c, "c");
  a.expect_not_aliased(c, "c", x, "a");  // (BLAS writes c while it still reads a and b)
  a.expect_not_aliased(c, "c", y, "b");
  // (the shape, not only the size: the kernels take M and N from c's last two dims, past the end of a 1-D c's shape)
  a.expect_shape(c, "c", d.out);
  float alpha = float(a.number_or(5, "alpha", 1)), beta = float(a.number_or(6, "beta", 1));
  if (c.numel() == 0) return a.env().Undefined();
  if (d.K == 0) {  // nothing to add: c = beta·c (as BLAS: beta = 0 ignores what c held)
    if (beta == 0.f) kern::fill(c, 0);
    else kern::scale(c, beta, c);
  }
  else kern::matmul(x, y, c, ta, tb, alpha, beta);
  return a.env().Undefined();
}

// linearForward(x, w, bias) -> x wᵀ + bias: x [rows, K], w [N, K], bias [N]; the result in x's dtype. One op so that a
// GPU adds the bias in the GEMM's epilogue instead of a second pass over the output.
OWLET_OP(linearForward) {
  Tensor &x = a.tensor(0, "x"), &w = a.tensor(1, "w"), &bias = a.tensor(2, "bias");
  a.expect_float(x, "x");
  a.expect_float(w, "w");
  a.expect_float(bias, "bias");
  a.expect_same_device(x, "x", w, "w");
  a.expect_same_device(x, "x", bias, "bias");
  OWLET_CHECK(a, x.ndim() == 2 && w.ndim() == 2 && bias.ndim() == 1, ErrorKind::Shape,
          "x and w must be 2-D and bias 1-D, got " + x.describe() + ", " + w.describe() + ", " + bias.describe());
  OWLET_CHECK(a, x.dim(1) == w.dim(1) && bias.dim(0) == w.dim(0), ErrorKind::Shape,
          "x " + x.describe() + ", w " + w.describe() + " and bias " + bias.describe() + " do not fit x wᵀ + bias");
  Tensor y = a.make(x.dtype, Shape{x.dim(0), w.dim(0)}, x.device());
  if (y.numel()) kern::linear_bias(x, w, bias, y);
  return a.ret(std::move(y));
}

// linearWeightGrad(gy, x, wantBias) -> [gw, gb | null]: a linear layer's gradients for its weight (gyᵀ x: gy [rows, N],
// x [rows, K], gw [N, K]) and, with wantBias, its bias (gb [N], the column sums of gy), in gy's dtype. One op so that a
// GPU takes the bias gradient from the weight-gradient GEMM's epilogue instead of another pass over gy.
OWLET_OP(linearWeightGrad) {
  Tensor &gy = a.tensor(0, "gy"), &x = a.tensor(1, "x");
  const bool want_bias = a.boolean_or(2, "wantBias", false);
  a.expect_float(gy, "gy");
  a.expect_float(x, "x");
  a.expect_same_device(gy, "gy", x, "x");
  OWLET_CHECK(a, gy.ndim() == 2 && x.ndim() == 2 && gy.dim(0) == x.dim(0), ErrorKind::Shape,
          "gy and x must be 2-D with the same rows, got " + gy.describe() + " and " + x.describe());
  Tensor gw = a.make(gy.dtype, Shape{gy.dim(1), x.dim(1)}, gy.device());
  Tensor gb = want_bias ? a.make(gy.dtype, Shape{gy.dim(1)}, gy.device()) : Tensor();
  if (gw.numel() || (want_bias && gb.numel())) kern::linear_weight_grad(gy, x, gw, want_bias ? &gb : nullptr);
  std::optional<Tensor> b;
  if (want_bias) b = std::move(gb);
  return ret_optional(a, {std::optional<Tensor>(std::move(gw)), std::move(b)});
}
