// Provisional bindings of the CUDA addon, exported as raw_<op> with the signatures lib/native.ts declares for <op>:
// the kernel families whose shared bindings (native/src/binding/) are written on other branches. They exist so that
// the GPU check (scripts/gpu/check.ts) can drive every CUDA kernel from this branch alone; the check prefers the
// real binding when the addon has one. Once every family's binding is merged, this file can go.
// The checks here are enough to keep bad input from reaching a kernel (a typed error, never a device fault).
#include <string>

#include "../binding/registry.h"
#include "../core/kernels.h"

using namespace owlet;

namespace {

Napi::Value ret_opt(Args& a, std::vector<Tensor*> ts) {
  Napi::Array arr = Napi::Array::New(a.env(), ts.size());
  for (size_t i = 0; i < ts.size(); i++)
    arr.Set(uint32_t(i), ts[i] ? a.ret(std::move(*ts[i])) : a.env().Null());
  return arr;
}

void same_device(Args& a, const Tensor& x, const std::vector<const Tensor*>& others) {
  for (const Tensor* t : others)
    if (t) a.expect_same_device(x, "x", *t, "operand");
}

Shape drop_last(const Shape& s) { return Shape(s.begin(), s.end() - (s.empty() ? 0 : 1)); }

void expect_rows(Args& a, const Tensor& t, const char* what, int64_t rows) {
  a.check(t.dtype == DType::F32 && t.numel() == rows, ErrorKind::Shape,
          std::string(what) + " must be f32 with one value per row (" + std::to_string(rows) + "), got " + t.describe());
}

void expect_vec(Args& a, const Tensor* t, const char* what, int64_t n) {
  if (!t) return;
  a.expect_float(*t, what);
  a.check(t->numel() == n, ErrorKind::Shape, std::string(what) + " must hold " + std::to_string(n) + " values, got " + t->describe());
}

struct AttnDims {
  int64_t B, Tq, Tk, H, D;
};
AttnDims attn_check(Args& a, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask) {
  a.expect_float(q, "q");
  a.expect_float(k, "k");
  a.expect_float(v, "v");
  a.expect_rank(q, "q", 4);
  a.expect_rank(k, "k", 4);
  a.expect_same_shape(k, "k", v, "v");
  a.check(k.dim(0) == q.dim(0) && k.dim(2) == q.dim(2) && k.dim(3) == q.dim(3), ErrorKind::Shape,
          "q " + q.describe() + " and k " + k.describe() + " must agree on batch, heads and head dim");
  same_device(a, q, {&k, &v, mask});
  if (mask) {
    a.expect_dtype(*mask, "keyMask", DType::I32);
    a.expect_shape(*mask, "keyMask", {q.dim(0), k.dim(1)});
  }
  return {q.dim(0), q.dim(1), k.dim(1), q.dim(2), q.dim(3)};
}

float prob(Args& a, size_t i, const char* what) {
  double p = a.number(i, what);
  a.check(p >= 0 && p < 1, ErrorKind::Argument, std::string(what) + " must be in [0, 1)");
  return float(p);
}

}  // namespace

OWLET_OP(raw_layerNormForward) {
  Tensor& x = a.tensor(0, "x");
  Tensor *w = a.opt_tensor(1, "w"), *b = a.opt_tensor(2, "b");
  a.expect_float(x, "x");
  a.check(x.ndim() >= 1, ErrorKind::Shape, "x must have at least one dimension");
  expect_vec(a, w, "w", x.cols());
  expect_vec(a, b, "b", x.cols());
  same_device(a, x, {w, b});
  Tensor y = a.like(x), mean = a.make(DType::F32, drop_last(x.shape), x.device()),
         rstd = a.make(DType::F32, drop_last(x.shape), x.device());
  kern::layernorm_fwd(x, w, b, y, mean, rstd, float(a.number(3, "eps")));
  return a.ret(std::vector<Tensor>{std::move(y), std::move(mean), std::move(rstd)});
}

