// The kernel contract: every math entry point of the runtime, by family. The binding (native/src/binding) checks
// arguments and allocates outputs, then calls these. The CPU addon defines them in native/src/cpu/<family>.cc, the
// CUDA addon in native/src/cuda/<family>.cu; a family a backend lacks throws Error(NotImplemented).
//
// Conventions: tensors are contiguous; shapes were validated by the binding; "rows" means numel / last dim.
// Attention tensors use the layout the linear layers produce, [B, T, H, D], so no transpose pass is needed.
// Dropout masks are a pure function of (seed, element index), so a backward pass regenerates them instead of storing.
#pragma once
#include <cstdint>
#include <vector>

#include "tensor.h"

namespace owlet::kern {

// ---- tensor (tensor.cc) ----
void fill(Tensor& x, double value);
void copy_convert(const Tensor& src, Tensor& dst);  // same numel; converts between any two dtypes
// copy_convert of every pair (src[i] -> dst[i]); on a GPU the f32<->bf16 pairs go in one launch (working copies).
void copy_convert_many(const std::vector<const Tensor*>& src, const std::vector<Tensor*>& dst);
void upload(Tensor& dst, const void* host_src);          // host bytes -> tensor (dst.nbytes() bytes)
// A bf16 tensor from host f32 values, rounded to nearest even on the host (core/dtype.h f32_to_bf16, as a cast
// rounds): a batch's pixels in one pass, and half the bytes to move to a device, instead of an f32 tensor, a cast, a
// copy back into JS and an upload.
void upload_f32_as_bf16(Tensor& dst, const float* host_src);
void download(const Tensor& src, void* host_dst);        // tensor -> host bytes
void synchronize();                                      // waits for queued work (no-op on the CPU)
// Device timeline, for profiling: a mark queued on device d behind everything queued there so far, and the times the
// device reached each mark since the last read (ms after the first mark), read after waiting for the last. On the CPU
// a mark is the host time of the call (its kernels have finished when they return).
void timeline_mark(Device d);
std::vector<double> timeline_read(Device d);  // and forgets the marks
// Copies of tensors to the host queued now, behind the work queued so far, and read later: the trainer queues a
// step's losses and control block right after the step's update and reads them after it has queued the next step's
// forward and backward, so it waits for that update only, not for the work queued behind it (a download waits for
// the whole queue). read_queue returns a ticket; read_take waits for that ticket's copies only, hands each tensor's
// bytes to `take` in order and forgets the ticket; read_drop forgets it unread (after its copies land). The tensors
// may be freed once read_queue returns. On the CPU the bytes are copied at read_queue.
using ReadSink = void (*)(void* ctx, size_t i, const void* bytes, size_t n);
uint64_t read_queue(const std::vector<const Tensor*>& xs);
void read_take(uint64_t ticket, ReadSink take, void* ctx);
void read_drop(uint64_t ticket);

// ---- elementwise (elementwise.cc) ----
// out = alpha*a + beta*b; b is either a's shape or a suffix of it (broadcast over leading axes).
void add(const Tensor& a, const Tensor& b, Tensor& out, float alpha, float beta);
// out = a*b, same broadcast rule.
void mul(const Tensor& a, const Tensor& b, Tensor& out);
void scale(const Tensor& a, float s, Tensor& out);
void axpy(Tensor& y, const Tensor& x, float alpha);  // y += alpha*x (same numel)
// out[c] = sum over rows of x[r, c], x viewed as [rows, out.numel()].
void sum_rows(const Tensor& x, Tensor& out);

// ---- gemm (gemm.cc) ----
// c = alpha * op(a) op(b) + beta * c. a: [batch..., M, K] (or [K, M] per matrix when ta); b: same batch or 2-D
// (broadcast to every batch); c: [batch..., M, N].
void matmul(const Tensor& a, const Tensor& b, Tensor& c, bool ta, bool tb, float alpha, float beta);
// y = x wᵀ + bias (bias added to every row): x [rows, K], w [N, K], bias [N], y [rows, N]. On a GPU the bias lands in
// the GEMM's epilogue (no second pass over y) where cuBLASLt takes the shape.
void linear_bias(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y);
// A linear layer's weight gradient gw = gyᵀ x (gy [rows, N], x [rows, K], gw [N, K]) and, when gb is given, its bias
// gradient gb[n] = Σ_rows gy[r, n]. On a GPU the bias gradient comes from the GEMM's epilogue (cuBLASLt's BGRADB: gy
// is read once, by the GEMM) where cuBLASLt takes the shape, else from sum_rows.
void linear_weight_grad(const Tensor& gy, const Tensor& x, Tensor& gw, Tensor* gb);

// ---- sequence layout (layout.cc) ----
// Tensors viewed as [outer, len_i, inner] around `axis`.
void concat(const std::vector<const Tensor*>& xs, int axis, Tensor& out);
void slice(const Tensor& x, int axis, int64_t start, Tensor& out);                            // out.len along axis
void slice_assign(Tensor& dst, const Tensor& src, int axis, int64_t start, bool accumulate);  // dst[..start+len..] (+)= src
// Rows of the last axis: out[i, :] = src[idx[i], :] (idx i32). Embedding lookup is gather_rows on the weight.
void gather_rows(const Tensor& src, const Tensor& idx, Tensor& out);
// dst[idx[i], :] (+)= src[i, :]; with accumulate, repeated indices sum (embedding gradient).
void scatter_rows(Tensor& dst, const Tensor& idx, const Tensor& src, bool accumulate);
// [N, C, H, W] images to [N, (H/p)*(W/p), C*p*p] patches, row-major over the patch grid (conv as a GEMM).
void patchify(const Tensor& img, int p, Tensor& out);

// ---- norms (norm.cc) ----  fp32 statistics, mean/rstd saved per row
// With `residual`, the forward first forms sum = x + residual (stored in x's dtype, as an add would) and normalises
// sum: a pre-norm transformer's residual add fused with the norm that follows it. With `gx_add`, the backward adds
// it to gx in the same pass (the residual stream's gradient from its other uses), rounded as a separate add would.
void layernorm_fwd(const Tensor& x, const Tensor* w, const Tensor* b, Tensor& y, Tensor& mean, Tensor& rstd, float eps,
                   const Tensor* residual = nullptr, Tensor* sum = nullptr);
void layernorm_bwd(const Tensor& gy, const Tensor& x, const Tensor* w, const Tensor& mean, const Tensor& rstd,
                   Tensor* gx, Tensor* gw, Tensor* gb, const Tensor* gx_add = nullptr);
void rmsnorm_fwd(const Tensor& x, const Tensor& w, Tensor& y, Tensor& rstd, float eps, const Tensor* residual = nullptr,
                 Tensor* sum = nullptr);
void rmsnorm_bwd(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor* gx, Tensor* gw,
                 const Tensor* gx_add = nullptr);

// ---- rope (rope.cc) ----  x: [B, T, H, D], HF rotate-half, position of token t = pos0 + t, freq in float64
void rope_fwd(const Tensor& x, Tensor& y, int64_t pos0, double theta);
void rope_bwd(const Tensor& gy, Tensor& gx, int64_t pos0, double theta);

// ---- activations (act.cc) ----
void quick_gelu_fwd(const Tensor& x, Tensor& y);
void quick_gelu_bwd(const Tensor& gy, const Tensor& x, Tensor& gx);
// quick_gelu_bwd that also writes the forward's output y again (what a layer that did not keep it needs for its
// weight gradient): one pass over x instead of two, the same numbers as quick_gelu_fwd and quick_gelu_bwd.
void quick_gelu_bwd_fwd(const Tensor& gy, const Tensor& x, Tensor& gx, Tensor& y);
void silu_fwd(const Tensor& x, Tensor& y);
void silu_bwd(const Tensor& gy, const Tensor& x, Tensor& gx);
void swiglu_fwd(const Tensor& gate, const Tensor& up, Tensor& y);  // silu(gate) * up
void swiglu_bwd(const Tensor& gy, const Tensor& gate, const Tensor& up, Tensor* ggate, Tensor* gup);
void softmax_fwd(const Tensor& x, Tensor& y);  // over the last axis
void softmax_bwd(const Tensor& gy, const Tensor& y, Tensor& gx);
void dropout_fwd(const Tensor& x, Tensor& y, float p, uint64_t seed);  // inverted dropout, scale 1/(1-p)
void dropout_bwd(const Tensor& gy, Tensor& gx, float p, uint64_t seed);

// ---- attention (attention.cc) ----
// q: [B, Tq, H, D]; k, v: [B, Tk, H, D]; out: [B, Tq, H, D]; lse: [B, H, Tq] (f32 log-sum-exp of scaled scores).
// key_mask: optional [B, Tk] (i32, nonzero = attend). causal aligns the last query with the last key
// (query i sees keys j <= i + Tk - Tq). Dropout on the probabilities with probability p (training only).
void attention_fwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_mask, bool causal, float scale,
                   float dropout_p, uint64_t seed, Tensor& out, Tensor& lse);
