// Runs the sum-of-squares kernel (native/src/cuda/sum_squares.cuh: the gradient norm of sumSquares and stepControl)
// through the host emulator against float64: bf16 and f32 tensors read 16 bytes per load (aligned starts; lengths that
// leave a tail of 1 to 7 elements, a tensor longer than one chunk, one shorter than a pack) and element by element (a
// start off the 16-byte boundary, and the packed tensors again with the 16-byte path off), all in one list as the
// trainer hands its gradients over. Build and run: scripts/flash-emu.sh.
#include "emu_kernel.h"
#include "emu_static_shared.h"

#include "../../native/src/cuda/sum_squares.cuh"
#include "emu_values.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace sq = owlet::cuda::sumsq;
using owlet::cuda::bf16;
using owlet::cuda::FOut;
using owlet::cuda::kChunk;
using owlet::cuda::WorkItem;
using namespace emu_values;

namespace {

struct Case {
  int64_t n;
  bool bf;
  int offset;  // elements past a 16-byte boundary (non-zero: the element-by-element path)
};

// The list's sum through the kernel (partials summed in item order, as sum_partials_kernel's fixed order would give
// a deterministic result) and in float64 on the stored values.
int run(bool vec) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 2.f);
  const Case cases[] = {{4096, true, 0}, {1031, true, 0}, {kChunk + 13, true, 0}, {5, true, 0}, {1027, false, 0},
                        {kChunk * 2 + 3, false, 0}, {3, false, 0}, {1029, true, 3}, {515, false, 1}};
  std::vector<std::vector<float>> f32s;
  std::vector<std::vector<bf16>> bf16s;
  std::vector<sq::ListSlot> slots;
  double want = 0.0;
  for (const Case& c : cases) {
    const size_t len = size_t(c.n + c.offset + 8);
    if (c.bf) {
      bf16s.emplace_back(len);
      for (auto& e : bf16s.back()) e = from_float<bf16>(nd(rng));
    } else {
      f32s.emplace_back(len);
      for (auto& e : f32s.back()) e = nd(rng);
    }
  }
  size_t ib = 0, ifl = 0;
  for (const Case& c : cases) {
    void* p;
    if (c.bf) {
      bf16* b = bf16s[ib++].data() + c.offset;
      for (int64_t i = 0; i < c.n; i++) want += double(to_float(b[i])) * double(to_float(b[i]));
      p = b;
    } else {
      float* f = f32s[ifl++].data() + c.offset;
      for (int64_t i = 0; i < c.n; i++) want += double(f[i]) * double(f[i]);
      p = f;
    }
    slots.push_back({FOut{p, c.bf}, c.n, vec && reinterpret_cast<uintptr_t>(p) % 16 == 0});
  }
  std::vector<WorkItem> items = owlet::cuda::work_items(slots);
  std::vector<double> partial(items.size(), -1.0);
  ::emu::launch(::emu::Dim{unsigned(items.size()), 1, 1}, sq::kThreads, 0,
                [&] { sq::sum_squares_kernel(slots.data(), items.data(), partial.data()); });
  double got = 0.0;
  for (double v : partial) got += v;
  const double rel = std::fabs(got - want) / want;
  const bool ok = rel < 1e-11;  // (float64 sums of ~7e4 exact squares in two orders: ~1e-14 apart, the bound n·eps)
  int packed = 0;
  for (const auto& s : slots) packed += s.vec;
  std::printf("%s sum of squares, %zu tensors (%d read 16 bytes per load), %zu chunks: %.17g vs float64 %.17g, rel %.1e\n",
              ok ? "PASS" : "FAIL", slots.size(), packed, items.size(), got, want, rel);
  return ok ? 0 : 1;
}

}  // namespace

int main() {
  const int failures = run(true) + run(false);
  std::printf("sum_squares_emu: %d failed\n", failures);
  return failures ? 1 : 0;
}