OWLET_OP(raw_layerNormBackward) {
  Tensor &gy = a.tensor(0, "gy"), &x = a.tensor(1, "x");
  Tensor* w = a.opt_tensor(2, "w");
  Tensor &mean = a.tensor(3, "mean"), &rstd = a.tensor(4, "rstd");
  bool need_x = a.boolean(5, "needX"), need_w = a.boolean(6, "needW");
  a.expect_float(x, "x");
  a.expect_same_shape(gy, "gy", x, "x");
  a.expect_dtype(gy, "gy", x.dtype);
  expect_vec(a, w, "w", x.cols());
  expect_rows(a, mean, "mean", x.rows());
  expect_rows(a, rstd, "rstd", x.rows());
  same_device(a, x, {&gy, w, &mean, &rstd});
  Tensor gx, gw, gb;
  if (need_x) gx = a.like(x);
  if (need_w) {
    DType dt = w ? w->dtype : x.dtype;
    gw = a.make(dt, {x.cols()}, x.device());
    gb = a.make(dt, {x.cols()}, x.device());
  }
  kern::layernorm_bwd(gy, x, w, mean, rstd, need_x ? &gx : nullptr, need_w ? &gw : nullptr, need_w ? &gb : nullptr);
  return ret_opt(a, {need_x ? &gx : nullptr, need_w ? &gw : nullptr, need_w ? &gb : nullptr});
}

OWLET_OP(raw_rmsNormForward) {
  Tensor &x = a.tensor(0, "x"), &w = a.tensor(1, "w");
  a.expect_float(x, "x");
  expect_vec(a, &w, "w", x.cols());
  same_device(a, x, {&w});
  Tensor y = a.like(x), rstd = a.make(DType::F32, drop_last(x.shape), x.device());
  kern::rmsnorm_fwd(x, w, y, rstd, float(a.number(2, "eps")));
  return a.ret(std::vector<Tensor>{std::move(y), std::move(rstd)});
}

OWLET_OP(raw_rmsNormBackward) {
  Tensor &gy = a.tensor(0, "gy"), &x = a.tensor(1, "x"), &w = a.tensor(2, "w"), &rstd = a.tensor(3, "rstd");
  bool need_x = a.boolean(4, "needX"), need_w = a.boolean(5, "needW");
  a.expect_float(x, "x");
  a.expect_same_shape(gy, "gy", x, "x");
  a.expect_dtype(gy, "gy", x.dtype);
  expect_vec(a, &w, "w", x.cols());
  expect_rows(a, rstd, "rstd", x.rows());
  same_device(a, x, {&gy, &w, &rstd});
  Tensor gx, gw;
  if (need_x) gx = a.like(x);
  if (need_w) gw = a.make(w.dtype, {x.cols()}, x.device());
  kern::rmsnorm_bwd(gy, x, w, rstd, need_x ? &gx : nullptr, need_w ? &gw : nullptr);
  return ret_opt(a, {need_x ? &gx : nullptr, need_w ? &gw : nullptr});
}

static Napi::Value rope_op(Args& a, bool fwd) {
  Tensor& x = a.tensor(0, "x");
  a.expect_float(x, "x");
  a.expect_rank(x, "x", 4);
  a.check(x.dim(3) % 2 == 0, ErrorKind::Shape, "head dim must be even, got " + x.describe());
  Tensor y = a.like(x);
  int64_t pos0 = a.integer(1, "pos0");
  double theta = a.number(2, "theta");
  a.check(theta > 0, ErrorKind::Argument, "theta must be positive");
  if (fwd) kern::rope_fwd(x, y, pos0, theta);
  else kern::rope_bwd(x, y, pos0, theta);
  return a.ret(std::move(y));
}
OWLET_OP(raw_ropeForward) { return rope_op(a, true); }
OWLET_OP(raw_ropeBackward) { return rope_op(a, false); }