void attention_bwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                   const Tensor& gout, const Tensor* key_mask, bool causal, float scale, float dropout_p, uint64_t seed,
                   Tensor& gq, Tensor& gk, Tensor& gv);
// Packed self-attention (Tq = Tk = T): qkv [B, T, H, 3, D] holds per token and head [q | k | v] (the fused q|k|v
// projection's output, viewed), out [B, T, H, D], lse [B, H, T], gqkv [B, T, H, 3, D] (all three gradients, in
// qkv's layout); the rest as attention_fwd/bwd, whose results these equal. The tensor-core kernels read q, k, v and
// write their gradients in place; other paths go through contiguous copies (core/attention_packed.h).
void attention_qkv_fwd(const Tensor& qkv, const Tensor* key_mask, bool causal, float scale, float dropout_p,
                       uint64_t seed, Tensor& out, Tensor& lse);
void attention_qkv_bwd(const Tensor& qkv, const Tensor& out, const Tensor& lse, const Tensor& gout,
                       const Tensor* key_mask, bool causal, float scale, float dropout_p, uint64_t seed, Tensor& gqkv);

// ---- lora (lora.cc) ----
// y = x Wᵀ + s · (drop(x) Aᵀ) Bᵀ; x [..., K], W [N, K] frozen, A [r, K], B [N, r]; xa = drop(x) Aᵀ ([..., r]) is
// saved for backward. drop(x)[i] = x[i] / (1 - p) when hash_u01(seed, i) >= p, else 0 (i: flat index into x).
void lora_fwd(const Tensor& x, const Tensor& w, const Tensor& a, const Tensor& b, float s, float dropout_p,
              uint64_t seed, Tensor& y, Tensor& xa);
