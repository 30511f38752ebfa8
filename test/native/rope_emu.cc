// RoPE's kernels (native/src/cuda/rope_rows.cuh) through the host emulator: rope_vec_kernel (16-byte packs) gives
// the bits of rope_kernel (element by element) in bf16 and f32, forward and backward (sign −1), in place too, for head
// dims 128, 64 and 16 (one pack per half in bf16) at a nonzero starting position; and the backward undoes the
// forward to rounding (f32). Build and run: scripts/flash-emu.sh.
#include "emu_kernel.h"

#include "../../native/src/cuda/rope_rows.cuh"
#include "emu_values.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace rp = owlet::cuda::rope;
using owlet::cuda::bf16;
using namespace emu_values;

namespace {

int failures = 0;

template <class E>
void check(int B, int T, int H, int D, int64_t pos0, float sign, bool in_place) {
  std::mt19937 rng(unsigned(B * 100 + T * 10 + H + D));
  std::normal_distribution<float> nd(0.f, 1.f);
  const size_t n = size_t(B) * T * H * D;
  std::vector<E> x(n), want(n), got(n);
  for (auto& e : x) e = from_float<E>(nd(rng));
  const size_t smem = size_t(D) * sizeof(float);
  const owlet::cuda::FIn fx{x.data(), sizeof(E) == 2};
  const owlet::cuda::FOut fw{want.data(), sizeof(E) == 2};
  ::emu::launch(::emu::Dim{unsigned(B * T), 1, 1}, rp::kThreads, smem,
                [&] { rp::rope_kernel(fx, fw, T, H, D, pos0, 10000.0, sign); });
  E* out = got.data();
  if (in_place) {
    got = x;
    ::emu::launch(::emu::Dim{unsigned(B * T), 1, 1}, rp::kThreads, smem,
                  [&] { rp::rope_vec_kernel<E>(out, out, T, H, D, pos0, 10000.0, sign); });
  } else {
    ::emu::launch(::emu::Dim{unsigned(B * T), 1, 1}, rp::kThreads, smem,
                  [&] { rp::rope_vec_kernel<E>(x.data(), out, T, H, D, pos0, 10000.0, sign); });
  }
  size_t wrong = 0;
  for (size_t i = 0; i < n; i++) wrong += std::memcmp(&got[i], &want[i], sizeof(E)) != 0;
  std::printf("%s rope %s %s D%d B%d T%d H%d pos0 %lld%s: %zu of %zu differ\n", wrong ? "FAIL" : "PASS",
              sizeof(E) == 2 ? "bf16" : "f32", sign > 0 ? "forward" : "backward", D, B, T, H, (long long)pos0,
              in_place ? " in place" : "", wrong, n);
  failures += wrong != 0;
}

// f32: backward(forward(x)) = x to a few ulps (the rotation and its inverse).
void round_trip(int D) {
  const int B = 1, T = 9, H = 2;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  const size_t n = size_t(B) * T * H * D;
  std::vector<float> x(n), y(n), z(n);
  for (auto& e : x) e = nd(rng);
  const size_t smem = size_t(D) * sizeof(float);
  ::emu::launch(::emu::Dim{unsigned(B * T), 1, 1}, rp::kThreads, smem, [&] { rp::rope_vec_kernel<float>(x.data(), y.data(), T, H, D, 3, 10000.0, 1.f); });
  ::emu::launch(::emu::Dim{unsigned(B * T), 1, 1}, rp::kThreads, smem, [&] { rp::rope_vec_kernel<float>(y.data(), z.data(), T, H, D, 3, 10000.0, -1.f); });
  double worst = 0;
  for (size_t i = 0; i < n; i++) worst = std::max(worst, double(std::fabs(z[i] - x[i])));
  const bool ok = worst < 1e-5;
  std::printf("%s rope f32 D%d backward(forward(x)) = x: worst %.1e\n", ok ? "PASS" : "FAIL", D, worst);
  failures += !ok;
}

}  // namespace

int main() {
  for (int D : {128, 64, 16}) {
    for (float sign : {1.f, -1.f}) {
      check<bf16>(2, 5, 3, D, 7, sign, false);
      check<float>(2, 5, 3, D, 7, sign, false);
    }
    check<bf16>(1, 3, 2, D, 0, 1.f, true);
    round_trip(D);
  }
  if (failures) std::printf("%d failed\n", failures);
  return failures ? 1 : 0;
}
