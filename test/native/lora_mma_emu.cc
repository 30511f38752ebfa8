// Runs LoRA's tensor-core thin products (native/src/cuda/lora_mma.cuh) through the host warp emulator against a
// float64 reference: rows (x Aᵀ, gy B) and cols ((gy B)ᵀ x, gyᵀ xa, both output layouts, one chunk of rows and
// several through the workspace), ranks 8 and 16, odd row counts, row lengths that end inside a 32- or 64-column
// chunk, with and without dropout. The reference multiplies the dropped elements as the cuBLAS path's masked copy
// holds them (bf16 of x · 1/(1 − p)), so a kernel that kept them in fp32, masked the wrong element or lost a
// fragment slot is off by far more than the fp32 summation order allows. Build and run: scripts/flash-emu.sh.
#include "emu_kernel.h"

#include "emu_static_shared.h"
#include "../../native/src/cuda/lora_mma.cuh"
#include "emu_values.h"

#include <cstdio>
#include <random>
#include <vector>

namespace lt = owlet::cuda::lora;
namespace tc = owlet::cuda::lora::tc;
using owlet::cuda::bf16;
using owlet::cuda::FOut;

using namespace emu_values;

namespace {

template <int R>
bool run(int64_t M, int64_t K, float p, int chunks_wanted, std::mt19937& rng) {
  auto randv = [&](size_t n) { return random_bf16(n, rng); };
  const std::vector<bf16> X = randv(size_t(M * K)), Wn = randv(size_t(R * K)), G = randv(size_t(M * R));
  lt::Drop d{};
  d.on = p > 0;
  d.key = owlet::hash_u01_key(7);
  d.p = p;
  d.scale = p > 0 ? float(1.0 / (1.0 - double(p))) : 1.f;
  // f(element i of X): what the masked copy would hold.
  std::vector<double> F(X.size());
  for (size_t i = 0; i < X.size(); i++) {
    const float x = __bfloat162float(X[i]);
    F[i] = !d.on ? x : owlet::hash_u01(7, uint64_t(i)) >= p ? double(__bfloat162float(__float2bfloat16_rn(x * d.scale))) : 0.0;
  }

  // rows: out[m][j] = 0.5 Σ_k f(X[m][k]) Wn[j][k], into an f32 output and a bf16 one.
  std::vector<double> want(size_t(M * R), 0.0), got(want.size());
  for (int64_t m = 0; m < M; m++)
    for (int j = 0; j < R; j++) {
      double s = 0;
      for (int64_t k = 0; k < K; k++) s += F[size_t(m * K + k)] * double(__bfloat162float(Wn[size_t(j * K + k)]));
      want[size_t(m * R + j)] = 0.5 * s;
    }
  std::vector<float> out(want.size(), 12345.f);
  auto rows = d.on ? tc::rows_kernel<R, true> : tc::rows_kernel<R, false>;
  const unsigned row_blocks = unsigned((M + tc::kRowsPerBlock - 1) / tc::kRowsPerBlock);
  emu::launch({row_blocks, 1, 1}, tc::kRowsThreads, 0,
              [&] { rows(X.data(), M, K, Wn.data(), 0.5f, d, FOut{out.data(), false}); });
  for (size_t i = 0; i < out.size(); i++) got[i] = out[i];
  const double e_rows = rel_err(got, want);
  std::vector<bf16> outh(want.size());
  emu::launch({row_blocks, 1, 1}, tc::kRowsThreads, 0,
              [&] { rows(X.data(), M, K, Wn.data(), 0.5f, d, FOut{outh.data(), true}); });
  for (size_t i = 0; i < outh.size(); i++) got[i] = __bfloat162float(outh[i]);
  const double e_rows_h = rel_err(got, want);

  // cols: out[j·oj + k·ok] = 2 Σ_m G[m][j] f(X[m][k]), both layouts; `chunks_wanted` rows chunks (1: no workspace).
  double e_cols[2];
  const int64_t rpc = chunks_wanted == 1 ? (M + 31) / 32 * 32 : std::max<int64_t>(32, (M / chunks_wanted + 31) / 32 * 32);
  const int64_t chunks = (M + rpc - 1) / rpc;
  for (int layout = 0; layout < 2; layout++) {
    const int64_t oj = layout ? 1 : K, ok = layout ? R : 1;
    std::vector<double> w2(size_t(K * R), 0.0), g2(w2.size());
    for (int64_t m = 0; m < M; m++)
      for (int64_t k = 0; k < K; k++)
        for (int j = 0; j < R; j++)
          w2[size_t(j * oj + k * ok)] += 2.0 * double(__bfloat162float(G[size_t(m * R + j)])) * F[size_t(m * K + k)];
    std::vector<float> acc(w2.size(), 12345.f), ws(size_t(chunks * R * K), 54321.f);
    const FOut o{acc.data(), false};
    float* wsp = chunks > 1 ? ws.data() : nullptr;
    emu::launch({unsigned((K + tc::kColsStrip - 1) / tc::kColsStrip), unsigned(chunks), 1}, tc::kColsThreads,
                tc::kColsSmem, [&] { tc::cols_kernel<R>(X.data(), M, K, G.data(), rpc, 2.f, d, o, oj, ok, wsp); });
    if (wsp) emu::launch({2, 1, 1}, 64, 0, [&] { tc::cols_finish_kernel(wsp, chunks, R, K, 2.f, o, oj, ok); });
    for (size_t i = 0; i < acc.size(); i++) g2[i] = acc[i];
    e_cols[layout] = rel_err(g2, w2);
  }
  const bool ok = e_rows < 1e-5 && e_rows_h < 8e-3 && e_cols[0] < 1e-5 && e_cols[1] < 1e-5;
  std::printf("%s R%-2d M%-4lld K%-4lld p%.2f chunks %lld: rows %.1e (bf16 out %.1e) cols %.1e / %.1e\n",
              ok ? "PASS" : "FAIL", R, (long long)M, (long long)K, p, (long long)chunks, e_rows, e_rows_h, e_cols[0],
              e_cols[1]);
  return ok;
}

}  // namespace

int main() {
  std::mt19937 rng(11);
  int failed = 0;
  failed += !run<8>(37, 264, 0.f, 1, rng);    // 264: the last 32-column chunk has one 16-byte piece
  failed += !run<8>(70, 256, 0.1f, 3, rng);
  failed += !run<16>(45, 136, 0.f, 2, rng);   // 136: a strip of 8 columns
  failed += !run<16>(100, 520, 0.05f, 1, rng);
  failed += !run<8>(130, 72, 0.3f, 4, rng);   // more chunks than 32-row steps fit evenly
  failed += !run<16>(1, 64, 0.f, 1, rng);     // one row
  std::printf("%d failed\n", failed);
  return failed ? 1 : 0;
}