// gx (optional) = gy W + s · ((gy B) A) masked by the dropout; ga = s · (gy B)ᵀ drop(x); gb = s · gyᵀ xa. Never dW.
void lora_bwd(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& a, const Tensor& b, const Tensor& xa,
              float s, float dropout_p, uint64_t seed, Tensor* gx, Tensor& ga, Tensor& gb);

// ---- loss (loss.cc) ----
// Mean cross-entropy over rows whose label != ignore_index. logits: f32 [rows, V] (any leading dims), labels: i32
// [rows]. Writes the mean into loss (f32 [1], left on the device: no sync) and dlogits (the gradient of the mean,
// logits' shape) in the same pass over each row. When no row counts, loss = 0 and dlogits = 0 (the official code
// gives NaN there). A label outside [0, V) that is not ignore_index throws Error(Argument) naming the row.
void cross_entropy(const Tensor& logits, const Tensor& labels, int64_t ignore_index, Tensor& loss, Tensor& dlogits);
// x *= s[0] in place; s is a one-element f32 tensor read where it lives (no sync). Scales a saved loss gradient by the
// incoming gradient of the scalar loss without a new tensor.
void mul_scalar_inplace(Tensor& x, const Tensor& s);
// out[r] (i32 [rows]) = index of the largest value of row r of x [rows, V]: the first one on ties; NaN never wins (a
// row of NaN gives 0). Next-token accuracy from the logits without sending them to the host.
void argmax_rows(const Tensor& x, Tensor& out);

// ---- optimizer (optim.cc) ----
// Hyperparameters in double: the scalars torch derives from them (1 - lr·wd, lr / (1 - beta1^t), ...) are computed
// in double as Python does, then rounded to f32 once, so the f32 update matches torch.optim.AdamW's.
struct AdamWHyper {
  double lr, beta1, beta2, eps;
  int64_t step;  // 1-based, for bias correction
  // Every gradient is read as g·grad_scale (one f32 multiply, as a scale_inplace before the update would round it):
  // gradient clipping's coefficient applied without its own pass over the gradients.
  float grad_scale = 1.0f;
  // A step_control block instead (read where the update runs, no host read): its coefficient replaces grad_scale,
  // and nothing is updated when it says to skip the step.
  const Tensor* control = nullptr;
};
// torch.optim.AdamW (torch 1.13 single-tensor order): decoupled weight decay per parameter (wd[i]), then Adam with
// bias correction; the moment updates are fused multiply-adds as in torch's AVX2 CPU kernels (the CPU backend equals
// torch 1.13 bit for bit there). params, grads, m, v are f32 of equal shapes per index. copies: empty, or one entry
// per parameter, null or a bf16 tensor of its size that receives the updated parameter rounded to bf16 (the working
// copy a bf16 forward reads, written in the same pass instead of a cast of every master before the next forward).
void adamw(const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads, const std::vector<Tensor*>& m,
           const std::vector<Tensor*>& v, const std::vector<double>& wd, const AdamWHyper& h,
           const std::vector<Tensor*>& copies);
double sum_squares(const std::vector<const Tensor*>& xs);  // float64 accumulation, same result for any thread count
// A training step's control block, computed where the gradients live so that the step needs no host read before the
// optimizer: three float64 values (out: i64 [3] storage, the runtime having no f64 dtype) = the gradients' global L2
// norm (sum_squares, square-rooted), clipping's coefficient for max_norm (core/clip.h), and 1 when the step must be
// skipped (the norm or any loss not finite) else 0.
void step_control(const std::vector<const Tensor*>& grads, const std::vector<const Tensor*>& losses, double max_norm,
                  Tensor& out);
void scale_inplace(const std::vector<Tensor*>& xs, float s);
// 1 when every element of every tensor is finite.
bool all_finite(const std::vector<const Tensor*>& xs);

}  // namespace owlet::kern
