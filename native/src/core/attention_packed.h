// Packed self-attention (kern::attention_qkv_fwd/bwd: q, k, v read out of one [B, T, H, 3, D] tensor, their
// gradients written into one) for the paths that have no strided kernels: the CPU backend, and on CUDA whatever the
// tensor-core kernels do not take (f32, head dims other than 64 and 128, OWLET_ATTENTION=simple). q, k and v are
// copied out into contiguous [B, T, H, D] tensors, the unpacked entry points run, and the three gradients are
// interleaved back: the numbers of split + attention bit for bit, at the cost of the copies the packed call exists to
// save where it matters (bf16 on a GPU). Written once over kern::slice/concat/attention_*, which every backend has.
#pragma once
#include <utility>

#include "kernels.h"

namespace owlet::kern::packed {

// t's storage under another shape of the same element count (a contiguous view, as a reshape).
inline Tensor view(const Tensor& t, Shape shape) {
  Tensor v;
  v.storage = t.storage;
  v.dtype = t.dtype;
  v.shape = std::move(shape);
  return v;
}

// Part `which` (0 q, 1 k, 2 v) of qkv [B, T, H, 3, D] as a contiguous [B, T, H, D] copy.
inline Tensor part(const Tensor& qkv, int which) {
  const int64_t B = qkv.dim(0), T = qkv.dim(1), H = qkv.dim(2), D = qkv.dim(4);
  Tensor y(qkv.dtype, {B, T, H, 1, D}, qkv.device());
  slice(qkv, 3, which, y);
  return view(y, {B, T, H, D});
}

inline void forward_via_copies(const Tensor& qkv, const Tensor* key_mask, bool causal, float scale, float dropout_p,
                               uint64_t seed, Tensor& out, Tensor& lse) {
  const Tensor q = part(qkv, 0), k = part(qkv, 1), v = part(qkv, 2);
  attention_fwd(q, k, v, key_mask, causal, scale, dropout_p, seed, out, lse);
}

inline void backward_via_copies(const Tensor& qkv, const Tensor& out, const Tensor& lse, const Tensor& gout,
                                const Tensor* key_mask, bool causal, float scale, float dropout_p, uint64_t seed,
                                Tensor& gqkv) {
  const Tensor q = part(qkv, 0), k = part(qkv, 1), v = part(qkv, 2);
  const int64_t B = qkv.dim(0), T = qkv.dim(1), H = qkv.dim(2), D = qkv.dim(4);
  Tensor gq(gqkv.dtype, {B, T, H, D}, gqkv.device()), gk(gqkv.dtype, {B, T, H, D}, gqkv.device()),
      gv(gqkv.dtype, {B, T, H, D}, gqkv.device());
  attention_bwd(q, k, v, out, lse, gout, key_mask, causal, scale, dropout_p, seed, gq, gk, gv);
  const Tensor a = view(gq, {B, T, H, 1, D}), b = view(gk, {B, T, H, 1, D}), c = view(gv, {B, T, H, 1, D});
  concat({&a, &b, &c}, 3, gqkv);
}

}  // namespace owlet::kern::packed
