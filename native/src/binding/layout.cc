// Bindings: concat / slice along an axis, row gather / scatter, patchify.
#include "../core/kernels.h"
#include "registry.h"

using namespace owlet;

static int axis_arg(Args& a, size_t i, const Tensor& t) {
  int64_t ax = a.integer(i, "axis");
  if (ax < 0) ax += t.ndim();
  OWLET_CHECK(a, ax >= 0 && ax < t.ndim(), ErrorKind::Argument, "axis out of range for " + t.describe());
  return int(ax);
}

// concat(xs, axis) -> tensors joined along axis; every other dimension must agree.
OWLET_OP(concat) {
  std::vector<Tensor*> xs = a.tensors(0, "xs");
  OWLET_CHECK(a, !xs.empty(), ErrorKind::Argument, "xs must not be empty");
  int axis = axis_arg(a, 1, *xs[0]);
  Shape out = xs[0]->shape;
  out[size_t(axis)] = 0;
  std::vector<const Tensor*> cx;
  for (Tensor* x : xs) {
    OWLET_CHECK(a, x->dtype == xs[0]->dtype && x->device() == xs[0]->device(), ErrorKind::DType,
            "all inputs must share dtype and device: " + xs[0]->describe() + " vs " + x->describe());
    bool ok = x->ndim() == xs[0]->ndim();
    for (int i = 0; ok && i < x->ndim(); i++) ok = i == axis || x->shape[size_t(i)] == xs[0]->shape[size_t(i)];
    OWLET_CHECK(a, ok, ErrorKind::Shape, "cannot concatenate " + xs[0]->describe() + " and " + x->describe() + " on axis " + std::to_string(axis));
    out[size_t(axis)] += x->shape[size_t(axis)];
    cx.push_back(x);
  }
  Tensor o = a.make(xs[0]->dtype, out, xs[0]->device());
  kern::concat(cx, axis, o);
  return a.ret(std::move(o));
}

// slice(x, axis, start, length)
OWLET_OP(slice) {
  Tensor& x = a.tensor(0, "x");
  int axis = axis_arg(a, 1, x);
  int64_t start = a.integer(2, "start"), len = a.integer(3, "length");
  // (written so that no sum can wrap around: start and len each at most the axis length)
  OWLET_CHECK(a, start >= 0 && len >= 0 && start <= x.shape[size_t(axis)] && len <= x.shape[size_t(axis)] - start, ErrorKind::Shape,
          "slice of " + std::to_string(len) + " from " + std::to_string(start) + " is outside axis " + std::to_string(axis) + " of " + x.describe());
  Shape s = x.shape;
  s[size_t(axis)] = len;
  Tensor o = a.make(x.dtype, s, x.device());
  kern::slice(x, axis, start, o);
  return a.ret(std::move(o));
}

// sliceAssign(dst, src, axis, start, accumulate = false): dst[.., start:start+len, ..] (+)= src, in place.
OWLET_OP(sliceAssign) {
  Tensor &dst = a.tensor(0, "dst"), &src = a.tensor(1, "src");
  int axis = axis_arg(a, 2, dst);
  int64_t start = a.integer(3, "start");
  bool acc = a.boolean_or(4, "accumulate", false);
  OWLET_CHECK(a, src.ndim() == dst.ndim() && src.dtype == dst.dtype, ErrorKind::Shape, "src " + src.describe() + " does not fit dst " + dst.describe());
  for (int i = 0; i < dst.ndim(); i++)
    OWLET_CHECK(a, i == axis || src.shape[size_t(i)] == dst.shape[size_t(i)], ErrorKind::Shape, "src " + src.describe() + " does not fit dst " + dst.describe());
  OWLET_CHECK(a, start >= 0 && start <= dst.shape[size_t(axis)] && src.shape[size_t(axis)] <= dst.shape[size_t(axis)] - start, ErrorKind::Shape,
          "src " + src.describe() + " at " + std::to_string(start) + " overruns axis " + std::to_string(axis) + " of " + dst.describe());
  if (acc) a.expect_float(dst, "dst");
  kern::slice_assign(dst, src, axis, start, acc);
  return a.env().Undefined();
}

// gatherRows(src [R, C...], idx i32 [n...]) -> [n..., C...] : rows of src (embedding lookup).
OWLET_OP(gatherRows) {
  Tensor &src = a.tensor(0, "src"), &idx = a.tensor(1, "idx");
  a.expect_dtype(idx, "idx", DType::I32);
  OWLET_CHECK(a, src.ndim() >= 1, ErrorKind::Shape, "src must have at least 1 dimension");
  Shape s = idx.shape;
  s.insert(s.end(), src.shape.begin() + 1, src.shape.end());
  Tensor o = a.make(src.dtype, s, src.device());
  Tensor src2 = src;
  src2.shape = {src.dim(0), src.numel() / std::max<int64_t>(1, src.dim(0))};
  kern::gather_rows(src2, idx, o);
  return a.ret(std::move(o));
}

// scatterRows(dst [R, C...], idx i32 [n], src [n, C...], accumulate): dst[idx[i]] (+)= src[i], in place.
OWLET_OP(scatterRows) {
  Tensor &dst = a.tensor(0, "dst"), &idx = a.tensor(1, "idx"), &src = a.tensor(2, "src");
  bool acc = a.boolean_or(3, "accumulate", false);
  a.expect_dtype(idx, "idx", DType::I32);
  OWLET_CHECK(a, dst.ndim() >= 1, ErrorKind::Shape, "dst must have at least 1 dimension, got " + dst.describe());
  int64_t cols = dst.numel() / std::max<int64_t>(1, dst.dim(0));
  OWLET_CHECK(a, src.numel() == idx.numel() * cols && src.dtype == dst.dtype, ErrorKind::Shape,
          "src " + src.describe() + " must hold " + std::to_string(idx.numel()) + " rows of dst " + dst.describe());
  if (acc) a.expect_float(dst, "dst");
  // (an index overwritten by an earlier row would send a later row outside dst)
  a.expect_not_aliased(dst, "dst", idx, "idx");
  a.expect_not_aliased(dst, "dst", src, "src");
  Tensor d2 = dst;
  d2.shape = {dst.dim(0), cols};
  kern::scatter_rows(d2, idx, src, acc);
  return a.env().Undefined();
}

// patchify(img [N, C, H, W], p) -> [N, (H/p)(W/p), C·p·p]
OWLET_OP(patchify) {
  Tensor& img = a.tensor(0, "img");
  int64_t p = a.integer(1, "patch");
  a.expect_float(img, "img");
  a.expect_rank(img, "img", 4);
  OWLET_CHECK(a, p > 0 && p <= img.dim(2) && p <= img.dim(3) && img.dim(2) % p == 0 && img.dim(3) % p == 0, ErrorKind::Shape,
          "image " + img.describe() + " is not a whole number of " + std::to_string(p) + "-pixel patches");
  Tensor o = a.make(img.dtype, {img.dim(0), (img.dim(2) / p) * (img.dim(3) / p), img.dim(1) * p * p}, img.device());
  if (o.numel()) kern::patchify(img, int(p), o);
  return a.ret(std::move(o));
}
