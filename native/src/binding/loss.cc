// Bindings: cross-entropy loss (mean over non-ignored rows) with its gradient.
#include "../core/kernels.h"
#include "registry.h"

using namespace owlet;

// crossEntropy(logits, labels, ignoreIndex = -100) -> [loss f32[1], dlogits]. logits f32 [..., V]; labels i32 with
// logits' leading shape (or flat [rows]). The loss stays a tensor so a device backend need not synchronise.
OWLET_OP(crossEntropy) {
  Tensor &logits = a.tensor(0, "logits"), &labels = a.tensor(1, "labels");
  int64_t ignore = a.integer_or(2, "ignoreIndex", -100);
  a.expect_float(logits, "logits");
  a.expect_dtype(labels, "labels", DType::I32);
  a.expect_same_device(logits, "logits", labels, "labels");
  OWLET_CHECK(a, logits.ndim() >= 2 && logits.cols() > 0, ErrorKind::Shape,
          "logits must be [..., V] with at least 2 dimensions and V > 0, got " + logits.describe());
  Shape lead(logits.shape.begin(), logits.shape.end() - 1);
  bool ok = labels.shape == lead || (labels.ndim() == 1 && labels.numel() == logits.rows());
  OWLET_CHECK(a, ok, ErrorKind::Shape,
          "labels " + labels.describe() + " must have shape " + shape_str(lead) + " to match logits " + logits.describe());
  Tensor loss = a.make(DType::F32, {1}, logits.device());
  Tensor dlogits = a.like(logits);
  kern::cross_entropy(logits, labels, ignore, loss, dlogits);
  return a.ret(std::vector<Tensor>{std::move(loss), std::move(dlogits)});
}

// mulScalarInplace(x, s): x *= s[0] in place, s a one-element f32 tensor (the incoming gradient of a scalar loss).
OWLET_OP(mulScalarInplace) {
  Tensor &x = a.tensor(0, "x"), &s = a.tensor(1, "s");
  a.expect_float(x, "x");
  a.expect_float(s, "s");
  a.expect_same_device(x, "x", s, "s");
  OWLET_CHECK(a, s.numel() == 1, ErrorKind::Shape, "s must hold exactly one element, got " + s.describe());
  kern::mul_scalar_inplace(x, s);
  return a.env().Undefined();
}

// argmaxRows(x) -> i32 [rows]: the index of each row's largest value (first on ties; NaN never wins). x float [..., V].
OWLET_OP(argmaxRows) {
  Tensor& x = a.tensor(0, "x");
  a.expect_float(x, "x");
  OWLET_CHECK(a, x.ndim() >= 1 && x.cols() > 0, ErrorKind::Shape, "x must be [..., V] with V > 0, got " + x.describe());
  Tensor out = a.make(DType::I32, {x.rows()}, x.device());
  kern::argmax_rows(x, out);
  return a.ret(std::move(out));
}
