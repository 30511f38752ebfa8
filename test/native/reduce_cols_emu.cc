// Runs the column sums of native/src/cuda/reduce_cols.cuh (bias and norm-parameter gradients) through the host
// emulator: against float64 (the error bound of a float sum), and bit for bit against the order of additions the
// header promises (per thread its rows in order, then its block's warps in order, then the chunks by warp and the
// warps in order) — so a change of that order, which would change results between versions, is seen. Shapes: the
// ViT's bias gradient rows (a partial last chunk and tile), rows that fill one chunk exactly, fewer rows than a warp
// step, zero rows, one column, two outputs with one of them not wanted, bf16 and f32 inputs.
// Build and run: scripts/flash-emu.sh.
#include "emu_kernel.h"
#include "emu_static_shared.h"

#include "../../native/src/cuda/reduce_cols.cuh"
#include "emu_values.h"

#include <cstdio>
#include <random>
#include <vector>

namespace rc = owlet::cuda::reduce_cols_detail;
using owlet::cuda::bf16;
using owlet::cuda::FIn;
using owlet::cuda::FOut;

namespace {

// (x[r, c], x[r, c] · s[r]): a bias gradient and a norm weight's (the shape of norm.cu's functors).
struct TwoValues {
  FIn x, s;
  int64_t cols;
  void operator()(int64_t r, int64_t c, float (&v)[2]) const {
    v[0] = x[r * cols + c];
    v[1] = x[r * cols + c] * s[r];
  }
};

// The order the kernels add in, written out on the host.
std::vector<float> ordered_sums(const std::vector<float>& vals, int64_t rows, int64_t cols) {
  const rc::Plan p = rc::plan(rows, cols);
  std::vector<float> out(static_cast<size_t>(cols));
  for (int64_t col = 0; col < cols; col++) {
    std::vector<float> chunk_sums;
    for (int ch = 0; ch < p.chunks; ch++) {
      const int64_t r0 = ch * p.rows_per_chunk, r1 = std::min(rows, r0 + p.rows_per_chunk);
      float block = 0.f;
      for (int w = 0; w < rc::kRowWarps; w++) {
        float t = 0.f;
        for (int64_t r = r0 + w; r < r1; r += rc::kRowWarps) t += vals[size_t(r * cols + col)];
        block += t;
      }
      chunk_sums.push_back(block);
    }
    float total = 0.f;
    for (int w = 0; w < rc::kRowWarps; w++) {
      float t = 0.f;
      for (int j = w; j < p.chunks; j += rc::kRowWarps) t += chunk_sums[size_t(j)];
      total += t;
    }
    out[size_t(col)] = total;
  }
  return out;
}

int failures = 0;

template <class T>
void run(int64_t rows, int64_t cols, bool want_first) {
  std::mt19937 rng(unsigned(rows * 131 + cols));
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<T> x(static_cast<size_t>(rows * cols));
  for (auto& e : x) e = emu_values::from_float<T>(nd(rng));
  std::vector<float> s(static_cast<size_t>(rows));
  for (auto& e : s) e = 1.f + 0.5f * nd(rng);
  const rc::Plan p = rc::plan(rows, cols);
  std::vector<float> partial(static_cast<size_t>(2 * p.chunks * cols), -12345.f);
  std::vector<float> out0(static_cast<size_t>(cols), -777.f), out1(static_cast<size_t>(cols), -777.f);
  TwoValues f{FIn{x.data(), std::is_same_v<T, bf16>}, FIn{s.data(), false}, cols};
  ::emu::launch(::emu::Dim{unsigned(p.col_tiles), unsigned(p.chunks), 1}, rc::kThreads, 0, [&] {
    rc::partial_kernel<2>(f, rows, cols, p.rows_per_chunk, partial.data(), p.chunks);
  });
  rc::Outs<2> outs{};
  outs.o[0] = FOut{out0.data(), false};
  outs.o[1] = FOut{out1.data(), false};
  outs.present[0] = want_first;
  outs.present[1] = true;
  ::emu::launch(::emu::Dim{unsigned((cols + rc::kLanes - 1) / rc::kLanes), 2, 1}, rc::kThreads, 0, [&] {
    rc::final_kernel<2>(partial.data(), p.chunks, cols, outs);
  });
  // float64 reference, and the promised order in float
  std::vector<float> v0(x.size()), v1(x.size());
  std::vector<double> want0(static_cast<size_t>(cols)), want1(static_cast<size_t>(cols));
  std::vector<double> abs0(static_cast<size_t>(cols)), abs1(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) {
      const size_t i = size_t(r * cols + c);
      float a[2];
      f(r, c, a);
      v0[i] = a[0];
      v1[i] = a[1];
      want0[size_t(c)] += double(a[0]);
      want1[size_t(c)] += double(a[1]);
      abs0[size_t(c)] += std::fabs(double(a[0]));
      abs1[size_t(c)] += std::fabs(double(a[1]));
    }
  const std::vector<float> ord0 = ordered_sums(v0, rows, cols), ord1 = ordered_sums(v1, rows, cols);
  // A float sum of n terms is within n · 2^-24 · sum|terms| of the exact one (the worst of a column, as a multiple
  // of that bound, is printed; ≤ 1 passes).
  const double u = double(std::max<int64_t>(rows, 1)) * std::ldexp(1.0, -24);
  size_t order_diffs = 0, untouched = 0;
  double worst = 0;
  for (int64_t c = 0; c < cols; c++) {
    const size_t k = size_t(c);
    worst = std::max(worst, std::fabs(out1[k] - want1[k]) / (u * abs1[k] + 1e-30));
    order_diffs += out1[k] != ord1[k];
    if (want_first) {
      worst = std::max(worst, std::fabs(out0[k] - want0[k]) / (u * abs0[k] + 1e-30));
      order_diffs += out0[k] != ord0[k];
    } else {
      untouched += out0[k] == -777.f;
    }
  }
  const bool ok = order_diffs == 0 && worst <= 1.0 && (want_first || untouched == size_t(cols));
  std::printf("%s column sums %s rows %lld cols %lld (chunks %d × %lld rows, tiles %lld)%s: error %.3f of the bound, "
              "%zu differ from the promised order\n",
              ok ? "PASS" : "FAIL", std::is_same_v<T, bf16> ? "bf16" : "f32", (long long)rows, (long long)cols,
              p.chunks, (long long)p.rows_per_chunk, (long long)p.col_tiles, want_first ? "" : ", first output not wanted",
              worst, order_diffs);
  failures += !ok;
}

}  // namespace

int main() {
  run<bf16>(257 * 3 + 5, 300, true);   // partial last chunk and last column tile
  run<float>(128, 128, true);          // two whole chunks, one whole tile
  run<bf16>(5, 40, true);              // fewer rows than a warp step
  run<float>(0, 33, true);             // no rows: zeros
  run<float>(200, 1, false);           // one column, the first output not wanted
  // The plan: rows per chunk grow once there would be more than kMaxChunks chunks, and stay whole row steps.
  const rc::Plan big = rc::plan(int64_t(rc::kMaxChunks) * 64 * 3 + 1, 4096);
  const bool plan_ok = big.chunks <= rc::kMaxChunks && big.rows_per_chunk % rc::kRowStep == 0 &&
                       int64_t(big.chunks) * big.rows_per_chunk >= int64_t(rc::kMaxChunks) * 64 * 3 + 1;
  std::printf("%s plan for %d·192+1 rows: %d chunks of %lld\n", plan_ok ? "PASS" : "FAIL", rc::kMaxChunks, big.chunks,
              (long long)big.rows_per_chunk);
  return failures || !plan_ok ? 1 : 0;
}
