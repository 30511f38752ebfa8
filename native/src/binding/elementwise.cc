// Bindings: elementwise arithmetic.
#include "../core/kernels.h"
#include "registry.h"

using namespace owlet;

// b must be a's shape or a suffix of it.
static void check_broadcast(Args& a, const Tensor& x, const Tensor& y) {
  a.expect_float(x, "a");
  a.expect_float(y, "b");
  a.expect_same_device(x, "a", y, "b");
  bool ok = y.ndim() <= x.ndim();
  for (int i = 1; ok && i <= y.ndim(); i++) ok = x.shape[size_t(x.ndim() - i)] == y.shape[size_t(y.ndim() - i)];
  OWLET_CHECK(a, ok && (y.numel() > 0 || x.numel() == 0), ErrorKind::Shape,
          "b " + y.describe() + " must match a " + x.describe() + " or a trailing part of its shape");
}

// add(a, b, alpha = 1, beta = 1) -> alpha*a + beta*b
OWLET_OP(add) {
  Tensor &x = a.tensor(0, "a"), &y = a.tensor(1, "b");
  check_broadcast(a, x, y);
  Tensor out = a.like(x);
  float alpha = float(a.number_or(2, "alpha", 1)), beta = float(a.number_or(3, "beta", 1));
  if (out.numel()) kern::add(x, y, out, alpha, beta);
  return a.ret(std::move(out));
}

// mul(a, b) -> a*b
OWLET_OP(mul) {
  Tensor &x = a.tensor(0, "a"), &y = a.tensor(1, "b");
  check_broadcast(a, x, y);
  Tensor out = a.like(x);
  if (out.numel()) kern::mul(x, y, out);
  return a.ret(std::move(out));
}

// scale(a, s) -> s*a
OWLET_OP(scale) {
  Tensor& x = a.tensor(0, "a");
  a.expect_float(x, "a");
  Tensor out = a.like(x);
  kern::scale(x, float(a.number(1, "s")), out);
  return a.ret(std::move(out));
}

// axpy(y, x, alpha): y += alpha*x in place (gradient accumulation).
OWLET_OP(axpy) {
  Tensor &y = a.tensor(0, "y"), &x = a.tensor(1, "x");
  a.expect_float(y, "y");
  a.expect_float(x, "x");
  a.expect_same_device(y, "y", x, "x");
  OWLET_CHECK(a, y.numel() == x.numel(), ErrorKind::Shape, "y " + y.describe() + " and x " + x.describe() + " differ in size");
  kern::axpy(y, x, float(a.number_or(2, "alpha", 1)));
  return a.env().Undefined();
}

// sumRows(x, shape) -> the sum of x over its leading axes, with the given trailing shape (bias gradients).
OWLET_OP(sumRows) {
  Tensor& x = a.tensor(0, "x");
  a.expect_float(x, "x");
  Shape s = a.shape(1, "shape");
  int64_t n = shape_numel(s);
  OWLET_CHECK(a, n > 0 && x.numel() % n == 0, ErrorKind::Shape, "cannot reduce " + x.describe() + " to " + shape_str(s));
  Tensor out = a.make(x.dtype, s, x.device());
  kern::sum_rows(x, out);
  return a.ret(std::move(out));
}