static Napi::Value unary(Args& a, void (*f)(const Tensor&, Tensor&)) {
  Tensor& x = a.tensor(0, "x");
  a.expect_float(x, "x");
  Tensor y = a.like(x);
  f(x, y);
  return a.ret(std::move(y));
}
static Napi::Value unary_bwd(Args& a, void (*f)(const Tensor&, const Tensor&, Tensor&)) {
  Tensor &gy = a.tensor(0, "gy"), &x = a.tensor(1, "x");
  a.expect_float(x, "x");
  a.expect_float(gy, "gy");
  a.expect_same_shape(gy, "gy", x, "x");
  a.expect_same_device(gy, "gy", x, "x");
  Tensor gx = a.like(x);
  f(gy, x, gx);
  return a.ret(std::move(gx));
}
OWLET_OP(raw_quickGeluForward) { return unary(a, kern::quick_gelu_fwd); }
OWLET_OP(raw_quickGeluBackward) { return unary_bwd(a, kern::quick_gelu_bwd); }
OWLET_OP(raw_siluForward) { return unary(a, kern::silu_fwd); }
OWLET_OP(raw_siluBackward) { return unary_bwd(a, kern::silu_bwd); }
OWLET_OP(raw_softmaxForward) { return unary(a, kern::softmax_fwd); }
OWLET_OP(raw_softmaxBackward) { return unary_bwd(a, kern::softmax_bwd); }  // (gy, y)

OWLET_OP(raw_swigluForward) {
  Tensor &g = a.tensor(0, "gate"), &u = a.tensor(1, "up");
  a.expect_float(g, "gate");
  a.expect_float(u, "up");
  a.expect_same_shape(g, "gate", u, "up");
  a.expect_same_device(g, "gate", u, "up");
  Tensor y = a.like(g);
  kern::swiglu_fwd(g, u, y);
  return a.ret(std::move(y));
}
OWLET_OP(raw_swigluBackward) {
  Tensor &gy = a.tensor(0, "gy"), &g = a.tensor(1, "gate"), &u = a.tensor(2, "up");
  a.expect_float(g, "gate");
  a.expect_float(u, "up");
  a.expect_float(gy, "gy");
  a.expect_same_shape(g, "gate", u, "up");
  a.expect_same_shape(gy, "gy", g, "gate");
  same_device(a, g, {&u, &gy});
  Tensor gg = a.like(g), gu = a.like(u);
  kern::swiglu_bwd(gy, g, u, &gg, &gu);
  return a.ret(std::vector<Tensor>{std::move(gg), std::move(gu)});
}

static Napi::Value dropout_op(Args& a, bool fwd) {
  Tensor& x = a.tensor(0, "x");
  a.expect_float(x, "x");
  float p = prob(a, 1, "p");
  uint64_t seed = uint64_t(a.integer(2, "seed"));
  Tensor y = a.like(x);
  if (fwd) kern::dropout_fwd(x, y, p, seed);
  else kern::dropout_bwd(x, y, p, seed);
  return a.ret(std::move(y));
}
OWLET_OP(raw_dropoutForward) { return dropout_op(a, true); }
OWLET_OP(raw_dropoutBackward) { return dropout_op(a, false); }

OWLET_OP(raw_attentionForward) {
  Tensor &q = a.tensor(0, "q"), &k = a.tensor(1, "k"), &v = a.tensor(2, "v");
  Tensor* mask = a.opt_tensor(3, "keyMask");
  AttnDims d = attn_check(a, q, k, v, mask);
  bool causal = a.boolean(4, "causal");
  float scale = float(a.number(5, "scale")), p = prob(a, 6, "dropoutP");
  uint64_t seed = uint64_t(a.integer(7, "seed"));
  Tensor out = a.like(q), lse = a.make(DType::F32, {d.B, d.H, d.Tq}, q.device());
  kern::attention_fwd(q, k, v, mask, causal, scale, p, seed, out, lse);
  return a.ret(std::vector<Tensor>{std::move(out), std::move(lse)});
}

