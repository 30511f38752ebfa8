// Runs LoRA's thin-product kernels (native/src/cuda/lora_thin.cuh) through the host warp emulator and compares them
// with a float64 reference: rows (x Aᵀ, gy B) and cols ((gy B)ᵀ x, gyᵀ xa), f32 and bf16, ranks 4/8/16, odd row
// counts, a partial column block, with and without dropout; and the low-rank part of dx added into dx under the
// dropout's mask (dx_low_rank). Build and run: scripts/flash-emu.sh (it runs both).
#include "emu_kernel.h"

#include "../../native/src/cuda/lora_thin.cuh"
#include "emu_values.h"

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace lt = owlet::cuda::lora;
using owlet::cuda::bf16;
using owlet::cuda::FOut;

using namespace emu_values;

namespace {


template <class T, int R>
bool run(const char* tname, int64_t M, int64_t K, float p, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<T> X(size_t(M * K));
  std::vector<double> Xd(X.size());
  for (size_t i = 0; i < X.size(); i++) {
    X[i] = from_float<T>(nd(rng));
    Xd[i] = to_double(X[i]);
  }
  std::vector<float> Wt(size_t(K * R)), G(size_t(M * R));
  for (auto& v : Wt) v = nd(rng);
  for (auto& v : G) v = nd(rng);
  lt::Drop d{};
  d.on = p > 0;
  d.key = owlet::hash_u01_key(99);
  d.p = p;
  d.scale = p > 0 ? float(1.0 / (1.0 - double(p))) : 0.f;
  // LoRA's mask (core/hash_u01.h): element i of X kept where hash_u01(seed, i) >= p.
  auto f = [&](int64_t i) { return !d.on ? Xd[size_t(i)] : owlet::hash_u01(99, uint64_t(i)) >= p ? Xd[size_t(i)] * d.scale : 0.0; };

  // rows: out[m][j] = 0.5 Σ_k f(X[m][k]) Wt[k][j]
  std::vector<float> out(size_t(M * R), 12345.f);
  std::vector<double> want(out.size(), 0.0), got(out.size());
  for (int64_t m = 0; m < M; m++)
    for (int64_t k = 0; k < K; k++)
      for (int j = 0; j < R; j++) want[size_t(m * R + j)] += 0.5 * f(m * K + k) * Wt[size_t(k * R + j)];
  int64_t rpb = int64_t(lt::kWarps) * lt::rows_per_warp<R>();
  emu::launch({unsigned((M + rpb - 1) / rpb), 1, 1}, lt::kThreads, 0,
              [&] { lt::rows_kernel<T, R>(X.data(), M, K, Wt.data(), 0.5f, d, FOut{out.data(), false}); });
  for (size_t i = 0; i < out.size(); i++) got[i] = out[i];
  double e_rows = rel_err(got, want);

  // cols: acc[j·oj + k·ok] += 2 Σ_m G[m][j] f(X[m][k]), both output layouts.
  double e_cols[2];
  for (int layout = 0; layout < 2; layout++) {
    int64_t oj = layout ? 1 : K, ok = layout ? R : 1;
    std::vector<float> acc(size_t(K * R), 0.f);
    std::vector<double> w2(acc.size(), 0.0), g2(acc.size());
    for (int64_t m = 0; m < M; m++)
      for (int64_t k = 0; k < K; k++)
        for (int j = 0; j < R; j++) w2[size_t(j * oj + k * ok)] += 2.0 * G[size_t(m * R + j)] * f(m * K + k);
    constexpr int CB = 32 * lt::Vec16<T>::n;
    int64_t col_blocks = (K + CB - 1) / CB, chunks = 3, rpc = (M + chunks - 1) / chunks;
    emu::launch({unsigned(col_blocks), unsigned(chunks), 1}, lt::kThreads, size_t(CB) * R * sizeof(float),
                [&] { lt::cols_kernel<T, R>(X.data(), M, K, G.data(), rpc, 2.f, d, acc.data(), oj, ok); });
    for (size_t i = 0; i < acc.size(); i++) g2[i] = acc[i];
    e_cols[layout] = rel_err(g2, w2);
  }
  // dx_low_rank: gx[m][k] += 0.75 · f'(m, k) · Σ_j G[m][j] At[j][k], f' the dropout's keep-and-scale of element
  // (m, k) (1 without dropout); compared as gx's change, in T (bf16: one rounding of gx per element).
  std::vector<float> At(size_t(R * K));
  for (auto& v : At) v = nd(rng);
  std::vector<T> gx(size_t(M * K));
  for (auto& v : gx) v = from_float<T>(nd(rng));
  const std::vector<T> gx0 = gx;
  std::vector<double> wdx(gx.size()), gdx(gx.size());
  for (int64_t m = 0; m < M; m++)
    for (int64_t k = 0; k < K; k++) {
      double s = 0;
      for (int j = 0; j < R; j++) s += double(G[size_t(m * R + j)]) * At[size_t(j * K + k)];
      const int64_t i = m * K + k;
      const double keep = !d.on ? 1.0 : owlet::hash_u01(99, uint64_t(i)) >= p ? d.scale : 0.0;
      wdx[size_t(i)] = to_double(gx0[size_t(i)]) + 0.75 * keep * s;
    }
  // (about 5 blocks: runs of rows with a shorter last one; K past 256 packs: two column blocks, the second partial)
  const lt::DxGrid dg = lt::dx_low_rank_grid(M, K, lt::Vec16<T>::n, 5);
  emu::launch({dg.col_blocks, dg.row_blocks, 1}, lt::kThreads, 0, [&] {
    lt::dx_low_rank_kernel<T, R>(gx.data(), M, K, G.data(), At.data(), 0.75f, d, dg.rows_per_block);
  });
  for (size_t i = 0; i < gx.size(); i++) gdx[i] = to_double(gx[i]);
  const double e_dx = rel_err(gdx, wdx), tol_dx = sizeof(T) == 2 ? 8e-3 : 1e-5;
  // dropout_copy: y = f(x) element by element, bit for bit what the element-by-element kernel stores (n with a tail
  // past the last 16-byte pack)
  const int64_t n = M * K - 3;
  std::vector<T> y(static_cast<size_t>(n));
  emu::launch({2, 1, 1}, lt::kThreads, 0, [&] { lt::dropout_copy_kernel<T>(X.data(), y.data(), n, d); });
  int64_t copy_wrong = 0;
  for (int64_t i = 0; i < n; i++) {
    const T want = from_float<T>(float(!d.on ? Xd[size_t(i)] : owlet::hash_u01(99, uint64_t(i)) >= p ? float(Xd[size_t(i)]) * d.scale : 0.f));
    copy_wrong += std::memcmp(&want, &y[size_t(i)], sizeof(T)) != 0;
  }
  bool ok = e_rows < 1e-5 && e_cols[0] < 1e-5 && e_cols[1] < 1e-5 && e_dx < tol_dx && copy_wrong == 0;
  std::printf("%s %-4s R%-2d M%-4lld K%-4lld p%.1f rows %.1e cols %.1e / %.1e dx %.1e, dropout copy %lld differ\n",
              ok ? "PASS" : "FAIL", tname, R, (long long)M, (long long)K, p, e_rows, e_cols[0], e_cols[1], e_dx,
              (long long)copy_wrong);
  return ok;
}

}  // namespace

int main() {
  std::mt19937 rng(3);
  int failed = 0;
  failed += !run<bf16, 8>("bf16", 37, 264, 0.f, rng);
  failed += !run<bf16, 8>("bf16", 70, 256, 0.1f, rng);
  failed += !run<bf16, 4>("bf16", 19, 520, 0.f, rng);
  failed += !run<bf16, 16>("bf16", 45, 136, 0.f, rng);
  failed += !run<float, 8>("f32", 37, 132, 0.f, rng);
  failed += !run<float, 16>("f32", 23, 260, 0.2f, rng);
  failed += !run<bf16, 8>("bf16", 7, 2064, 0.1f, rng);  // 258 packs per row: dx_low_rank's second column block
  std::printf("%d failed\n", failed);
  return failed ? 1 : 0;
}
