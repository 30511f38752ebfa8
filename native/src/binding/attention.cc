// Bindings: fused attention forward and backward. q [B, Tq, H, D], k/v [B, Tk, H, D], optional key mask i32 [B, Tk];
// and packed self-attention, q|k|v in one qkv [B, T, H, 3, D] (the fused projection's output) and its gradient in one.
#include "../core/kernels.h"
#include "registry.h"

#include <cmath>

using namespace owlet;

namespace {

struct Options {
  bool causal;
  float scale, dropout_p;
  uint64_t seed;
};

// Checks q, k, v (and the mask) against each other; every message names the shapes involved.
void check_qkv(Args& a, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask) {
  a.expect_float(q, "q");  // f32 on the CPU; f32 or bf16 on CUDA
  a.expect_float(k, "k");
  a.expect_float(v, "v");
  a.expect_rank(q, "q [B, Tq, H, D]", 4);
  a.expect_rank(k, "k [B, Tk, H, D]", 4);
  a.expect_rank(v, "v [B, Tk, H, D]", 4);
  a.expect_same_device(q, "q", k, "k");
  a.expect_same_device(q, "q", v, "v");
  auto all = [&] { return "q " + q.describe() + ", k " + k.describe() + ", v " + v.describe(); };
  OWLET_CHECK(a, k.shape == v.shape, ErrorKind::Shape, "k and v must have the same shape [B, Tk, H, D]: " + all());
  OWLET_CHECK(a, q.dim(0) == k.dim(0), ErrorKind::Shape, "q and k/v have different batch sizes: " + all());
  OWLET_CHECK(a, q.dim(2) == k.dim(2), ErrorKind::Shape, "q and k/v have different head counts: " + all());
  OWLET_CHECK(a, q.dim(3) == k.dim(3), ErrorKind::Shape, "q and k/v have different head dimensions: " + all());
  OWLET_CHECK(a, q.dim(3) > 0, ErrorKind::Shape, "the head dimension must be positive: " + all());
  if (mask) {
    a.expect_dtype(*mask, "keyMask", DType::I32);
    a.expect_same_device(q, "q", *mask, "keyMask");
    OWLET_CHECK(a, (mask->shape == Shape{k.dim(0), k.dim(1)}), ErrorKind::Shape,
            "keyMask must be [B, Tk] = " + shape_str({k.dim(0), k.dim(1)}) + ", got " + mask->describe() + " for " + all());
  }
}

// Checks a packed qkv [B, T, H, 3, D] (and the mask [B, T]).
void check_packed(Args& a, const Tensor& qkv, const Tensor* mask) {
  a.expect_float(qkv, "qkv");  // f32 on the CPU; f32 or bf16 on CUDA
  a.expect_rank(qkv, "qkv [B, T, H, 3, D]", 5);
  OWLET_CHECK(a, qkv.dim(3) == 3, ErrorKind::Shape,
          "qkv must be [B, T, H, 3, D] (q, k, v of each head side by side), got " + qkv.describe());
  OWLET_CHECK(a, qkv.dim(4) > 0, ErrorKind::Shape, "the head dimension must be positive: qkv " + qkv.describe());
  if (mask) {
    a.expect_dtype(*mask, "keyMask", DType::I32);
    a.expect_same_device(qkv, "qkv", *mask, "keyMask");
    OWLET_CHECK(a, (mask->shape == Shape{qkv.dim(0), qkv.dim(1)}), ErrorKind::Shape,
            "keyMask must be [B, T] = " + shape_str({qkv.dim(0), qkv.dim(1)}) + ", got " + mask->describe() +
                " for qkv " + qkv.describe());
  }
}

Options options(Args& a, size_t first) {
  Options o;
  o.causal = a.boolean(first, "causal");
  double scale = a.number(first + 1, "scale");
  OWLET_CHECK(a, std::isfinite(scale), ErrorKind::Argument, "scale must be finite, got " + std::to_string(scale));
  const float p = a.dropout_p(first + 2, "dropoutP");
  int64_t seed = a.integer(first + 3, "seed");
  OWLET_CHECK(a, seed >= 0, ErrorKind::Argument, "seed must be a non-negative integer, got " + std::to_string(seed));
  o.scale = float(scale);
  o.dropout_p = p;
  o.seed = uint64_t(seed);
  return o;
}

// A backward's saved forward results and incoming gradient: float out and gout, f32 lse, on `ref`'s device.
void check_saved(Args& a, const Tensor& ref, const char* ref_name, const Tensor& out, const Tensor& lse,
                 const Tensor& gout) {
  a.expect_float(out, "out");
  a.expect_dtype(lse, "lse", DType::F32);
  a.expect_float(gout, "gout");
  a.expect_same_device(ref, ref_name, out, "out");
  a.expect_same_device(ref, ref_name, lse, "lse");
  a.expect_same_device(ref, ref_name, gout, "gout");
}

}  // namespace

