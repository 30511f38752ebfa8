// Runs the CUDA AdamW kernel (native/src/cuda/adamw.cuh) through the host emulator and compares every parameter and
// moment with a scalar reference in the CPU backend's order of f32 operations, bit for bit: the float4 path and the
// scalar path (a misaligned tensor), lengths that leave a tail of 1–3 elements, a tensor longer than one chunk,
// f32 and bf16 gradients, weight decay per tensor and a clipping coefficient; and the bf16 working copies written with
// the update (equal to the updated parameter cast to bf16, bit for bit; untouched around them and by a skipped step).
// Build and run: scripts/flash-emu.sh.
#include "emu_kernel.h"

#include <cmath>
// The device intrinsics as the correctly rounded host operations they are (built with -ffp-contract=off).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }

#include "../../native/src/cuda/adamw.cuh"

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace aw = owlet::cuda::adamw;
using owlet::cuda::bf16;
using owlet::cuda::WorkItem;
using owlet::cuda::kChunk;

namespace {

struct Case {
  int64_t n;
  int offset;  // elements from a 16-byte boundary: 0 takes the float4 path, 1 the scalar one
  bool bf_grad;
  double wd;
  bool copy;  // with a bf16 working copy
};

// CPU backend order (native/src/cpu/optim.cc adamw_chunk).
void reference(float& p, float& m, float& v, float g, const aw::AdamScalars& k) {
  float gi = g * k.grad_scale;
  float pi = p * k.decay;
  float mi = std::fma(k.a1, gi, m * k.beta1);
  float vi = std::fma(k.a2 * gi, gi, v * k.beta2);
  float denom = std::sqrt(vi) / k.bc2_sqrt + k.eps;
  p = pi + k.neg_step * mi / denom;
  m = mi;
  v = vi;
}

}  // namespace

