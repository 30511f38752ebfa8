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
  bool same4 = std::memcmp(gb.data(), gb4.data(), gb.size() * sizeof(float)) == 0;
  // two finishes in one launch (cols_finish4_pair_kernel, dx's gb and ga): these sums once as gb [N, R] and once as
  // [R, N], both the same bits again
  namespace tc = owlet::cuda::lora::tc;
  std::vector<float> pa(gb.size(), 12345.f), pb(gb.size(), 12345.f);
  emu::launch({3, 1, 1}, 32, 0, [&] {
    tc::cols_finish4_pair_kernel(tc::ColsJob{ws.data(), blocks, R, N, s, FOut{pa.data(), false}, 1, R},
                                 tc::ColsJob{ws.data(), blocks, R, N, s, FOut{pb.data(), false}, N, 1});
  });
  same4 = same4 && std::memcmp(gb.data(), pa.data(), gb.size() * sizeof(float)) == 0;
  for (int n = 0; n < N; n++)
    for (int j = 0; j < R; j++)
      same4 = same4 && std::memcmp(&gb[size_t(n) * R + j], &pb[size_t(j) * N + n], sizeof(float)) == 0;
  std::vector<double> got_b(gyb.size()), got_g(gb.size());
  for (size_t i = 0; i < gyb.size(); i++) got_b[i] = __bfloat162float(gyb[i]);
  for (size_t i = 0; i < gb.size(); i++) got_g[i] = gb[i];
  const double e_b = rel_err(got_b, want_b), e_g = rel_err(got_g, want_g);
  const bool ok = e_b < 8e-3 && e_g < 1e-5 && same4;  // gyB rounded to bf16 once; gb fp32 sums of exact bf16 products
  std::printf("%s R%-2d M%-4d N%-4d (%d blocks, %d column tiles): gyB %.1e gb %.1e, four-column finishes %s\n",
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
  {  // transpose2_bf16_kernel (dx's Bᵀ and Aᵀ in one launch): B [40, 8] bf16 and A [8, 72] fp32, transposed
    namespace tc = owlet::cuda::lora::tc;
    const std::vector<bf16> B = random_bf16(40 * 8, rng);
    std::vector<float> A(8 * 72);
    for (size_t i = 0; i < A.size(); i++) A[i] = float(i % 97) * 0.25f - 3.f;
    std::vector<bf16> bt(8 * 40), at(72 * 8);
    emu::launch({2, 1, 1}, 64, 0, [&] {
      tc::transpose2_bf16_kernel(owlet::cuda::FIn{B.data(), true}, 40, 8, bt.data(), owlet::cuda::FIn{A.data(), false},
                                 8, 72, at.data());
    });
    bool same = true;
    for (int n = 0; n < 40; n++)
      for (int j = 0; j < 8; j++) same = same && __bfloat162float(bt[j * 40 + n]) == __bfloat162float(B[n * 8 + j]);
    for (int j = 0; j < 8; j++)
      for (int k = 0; k < 72; k++) same = same && __bfloat162float(at[k * 8 + j]) == A[j * 72 + k];
    std::printf("%s transpose2: B [40, 8] bf16 and A [8, 72] fp32 in one launch\n", same ? "PASS" : "FAIL");
    failed += !same;
  }
  std::printf("%d failed\n", failed);
  return failed ? 1 : 0;
}
