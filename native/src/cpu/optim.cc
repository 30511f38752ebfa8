// Fused AdamW over a parameter list, and the list reductions around it (squared norm, scaling, finiteness).
// Work is cut into fixed-size chunks of each tensor, independent of the thread count, so the float64 partial sums of
// sum_squares (and so gradient norms and clipping) are bitwise reproducible on any number of threads.
#include <cmath>
#include <cstdint>
#include <vector>

#include "../core/clip.h"
#include "../core/dtype.h"
#include "../core/kernels.h"

namespace owlet::kern {

namespace {

constexpr int64_t kChunk = 1 << 15;

struct Chunk {
  size_t tensor;
  int64_t begin, end;
};

template <class T>
std::vector<Chunk> chunks_of(const std::vector<T*>& xs) {
  std::vector<Chunk> out;
  for (size_t i = 0; i < xs.size(); i++)
    for (int64_t b = 0, n = xs[i]->numel(); b < n; b += kChunk) out.push_back({i, b, std::min(n, b + kChunk)});
  return out;
}

// The scalars torch derives on the host (in double), rounded to f32 once as torch's CPU kernels do.
struct AdamWScalars {
  float decay;      // 1 - lr·wd                        (param.mul_)
  float beta1, a1;  // beta1, 1 - beta1                 (exp_avg.mul_(beta1).add_(grad, alpha=1-beta1))
  float beta2, a2;  // beta2, 1 - beta2                 (exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1-beta2))
  float bc2_sqrt;   // sqrt(1 - beta2^t)                (exp_avg_sq.sqrt() / bias_correction2_sqrt)
  float eps;        //                                  (.add_(eps))
  float neg_step;   // -lr / (1 - beta1^t)              (param.addcdiv_(exp_avg, denom, value=-step_size))
  float grad_scale; // clipping's coefficient            (clip_grad_norm_'s grad.mul_(clip_coef) before the step)
};

AdamWScalars scalars(const AdamWHyper& h, double wd) {
  double t = double(h.step);
  double bc1 = 1.0 - std::pow(h.beta1, t), bc2 = 1.0 - std::pow(h.beta2, t);
  return {float(1.0 - h.lr * wd), float(h.beta1), float(1.0 - h.beta1), float(h.beta2), float(1.0 - h.beta2),
          float(std::sqrt(bc2)), float(h.eps), float(-(h.lr / bc1)), h.grad_scale};
}

// Elements [begin, end) of t as floats: t's own f32 storage, or its bf16 values widened into `buf` (exact: a
// gradient kept in the compute dtype reads as the same numbers as its fp32 cast).
const float* f32_range(const Tensor* t, int64_t begin, int64_t end, std::vector<float>& buf) {
  if (t->dtype == DType::F32) return t->f32() + begin;
  const uint16_t* h = t->data<uint16_t>();
  buf.resize(size_t(end - begin));
  for (int64_t i = begin; i < end; i++) buf[size_t(i - begin)] = bf16_to_f32(h[i]);
  return buf.data();
}

}  // namespace

// torch 1.13 _single_tensor_adamw, element by element in the same order of f32 operations (g = grad·grad_scale
// first, what clip_grad_norm_ stores in the gradient):
//   p = p·decay;  m = m·β1;  m = fma(1-β1, g, m);  v = v·β2;  v = fma((1-β2)·g, g, v);
//   denom = sqrt(v) / bc2_sqrt + eps;  p = p + (neg_step·m) / denom
// The two fused multiply-adds are what torch's CPU kernels execute on AVX2 machines (add_ with alpha is an explicit
// fmadd; addcmul's multiply-add is contracted by the compiler); with them this update equals torch's bit for bit
// (scripts/adamw-vs-torch.ts). fmaf is exactly rounded, so the result is the same on any CPU: the x86-64-v3 clone only
// makes it vectorise, the default clone calls libm's fmaf.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
static void adamw_chunk(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v,
                        int64_t n, const AdamWScalars& s) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) {
    float pi = p[i] * s.decay;
    float gi = g[i] * s.grad_scale;
    float mi = m[i] * s.beta1;
    mi = __builtin_fmaf(s.a1, gi, mi);
    float vi = v[i] * s.beta2;
    vi = __builtin_fmaf(s.a2 * gi, gi, vi);
    float denom = __builtin_sqrtf(vi) / s.bc2_sqrt + s.eps;
    p[i] = pi + s.neg_step * mi / denom;
    m[i] = mi;
    v[i] = vi;
  }
}