OWLET_OP(raw_attentionBackward) {
  Tensor &q = a.tensor(0, "q"), &k = a.tensor(1, "k"), &v = a.tensor(2, "v"), &out = a.tensor(3, "out"),
         &lse = a.tensor(4, "lse"), &gout = a.tensor(5, "gout");
  Tensor* mask = a.opt_tensor(6, "keyMask");
  AttnDims d = attn_check(a, q, k, v, mask);
  a.expect_same_shape(out, "out", q, "q");
  a.expect_same_shape(gout, "gout", q, "q");
  a.expect_float(out, "out");
  a.expect_float(gout, "gout");
  a.expect_dtype(lse, "lse", DType::F32);
  a.expect_shape(lse, "lse", {d.B, d.H, d.Tq});
  same_device(a, q, {&out, &lse, &gout});
  bool causal = a.boolean(7, "causal");
  float scale = float(a.number(8, "scale")), p = prob(a, 9, "dropoutP");
  uint64_t seed = uint64_t(a.integer(10, "seed"));
  Tensor gq = a.like(q), gk = a.like(k), gv = a.like(v);
  kern::attention_bwd(q, k, v, out, lse, gout, mask, causal, scale, p, seed, gq, gk, gv);
  return a.ret(std::vector<Tensor>{std::move(gq), std::move(gk), std::move(gv)});
}

static void lora_check(Args& a, const Tensor& x, const Tensor& w, const Tensor& A, const Tensor& B) {
  for (auto [t, n] : {std::pair<const Tensor*, const char*>{&x, "x"}, {&w, "w"}, {&A, "a"}, {&B, "b"}})
    a.expect_float(*t, n);
  a.expect_rank(w, "w", 2);
  a.expect_rank(A, "a", 2);
  a.expect_rank(B, "b", 2);
  int64_t K = x.cols(), N = w.dim(0), r = A.dim(0);
  a.check(w.dim(1) == K && A.dim(1) == K && B.dim(0) == N && B.dim(1) == r, ErrorKind::Shape,
          "LoRA shapes do not fit: x " + x.describe() + ", w " + w.describe() + " (want [N, K]), a " + A.describe() +
              " (want [r, K]), b " + B.describe() + " (want [N, r])");
  same_device(a, x, {&w, &A, &B});
}

OWLET_OP(raw_loraForward) {
  Tensor &x = a.tensor(0, "x"), &w = a.tensor(1, "w"), &A = a.tensor(2, "a"), &B = a.tensor(3, "b");
  lora_check(a, x, w, A, B);
  float s = float(a.number(4, "s")), p = prob(a, 5, "dropoutP");
  uint64_t seed = uint64_t(a.integer(6, "seed"));
  Shape ys = x.shape, xs = x.shape;
  ys.back() = w.dim(0);
  xs.back() = A.dim(0);
  Tensor y = a.make(x.dtype, ys, x.device()), xa = a.make(x.dtype, xs, x.device());
  kern::lora_fwd(x, w, A, B, s, p, seed, y, xa);
  return a.ret(std::vector<Tensor>{std::move(y), std::move(xa)});
}

OWLET_OP(raw_loraBackward) {
  Tensor &gy = a.tensor(0, "gy"), &x = a.tensor(1, "x"), &w = a.tensor(2, "w"), &A = a.tensor(3, "a"),
         &B = a.tensor(4, "b"), &xa = a.tensor(5, "xa");
  lora_check(a, x, w, A, B);
  a.expect_float(gy, "gy");
  a.expect_float(xa, "xa");
  a.check(gy.rows() == x.rows() && gy.cols() == w.dim(0), ErrorKind::Shape,
          "gy " + gy.describe() + " must be [rows of x, N]");
  a.check(xa.rows() == x.rows() && xa.cols() == A.dim(0), ErrorKind::Shape, "xa " + xa.describe() + " must be [rows of x, r]");
  same_device(a, x, {&gy, &xa});
  float s = float(a.number(6, "s")), p = prob(a, 7, "dropoutP");
  uint64_t seed = uint64_t(a.integer(8, "seed"));
  bool need_x = a.boolean(9, "needX");
  Tensor gx, ga = a.like(A), gb = a.like(B);
  if (need_x) gx = a.like(x);
  kern::lora_bwd(gy, x, w, A, B, xa, s, p, seed, need_x ? &gx : nullptr, ga, gb);
  return ret_opt(a, {need_x ? &gx : nullptr, &ga, &gb});
}

