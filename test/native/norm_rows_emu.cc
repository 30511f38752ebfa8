// Runs the register-resident LayerNorm/RMSNorm kernels (native/src/cuda/norm_rows.cuh) through the host emulator
// against float64: forward (y, mean, rstd, and the residual sum) and backward (gx, with and without the added
// gradient), LayerNorm with and without affine, bf16 and f32, rows that fill one to four packs per thread and one
// that leaves threads idle; with a block per row and with a warp per row (G = 32: several rows per block, and a last
// block with spare warps); and, for rows a warp takes, the backward with the weight and bias gradients in gx's pass
// (bwd_params_kernel, then reduce_cols' final kernel): gx bit for bit the warp-per-row backward's, the gradients
// against float64, over row counts that give one block, several, and a last block with fewer rows. Build and run:
// scripts/flash-emu.sh.
#include "emu_kernel.h"
#include "emu_static_shared.h"

#include <cmath>
inline float __fadd_rn(float a, float b) { return a + b; }

#include "../../native/src/cuda/norm_rows.cuh"
#include "../../native/src/cuda/reduce_cols.cuh"
#include "emu_values.h"

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace nr = owlet::cuda::norm_rows;
using owlet::cuda::bf16;
using owlet::cuda::FIn;
using owlet::cuda::FOut;
namespace rc = owlet::cuda::reduce_cols_detail;

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
  // The backward with the parameter gradients in gx's pass: gx as the plain kernel's, bit for bit; gw = Σ gy·x̂ and
  // gb = Σ gy over the rows, against float64 on the same stored inputs (the statistics as the forward stored them).
  double e_gw = 0, e_gb = 0, e_gx2 = 0;
  long long gx_differ = 0;
  const bool params_run = has_w && nr::fits<T, nr::kParamRowThreads>(C);
  if (params_run) {
    const int64_t per = nr::param_rows_per_block(rows);
    const int chunks = int((rows + per - 1) / per);
    std::vector<float> partial(size_t(2 * chunks * C), -1.f), ogw(static_cast<size_t>(C)), ogb(static_cast<size_t>(C));
    std::vector<T> gx2(x.size());
    ::emu::launch(::emu::Dim{unsigned(chunks), 1, 1}, nr::kThreads, 0, [&] {
      nr::bwd_params_kernel<T, LN>(gy.data(), xin.data(), fw, has_w, mean.data(), rstd.data(), gx2.data(),
                                      add ? ga.data() : nullptr, rows, C, per, partial.data(), chunks, has_b);
    });
    rc::Outs<2> outs{};
    outs.o[0] = FOut{ogw.data(), false};
    outs.o[1] = FOut{ogb.data(), false};
    outs.present[0] = true;
    outs.present[1] = has_b;
    ::emu::launch(::emu::Dim{unsigned((C + rc::kLanes - 1) / rc::kLanes), 2, 1}, rc::kThreads, 0,
                  [&] { rc::final_kernel<2>(partial.data(), chunks, C, outs); });
    // (bit for bit against the warp-per-row kernel's gx; the block per row's may differ in its last bits)
    if (G == nr::kParamRowThreads)
      for (size_t i = 0; i < gx.size(); i++) gx_differ += std::memcmp(&gx[i], &gx2[i], sizeof(T)) != 0;
    std::vector<double> g2(gx2.size());
    for (size_t i = 0; i < gx2.size(); i++) g2[i] = to_double(gx2[i]);
    e_gx2 = rel_err(g2, wgx);
    ok = ok && e_gx2 < tol;
    std::vector<double> wgw(static_cast<size_t>(C), 0.0), wgb(static_cast<size_t>(C), 0.0), dgw(static_cast<size_t>(C)),
        dgb(static_cast<size_t>(C));
    for (int64_t i = 0; i < rows; i++) {
      const double m = LN ? double(mean[size_t(i)]) : 0.0, rs = rstd[size_t(i)];
      for (int64_t j = 0; j < C; j++) {
        const double g = to_double(gy[size_t(i * C + j)]);
        wgw[size_t(j)] += g * (to_double(xin[size_t(i * C + j)]) - m) * rs;
        wgb[size_t(j)] += g;
      }
    }
    for (int64_t j = 0; j < C; j++) dgw[size_t(j)] = ogw[size_t(j)], dgb[size_t(j)] = ogb[size_t(j)];
    e_gw = rel_err(dgw, wgw);
    e_gb = has_b ? rel_err(dgb, wgb) : 0.0;
    ok = ok && gx_differ == 0 && e_gw < 1e-5 && e_gb < 1e-5;
  }
  char params[160] = "";
  if (params_run)
    std::snprintf(params, sizeof params, "; with the parameter gradients: gx %.1e%s, gw %.1e gb %.1e", e_gx2,
                  G != nr::kParamRowThreads ? "" : gx_differ ? " (DIFFERS from the warp-per-row kernel's)" : " (= the warp-per-row kernel's)",
                  e_gw, e_gb);
  std::printf("%s %s %s C=%lld rows=%lld%s%s%s%s: y %.1e gx %.1e sum %.1e stats %.1e (tol %.0e)%s\n", ok ? "PASS" : "FAIL",
              LN ? "layerNorm" : "rmsNorm", sizeof(T) == 2 ? "bf16" : "f32", (long long)C, (long long)rows,
              G == 32 ? " warp per row" : "",
              LN && !affine ? " no affine" : "", residual ? " +residual" : "", add ? " +gxAdd" : "", ey, eg, es, worst_stat, tol,
              params);
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
  // Several blocks of the parameter gradients' pass (16 rows each), the last one short.
  run<bf16, true>(37, 1024, true, true, true);
  run<bf16, true, 32>(37, 1024, true, false, false);
  run<float, true, 32>(35, 264, true, true, false);
  run<bf16, false, 32>(33, 512, true, false, true);
  return failures ? 1 : 0;
}