void adamw(const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads, const std::vector<Tensor*>& m,
           const std::vector<Tensor*>& v, const std::vector<double>& wd, const AdamWHyper& hyper,
           const std::vector<Tensor*>& copies) {
  AdamWHyper h = hyper;
  if (h.control) {  // step_control's block: {norm, coefficient, skip}
    const double* c = reinterpret_cast<const double*>(h.control->raw());
    if (c[2] != 0.0) return;
    h.grad_scale = float(c[1]);
  }
  std::vector<AdamWScalars> sc;
  for (double w : wd) sc.push_back(scalars(h, w));
  std::vector<Chunk> cs = chunks_of(params);
#pragma omp parallel for schedule(static) if (cs.size() > 1)
  for (size_t c = 0; c < cs.size(); c++) {
    const Chunk& ch = cs[c];
    size_t t = ch.tensor;
    std::vector<float> gbuf;  // (a bf16 gradient's chunk, widened)
    adamw_chunk(params[t]->f32() + ch.begin, f32_range(grads[t], ch.begin, ch.end, gbuf), m[t]->f32() + ch.begin,
                v[t]->f32() + ch.begin, ch.end - ch.begin, sc[t]);
    if (!copies.empty() && copies[t]) {  // (the chunk is still in cache: the cast of the next forward, fused)
      const float* p = params[t]->f32();
      uint16_t* c = copies[t]->data<uint16_t>();
      for (int64_t i = ch.begin; i < ch.end; i++) c[i] = f32_to_bf16(p[i]);
    }
  }
}

double sum_squares(const std::vector<const Tensor*>& xs) {
  std::vector<Chunk> cs = chunks_of(xs);
  std::vector<double> part(cs.size(), 0.0);
#pragma omp parallel for schedule(static) if (cs.size() > 1)
  for (size_t c = 0; c < cs.size(); c++) {
    std::vector<float> buf;
    const float* x = f32_range(xs[cs[c].tensor], cs[c].begin, cs[c].end, buf);
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < cs[c].end - cs[c].begin; i++) s += double(x[i]) * double(x[i]);
    part[c] = s;
  }
  double total = 0;
  for (double s : part) total += s;
  return total;
}

void step_control(const std::vector<const Tensor*>& grads, const std::vector<const Tensor*>& losses, double max_norm,
                  Tensor& out) {
  const double norm = std::sqrt(sum_squares(grads));
  double* o = reinterpret_cast<double*>(out.raw());
  o[0] = norm;
  o[1] = clip_coefficient(norm, max_norm);
  o[2] = std::isfinite(norm) && all_finite(losses) ? 0.0 : 1.0;
}

void scale_inplace(const std::vector<Tensor*>& xs, float s) {
  std::vector<Chunk> cs = chunks_of(xs);
#pragma omp parallel for schedule(static) if (cs.size() > 1)
  for (size_t c = 0; c < cs.size(); c++) {
    float* x = xs[cs[c].tensor]->f32();
#pragma omp simd
    for (int64_t i = cs[c].begin; i < cs[c].end; i++) x[i] *= s;
  }
}

bool all_finite(const std::vector<const Tensor*>& xs) {
  std::vector<Chunk> cs = chunks_of(xs);
  int64_t bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad) if (cs.size() > 1)
  for (size_t c = 0; c < cs.size(); c++) {
    const float* x = xs[cs[c].tensor]->f32();
    int64_t n = 0;
#pragma omp simd reduction(+ : n)
    for (int64_t i = cs[c].begin; i < cs[c].end; i++)  // exponent all ones: inf or NaN
      n += int64_t((__builtin_bit_cast(int32_t, x[i]) & 0x7f800000) == 0x7f800000);
    bad += n;
  }
  return bad == 0;
}

}  // namespace owlet::kern
