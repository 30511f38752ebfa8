// Runs LoRA's one-pass backward products over gy (native/src/cuda/lora_gy_pass.cuh: gyB = gy B and the block partials
// of gyᵀ xa, then lora_mma.cuh's cols_finish_kernel into gb = s · gyᵀ xa) through the host warp emulator against a
// float64 reference: ranks 8 and 16, M and N that end inside a 64 × 64 tile (the TMA's zero fill; xa's and Bᵀ's by
// hand), and more column tiles than the ring has stages. gyB is checked as bf16 (its one rounding), gb in fp32.
// Build and run: scripts/flash-emu.sh.
#include "emu_kernel.h"

#include "emu_static_shared.h"
#include "../../native/src/cuda/lora_gy_pass.cuh"
#include "../../native/src/cuda/lora_mma.cuh"
#include "emu_values.h"

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace gp = owlet::cuda::lora::gy;
using owlet::cuda::bf16;
using owlet::cuda::FOut;
using namespace emu_values;

namespace {

template <int R>
bool run(int M, int N, std::mt19937& rng) {
  auto randv = [&](size_t n) { return random_bf16(n, rng); };
  const float s = 0.75f;
  const std::vector<bf16> G = randv(size_t(M) * N), B = randv(size_t(N) * R), XA = randv(size_t(M) * R);
  std::vector<bf16> Bt(static_cast<size_t>(R) * N);
  for (int n = 0; n < N; n++)
    for (int j = 0; j < R; j++) Bt[size_t(j) * N + n] = B[size_t(n) * R + j];
  auto f = [](bf16 v) { return double(__bfloat162float(v)); };
  std::vector<double> want_b(size_t(M) * R, 0.0), want_g(size_t(N) * R, 0.0);
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      const double gv = f(G[size_t(m) * N + n]);
      for (int j = 0; j < R; j++) {
        want_b[size_t(m) * R + j] += gv * f(B[size_t(n) * R + j]);
        want_g[size_t(n) * R + j] += s * gv * f(XA[size_t(m) * R + j]);
      }
    }
  const int blocks = (M + gp::kRows - 1) / gp::kRows;
  std::vector<bf16> gyb(size_t(M) * R, __float2bfloat16_rn(12345.f));
  std::vector<float> ws(size_t(blocks) * R * N, 54321.f), gb(size_t(N) * R, 12345.f);
  gp::Maps maps;
  std::string why;
  if (!gp::encode_maps(G.data(), Bt.data(), M, N, R, maps, why)) {
    std::fprintf(stderr, "tensor maps: %s\n", why.c_str());
    return false;
  }
  const gp::Args args{XA.data(), gyb.data(), ws.data(), M, N};
  emu::launch({unsigned(blocks), 1, 1}, gp::kThreads, gp::smem_bytes<R>(), [&] { gp::gy_pass_kernel<R>(args, maps); });
  emu::launch({4, 1, 1}, 64, 0, [&] {
    owlet::cuda::lora::tc::cols_finish_kernel(ws.data(), blocks, R, N, s, FOut{gb.data(), false}, 1, R);
  });
  // the four-column finishing kernel (N % 4 == 0, as lora.cu's cols_finish takes it): the same sums in the same order,
  // so the same bits
  std::vector<float> gb4(gb.size(), 12345.f);
  emu::launch({3, 1, 1}, 32, 0, [&] {
    owlet::cuda::lora::tc::cols_finish4_kernel(ws.data(), blocks, R, N, s, FOut{gb4.data(), false}, 1, R);
  });
  const bool same4 = std::memcmp(gb.data(), gb4.data(), gb.size() * sizeof(float)) == 0;
  std::vector<double> got_b(gyb.size()), got_g(gb.size());
  for (size_t i = 0; i < gyb.size(); i++) got_b[i] = __bfloat162float(gyb[i]);
  for (size_t i = 0; i < gb.size(); i++) got_g[i] = gb[i];
  const double e_b = rel_err(got_b, want_b), e_g = rel_err(got_g, want_g);
  const bool ok = e_b < 8e-3 && e_g < 1e-5 && same4;  // gyB rounded to bf16 once; gb fp32 sums of exact bf16 products
  std::printf("%s R%-2d M%-4d N%-4d (%d blocks, %d column tiles): gyB %.1e gb %.1e, four-column finish %s\n",
              ok ? "PASS" : "FAIL", R, M, N, blocks, (N + gp::kCols - 1) / gp::kCols, e_b, e_g,
              same4 ? "the same bits" : "DIFFERENT bits");
  return ok;
}

}  // namespace

int main() {
  std::mt19937 rng(17);
  int failed = 0;
  failed += !run<8>(100, 200, rng);   // a partial block of rows and a partial column tile
  failed += !run<16>(192, 576, rng);  // 3 blocks, 9 column tiles through the 8-stage ring
  failed += !run<8>(64, 1032, rng);   // 17 column tiles, the last 8 columns wide
  failed += !run<16>(1, 64, rng);     // one row
  std::printf("%d failed\n", failed);
  return failed ? 1 : 0;
}
