// The attention backward's Δ = rowsum(dO ⊙ O) (native/src/cuda/attention_delta.cuh) through the host emulator:
// delta_rows_kernel (bf16, D = 64 / 128, D / 8 lanes per row) and delta_kernel (a warp per row) against float64 sums
// of the same bf16 values, for shapes whose rows do not fill the last warp or block and a [B, H, Tq] output order
// that a swapped index would break (B, H, Tq all different). Build and run: scripts/flash-emu.sh.
#include "emu_kernel.h"

#include "../../native/src/cuda/attention_delta.cuh"

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

using owlet::cuda::bf16;
namespace ad = owlet::cuda::attn_delta;

namespace {

int failures = 0;

void check(int B, int Tq, int H, int D) {
  std::mt19937 rng(unsigned(B * 1000 + Tq * 10 + H + D));
  std::normal_distribution<float> nd(0.f, 1.f);
  const size_t n = size_t(B) * Tq * H * D, rows = size_t(B) * Tq * H;
  std::vector<bf16> dout(n), out(n);
  for (auto& e : dout) e = __float2bfloat16_rn(nd(rng));
  for (auto& e : out) e = __float2bfloat16_rn(nd(rng));
  std::vector<double> want(rows), scale(rows);  // Δ in [B, H, Tq] order, and Σ|terms| for the tolerance
  for (int b = 0; b < B; b++)
    for (int i = 0; i < Tq; i++)
      for (int h = 0; h < H; h++) {
        const size_t base = ((size_t(b) * Tq + i) * H + h) * D, o = (size_t(b) * H + h) * Tq + i;
        for (int d = 0; d < D; d++) {
          const double t = double(__bfloat162float(dout[base + d])) * double(__bfloat162float(out[base + d]));
          want[o] += t;
          scale[o] += std::fabs(t);
        }
      }
  auto compare = [&](const char* name, const std::vector<float>& got) {
    double worst = 0;
    for (size_t r = 0; r < rows; r++) worst = std::max(worst, std::fabs(got[r] - want[r]) / (scale[r] + 1e-30));
    // fp32 sums of D products: a few ulps of Σ|terms| (one ulp 6e-8)
    const bool ok = worst <= 1e-6;
    std::printf("%s %s B%d Tq%d H%d D%d: worst error %.1e of sum |terms|\n", ok ? "PASS" : "FAIL", name, B, Tq, H, D, worst);
    failures += !ok;
  };
  std::vector<float> got(rows, NAN);
  const unsigned blocks = unsigned((rows * (D / 8) + ad::kThreads - 1) / ad::kThreads);
  if (D == 64)
    ::emu::launch(::emu::Dim{blocks, 1, 1}, ad::kThreads, 0, [&] { ad::delta_rows_kernel<64>(dout.data(), out.data(), got.data(), B, Tq, H); });
  else
    ::emu::launch(::emu::Dim{blocks, 1, 1}, ad::kThreads, 0, [&] { ad::delta_rows_kernel<128>(dout.data(), out.data(), got.data(), B, Tq, H); });
  compare("delta_rows_kernel", got);
  std::vector<float> plain(rows, NAN);
  const owlet::cuda::FIn fd{dout.data(), true}, fo{out.data(), true};
  ::emu::launch(::emu::Dim{unsigned((rows * 32 + 255) / 256), 1, 1}, 256, 0,
                [&] { ad::delta_kernel(fd, fo, plain.data(), B, Tq, H, D); });
  compare("delta_kernel", plain);
}

}  // namespace

int main() {
  check(2, 37, 3, 64);
  check(3, 5, 2, 128);
  check(1, 257, 4, 64);
  check(1, 1, 1, 128);
  if (failures) std::printf("%d failed\n", failures);
  return failures ? 1 : 0;
}