int main() {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 1.f);
  const Case cases[] = {{4096, 0, false, 0.1, true}, {1027, 0, false, 0.0, false}, {1025, 1, false, 0.1, true},
                        {kChunk + 6, 0, true, 0.05, true}, {3, 0, false, 0.1, false}, {258, 1, true, 0.0, false},
                        {2, 1, false, 0.1, true}, {1031, 0, true, 0.1, true}};
  const double lr = 1e-3, b1 = 0.9, b2 = 0.98, eps = 1e-8;
  const int64_t step = 3;
  const float grad_scale = 0.37f;
  std::vector<std::vector<float>> P, M, V, Gf, P0, M0, V0;
  std::vector<std::vector<bf16>> Gb, C;
  const bf16 poison = __float2bfloat16_rn(-777.f);
  std::vector<aw::AdamSlot> slots;
  std::vector<WorkItem> items;
  for (const Case& c : cases) {
    size_t len = size_t(c.n) + 4;
    auto fill = [&](float scale, bool positive) {
      std::vector<float> x(len);
      for (auto& e : x) e = positive ? std::fabs(nd(rng)) * scale : nd(rng) * scale;
      return x;
    };
    P.push_back(fill(1.f, false)); M.push_back(fill(0.1f, false)); V.push_back(fill(0.01f, true)); Gf.push_back(fill(1.f, false));
    Gb.emplace_back(len);
    for (size_t i = 0; i < len; i++) Gb.back()[i] = __float2bfloat16_rn(Gf.back()[i]);
    P0.push_back(P.back()); M0.push_back(M.back()); V0.push_back(V.back());
    C.emplace_back(len, poison);
  }
  for (size_t t = 0; t < std::size(cases); t++) {
    const Case& c = cases[t];
    double bc1 = 1.0 - std::pow(b1, double(step)), bc2 = 1.0 - std::pow(b2, double(step));
    // grad_scale 1 in the slots: the kernel must take the control block's coefficient (below) instead
    aw::AdamScalars k{float(1.0 - lr * c.wd), float(b1), float(1.0 - b1), float(b2), float(1.0 - b2), float(std::sqrt(bc2)),
                      float(eps), float(-(lr / bc1)), 1.0f};
    owlet::cuda::FIn g{c.bf_grad ? static_cast<const void*>(Gb[t].data() + c.offset) : Gf[t].data() + c.offset, c.bf_grad};
    aw::AdamSlot s{P[t].data() + c.offset, g, M[t].data() + c.offset, V[t].data() + c.offset, c.n, k,
                   c.copy ? C[t].data() + c.offset : nullptr, false};
    auto aligned = [](const void* p, uintptr_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; };
    s.vec = aligned(s.p, 16) && aligned(s.m, 16) && aligned(s.v, 16) && aligned(g.p, c.bf_grad ? 8 : 16) &&
            aligned(s.copy, 8);
    if (s.vec != (c.offset == 0)) { std::printf("FAIL case %zu: vector path %d, expected %d (alignment of the test buffers)\n", t, s.vec, c.offset == 0); return 1; }
    slots.push_back(s);
    for (int64_t st = 0; st < c.n; st += kChunk) items.push_back({int32_t(t), st});
  }
  // kern::step_control's block {norm, coefficient, skip}: the coefficient as a double, rounded to f32 by the kernel
  const double control[3] = {2.7, double(grad_scale), 0.0}, skip[3] = {1e30, 0.5, 1.0};
  ::emu::launch(::emu::Dim{unsigned(items.size()), 1, 1}, 64, 0, [&] { aw::adamw_kernel(slots.data(), items.data(), control); });
  int bad = 0;
  for (size_t t = 0; t < std::size(cases); t++) {
    const Case& c = cases[t];
    aw::AdamScalars k = slots[t].s;
    k.grad_scale = grad_scale;
    int64_t wrong = 0;
    for (int64_t i = 0; i < int64_t(P[t].size()); i++) {
      float p = P0[t][size_t(i)], m = M0[t][size_t(i)], v = V0[t][size_t(i)];
      bool inside = i >= c.offset && i < c.offset + c.n;
      if (inside) reference(p, m, v, c.bf_grad ? __bfloat162float(Gb[t][size_t(i)]) : Gf[t][size_t(i)], k);
      // Inside: the update bit for bit (and the copy as cast rounds it); outside (the padding around each tensor):
      // untouched.
      const bf16 want_copy = c.copy && inside ? __float2bfloat16_rn(p) : poison;
      if (std::memcmp(&p, &P[t][size_t(i)], 4) || std::memcmp(&m, &M[t][size_t(i)], 4) || std::memcmp(&v, &V[t][size_t(i)], 4) ||
          std::memcmp(&want_copy, &C[t][size_t(i)], 2))
        wrong++;
    }
    std::printf("%s adamw n=%lld %s %s grads%s: %lld of %zu elements differ\n", wrong ? "FAIL" : "PASS", (long long)c.n,
                c.offset ? "scalar path" : "float4 path", c.bf_grad ? "bf16" : "f32", c.copy ? ", bf16 working copy" : "",
                (long long)wrong, P[t].size());
    bad += wrong != 0;
  }
  // A step the control block says to skip changes nothing.
  const auto P1 = P, M1 = M, V1 = V;
  std::vector<std::vector<uint16_t>> C1;
  auto bits = [](const std::vector<bf16>& x) { std::vector<uint16_t> b(x.size()); std::memcpy(b.data(), x.data(), 2 * x.size()); return b; };
  for (const auto& c : C) C1.push_back(bits(c));
  ::emu::launch(::emu::Dim{unsigned(items.size()), 1, 1}, 64, 0, [&] { aw::adamw_kernel(slots.data(), items.data(), skip); });
  bool same = P == P1 && M == M1 && V == V1;
  for (size_t t = 0; t < C.size(); t++) same = same && bits(C[t]) == C1[t];
  std::printf("%s adamw with a control block that says skip: parameters, moments and copies %s\n", same ? "PASS" : "FAIL",
              same ? "unchanged" : "changed");
  bad += !same;
  return bad ? 1 : 0;
}