OWLET_OP(raw_crossEntropy) {
  Tensor &logits = a.tensor(0, "logits"), &labels = a.tensor(1, "labels");
  a.expect_float(logits, "logits");
  a.expect_rank(logits, "logits", 2);
  a.expect_dtype(labels, "labels", DType::I32);
  a.check(labels.numel() == logits.dim(0), ErrorKind::Shape,
          "labels " + labels.describe() + " must hold one label per row of logits " + logits.describe());
  a.expect_same_device(logits, "logits", labels, "labels");
  int64_t ignore = a.integer(2, "ignoreIndex");
  Tensor loss = a.make(DType::F32, {1}, logits.device()), dlogits = a.like(logits);
  kern::cross_entropy(logits, labels, ignore, loss, dlogits);
  return a.ret(std::vector<Tensor>{std::move(loss), std::move(dlogits)});
}

OWLET_OP(raw_adamw) {
  std::vector<Tensor*> params = a.tensors(0, "params"), grads = a.tensors(1, "grads"), m = a.tensors(2, "m"),
                       v = a.tensors(3, "v");
  std::vector<double> wd = a.numbers(4, "weightDecay");
  a.check(grads.size() == params.size() && m.size() == params.size() && v.size() == params.size() &&
              wd.size() == params.size(),
          ErrorKind::Argument, "params, grads, m, v and weightDecay must have the same length");
  std::vector<const Tensor*> cg;
  std::vector<double> wdf;
  for (size_t i = 0; i < params.size(); i++) {
    a.expect_dtype(*params[i], "params[i]", DType::F32);
    a.expect_dtype(*m[i], "m[i]", DType::F32);
    a.expect_dtype(*v[i], "v[i]", DType::F32);
    a.expect_float(*grads[i], "grads[i]");
    a.check(grads[i]->numel() == params[i]->numel() && m[i]->numel() == params[i]->numel() &&
                v[i]->numel() == params[i]->numel(),
            ErrorKind::Shape, "parameter " + std::to_string(i) + " " + params[i]->describe() + " and its state differ in size");
    same_device(a, *params[0], {params[i], grads[i], m[i], v[i]});
    cg.push_back(grads[i]);
    wdf.push_back(wd[i]);
  }
  kern::AdamWHyper h{a.number(5, "lr"), a.number(6, "beta1"), a.number(7, "beta2"), a.number(8, "eps"),
                     a.integer(9, "step")};
  a.check(h.step >= 1, ErrorKind::Argument, "step must be >= 1");
  kern::adamw(params, cg, m, v, wdf, h);
  return a.env().Undefined();
}

OWLET_OP(raw_mulScalarInplace) {
  Tensor &x = a.tensor(0, "x"), &s = a.tensor(1, "s");
  a.expect_float(x, "x");
  a.expect_float(s, "s");
  a.check(s.numel() == 1, ErrorKind::Shape, "s must hold one value, got " + s.describe());
  a.expect_same_device(x, "x", s, "s");
  kern::mul_scalar_inplace(x, s);
  return a.env().Undefined();
}

static std::vector<const Tensor*> float_list(Args& a, size_t i, const char* what) {
  std::vector<const Tensor*> out;
  for (Tensor* t : a.tensors(i, what)) {
    a.expect_float(*t, what);
    out.push_back(t);
  }
  return out;
}
OWLET_OP(raw_sumSquares) { return a.ret_number(kern::sum_squares(float_list(a, 0, "xs"))); }
OWLET_OP(raw_scaleInplace) {
  std::vector<Tensor*> xs = a.tensors(0, "xs");
  for (Tensor* t : xs) a.expect_float(*t, "xs");
  kern::scale_inplace(xs, float(a.number(1, "s")));
  return a.env().Undefined();
}
OWLET_OP(raw_allFinite) { return Napi::Boolean::New(a.env(), kern::all_finite(float_list(a, 0, "xs"))); }