// attentionForward(q, k, v, keyMask | null, causal, scale, dropoutP, seed) -> [out [B, Tq, H, D], lse f32 [B, H, Tq]]
OWLET_OP(attentionForward) {
  Tensor &q = a.tensor(0, "q"), &k = a.tensor(1, "k"), &v = a.tensor(2, "v");
  Tensor* mask = a.opt_tensor(3, "keyMask");
  check_qkv(a, q, k, v, mask);
  Options o = options(a, 4);
  Tensor out = a.like(q);
  Tensor lse = a.make(DType::F32, {q.dim(0), q.dim(2), q.dim(1)}, q.device());
  kern::attention_fwd(q, k, v, mask, o.causal, o.scale, o.dropout_p, o.seed, out, lse);
  return a.ret(std::vector<Tensor>{std::move(out), std::move(lse)});
}

// attentionBackward(q, k, v, out, lse, gout, keyMask | null, causal, scale, dropoutP, seed) -> [gq, gk, gv]
OWLET_OP(attentionBackward) {
  Tensor &q = a.tensor(0, "q"), &k = a.tensor(1, "k"), &v = a.tensor(2, "v");
  Tensor &out = a.tensor(3, "out"), &lse = a.tensor(4, "lse"), &gout = a.tensor(5, "gout");
  Tensor* mask = a.opt_tensor(6, "keyMask");
  check_qkv(a, q, k, v, mask);
  check_saved(a, q, "q", out, lse, gout);
  OWLET_CHECK(a, out.shape == q.shape, ErrorKind::Shape, "out " + out.describe() + " must have q's shape " + q.describe());
  OWLET_CHECK(a, gout.shape == q.shape, ErrorKind::Shape, "gout " + gout.describe() + " must have q's shape " + q.describe());
  Shape lse_shape{q.dim(0), q.dim(2), q.dim(1)};
  OWLET_CHECK(a, lse.shape == lse_shape, ErrorKind::Shape,
          "lse must be [B, H, Tq] = " + shape_str(lse_shape) + " for q " + q.describe() + ", got " + lse.describe());
  Options o = options(a, 7);
  Tensor gq = a.like(q), gk = a.like(k), gv = a.like(v);
  kern::attention_bwd(q, k, v, out, lse, gout, mask, o.causal, o.scale, o.dropout_p, o.seed, gq, gk, gv);
  return a.ret(std::vector<Tensor>{std::move(gq), std::move(gk), std::move(gv)});
}

// attentionQkvForward(qkv, keyMask | null, causal, scale, dropoutP, seed) -> [out [B, T, H, D], lse f32 [B, H, T]]:
// attentionForward of qkv's q, k and v, read in place where the backend can.
OWLET_OP(attentionQkvForward) {
  Tensor& qkv = a.tensor(0, "qkv");
  Tensor* mask = a.opt_tensor(1, "keyMask");
  check_packed(a, qkv, mask);
  Options o = options(a, 2);
  const int64_t B = qkv.dim(0), T = qkv.dim(1), H = qkv.dim(2), D = qkv.dim(4);
  Tensor out = a.make(qkv.dtype, {B, T, H, D}, qkv.device());
  Tensor lse = a.make(DType::F32, {B, H, T}, qkv.device());
  kern::attention_qkv_fwd(qkv, mask, o.causal, o.scale, o.dropout_p, o.seed, out, lse);
  return a.ret(std::vector<Tensor>{std::move(out), std::move(lse)});
}

// attentionQkvBackward(qkv, out, lse, gout, keyMask | null, causal, scale, dropoutP, seed) -> gqkv [B, T, H, 3, D]
OWLET_OP(attentionQkvBackward) {
  Tensor &qkv = a.tensor(0, "qkv"), &out = a.tensor(1, "out"), &lse = a.tensor(2, "lse"), &gout = a.tensor(3, "gout");
  Tensor* mask = a.opt_tensor(4, "keyMask");
  check_packed(a, qkv, mask);
  check_saved(a, qkv, "qkv", out, lse, gout);
  const Shape per_head{qkv.dim(0), qkv.dim(1), qkv.dim(2), qkv.dim(4)}, lse_shape{qkv.dim(0), qkv.dim(2), qkv.dim(1)};
  OWLET_CHECK(a, out.shape == per_head, ErrorKind::Shape,
          "out must be [B, T, H, D] = " + shape_str(per_head) + " for qkv " + qkv.describe() + ", got " + out.describe());
  OWLET_CHECK(a, gout.shape == per_head, ErrorKind::Shape,
          "gout must be [B, T, H, D] = " + shape_str(per_head) + " for qkv " + qkv.describe() + ", got " + gout.describe());
  OWLET_CHECK(a, lse.shape == lse_shape, ErrorKind::Shape,
          "lse must be [B, H, T] = " + shape_str(lse_shape) + " for qkv " + qkv.describe() + ", got " + lse.describe());
  Options o = options(a, 5);
  Tensor gqkv = a.like(qkv);
  kern::attention_qkv_bwd(qkv, out, lse, gout, mask, o.causal, o.scale, o.dropout_p, o.seed, gqkv);
  return a.ret(std::move(gqkv));
}
