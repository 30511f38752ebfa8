// Runs the register-resident LayerNorm/RMSNorm kernels (native/src/cuda/norm_rows.cuh) through the host emulator
// against float64: forward (y, mean, rstd, and the residual sum) and backward (gx, with and without the added
// gradient), LayerNorm with and without affine, bf16 and f32, rows that fill one to four packs per thread and one
// that leaves threads idle; with a block per row and with a warp per row (G = 32: several rows per block, and a last
// block with spare warps). Build and run: scripts/flash-emu.sh.
#include "emu_kernel.h"
#include "emu_static_shared.h"

#include <cmath>
inline float __fadd_rn(float a, float b) { return a + b; }

#include "../../native/src/cuda/norm_rows.cuh"
#include "emu_values.h"

#include <cstdio>
#include <random>
#include <vector>

namespace nr = owlet::cuda::norm_rows;
using owlet::cuda::bf16;
using owlet::cuda::FIn;

using namespace emu_values;

namespace {

int failures = 0;


template <class T, bool LN, int G = nr::kThreads>
void run(int64_t rows, int64_t C, bool affine, bool residual, bool add) {
  std::mt19937 rng(unsigned(C + rows));
  std::normal_distribution<float> nd(0.f, 1.5f);
  auto vecT = [&](int64_t n) { std::vector<T> v(static_cast<size_t>(n)); for (auto& e : v) e = from_float<T>(nd(rng)); return v; };
  std::vector<T> x = vecT(rows * C), r = vecT(rows * C), gy = vecT(rows * C), ga = vecT(rows * C);
  std::vector<float> w(static_cast<size_t>(C)), b(static_cast<size_t>(C));
  for (auto& e : w) e = 1.f + 0.3f * nd(rng);
  for (auto& e : b) e = 0.3f * nd(rng);
  std::vector<T> y(x.size()), sum(x.size()), gx(x.size());
  std::vector<float> mean(static_cast<size_t>(rows)), rstd(static_cast<size_t>(rows));
  const bool has_w = LN ? affine : true, has_b = LN && affine;
  FIn fw{w.data(), false}, fb{b.data(), false};
  const float eps = 1e-5f;
  ::emu::launch(::emu::Dim{nr::blocks<G>(rows), 1, 1}, nr::kThreads, 0, [&] {
    nr::fwd_kernel<T, LN, G>(x.data(), residual ? r.data() : nullptr, residual ? sum.data() : nullptr, fw, has_w, fb,
                             has_b, y.data(), mean.data(), rstd.data(), rows, C, eps);
  });
  const std::vector<T>& xin = residual ? sum : x;  // what was normalised (the stored sum: checked below)
  ::emu::launch(::emu::Dim{nr::blocks<G>(rows), 1, 1}, nr::kThreads, 0, [&] {
    nr::bwd_kernel<T, LN, G>(gy.data(), xin.data(), fw, has_w, mean.data(), rstd.data(), gx.data(),
                             add ? ga.data() : nullptr, rows, C);
  });
  // float64 reference on the same stored inputs
  std::vector<double> wy(x.size()), wgx(x.size()), gyd(x.size()), gxd(x.size()), sumd, wsum;
  double worst_stat = 0;
  for (int64_t i = 0; i < rows; i++) {
    const int64_t o = i * C;
    std::vector<double> xv(static_cast<size_t>(C));
    // The norm is of the sum as stored (rounded to T); the stored sum itself is checked against the exact one.
    for (int64_t j = 0; j < C; j++) xv[size_t(j)] = to_double(xin[size_t(o + j)]);
    if (residual) {
      for (int64_t j = 0; j < C; j++) {
        sumd.push_back(to_double(sum[size_t(o + j)]));
        wsum.push_back(to_double(x[size_t(o + j)]) + to_double(r[size_t(o + j)]));
      }
    }
    double m = 0;
    if (LN) { for (double v : xv) m += v; m /= double(C); }
    double var = 0;
    for (double v : xv) var += (v - m) * (v - m);
    const double rs = 1.0 / std::sqrt(var / double(C) + eps);
    worst_stat = std::max({worst_stat, std::fabs(rstd[size_t(i)] - rs) / rs, LN ? std::fabs(mean[size_t(i)] - m) / (std::fabs(m) + 1) : 0.0});
    double sg = 0, sgx = 0;
    std::vector<double> g(static_cast<size_t>(C)), xh(static_cast<size_t>(C));
    for (int64_t j = 0; j < C; j++) {
      xh[size_t(j)] = (xv[size_t(j)] - m) * rs;
      const double wj = has_w ? w[size_t(j)] : 1.0;
      wy[size_t(o + j)] = xh[size_t(j)] * wj + (has_b ? b[size_t(j)] : 0.0);
      g[size_t(j)] = to_double(gy[size_t(o + j)]) * wj;
      sg += g[size_t(j)];
      sgx += g[size_t(j)] * xh[size_t(j)];
    }
    for (int64_t j = 0; j < C; j++) {
      wgx[size_t(o + j)] = rs * (g[size_t(j)] - (LN ? sg / double(C) : 0.0) - xh[size_t(j)] * sgx / double(C)) +
                           (add ? to_double(ga[size_t(o + j)]) : 0.0);
      gyd[size_t(o + j)] = to_double(y[size_t(o + j)]);
      gxd[size_t(o + j)] = to_double(gx[size_t(o + j)]);
    }
  }
  const double tol = sizeof(T) == 2 ? 2e-2 : 2e-5;
  double ey = rel_err(gyd, wy), eg = rel_err(gxd, wgx), es = residual ? rel_err(sumd, wsum) : 0;
  bool ok = ey < tol && eg < tol && es < tol && worst_stat < 1e-5;
  std::printf("%s %s %s C=%lld rows=%lld%s%s%s%s: y %.1e gx %.1e sum %.1e stats %.1e (tol %.0e)\n", ok ? "PASS" : "FAIL",
              LN ? "layerNorm" : "rmsNorm", sizeof(T) == 2 ? "bf16" : "f32", (long long)C, (long long)rows,
              G == 32 ? " warp per row" : "",
              LN && !affine ? " no affine" : "", residual ? " +residual" : "", add ? " +gxAdd" : "", ey, eg, es, worst_stat, tol);
  failures += !ok;
}

}  // namespace

int main() {
  run<bf16, true>(3, 1024, true, false, false);
  run<bf16, true>(3, 1024, true, true, true);
  run<bf16, true>(2, 4096, false, false, true);
  run<bf16, true>(2, 2816, true, true, false);
  run<float, true>(3, 72, true, true, true);
  run<float, true>(2, 2048, true, false, false);
  run<bf16, false>(3, 4096, true, true, true);
  run<bf16, false>(3, 64, true, false, false);
  run<float, false>(2, 1028, true, true, true);
  // A warp per row: rows of up to 32 · 4 packs (1024 bf16, 512 f32); 7 rows = a full block of 4 and one of 3.
  run<bf16, true, 32>(7, 1024, true, true, true);
  run<bf16, true, 32>(5, 1024, false, false, false);
  run<bf16, true, 32>(9, 264, true, false, true);
  run<float, true, 32>(6, 512, true, true, false);
  run<float, true, 32>(3, 72, true, false, true);
  run<bf16, false, 32>(7, 1024, true, true, true);
  run<float, false, 32>(5, 100, true, false, false);
  return failures ? 1 : 0;
}
