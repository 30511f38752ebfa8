// LoRA linear with a frozen base weight: y = x Wᵀ + s · (drop(x) Aᵀ) Bᵀ, and its backward (dx, dA, dB; never dW).
//
// The low-rank update rides in the base GEMM's epilogue: the rank-r product s·xa·Bᵀ is written into y first (a
// K = r GEMM, bound by writing y), then the base GEMM runs with beta = 1 and adds it while storing its own result,
// so y is never read back by a separate pass. The backward does the same for dx.
// The thin products (x Aᵀ, gy B, (gy B)ᵀ x, gyᵀ xa) read one big matrix each and produce a few columns or a small
// matrix. They run through cuBLAS by default: on an H100 (2026-11-26, bench/results/gpu-2026-11-26-h100) LoRA r8
// fwd+bwd cost 1.36× / 1.20× the frozen linear that way against 1.62× / 1.26× with the one-pass kernels of
// lora_thin.cuh, which OWLET_LORA=thin still selects (ranks 4, 8, 16). OWLET_LORA=mma selects the tensor-core
// kernels of lora_mma.cuh (bf16, ranks 8 and 16), which apply the dropout in registers instead of through a masked
// copy of x; on an H200 (2026-11-27, bench/results/gpu-2026-11-27-h200-s12) they were slower than cuBLAS (1.37× /
// 1.88× with dropout against 1.23× / 1.77×), so not the default. Beyond the frozen linear's two GEMMs the
// step therefore moves about: x once (x Aᵀ), y once (rank-r write), gy twice (gy B, gyᵀ xa), x once ((gy B)ᵀ x),
// dx once (rank-r write). Under input dropout the forward and dA read a masked copy of x (written once each), and dx's
// low-rank part is added into gx = gy W under the mask by one pass over gx (lora_thin.cuh's dx_low_rank_kernel).
//
// The forward's y and, without dropout, the backward's dx can instead come from one kernel that computes the base GEMM
// and the rank-r update together (lora_gemm.cuh; bf16 at ranks 8 and 16 on an sm_90a build and device): no rank-r
// write of y (dx) and no re-read of it. Which one runs: OWLET_LORA_GEMM=fused or =cublas (read per call); unset, the
// first call of each shape times both on its own operands and later calls take the faster (the cuBLAS path unless the
// fused kernel beats it by time_candidates.h's margin; session 19's H100: 362 µs where cuBLAS's plain GEMM takes 344
// and its beta = 1 one 352, plus 28–33 µs for the rank-r GEMM it saves). Likewise the backward's gy B and gyᵀ xa in one
// pass over gy (lora_gy_pass.cuh) or cuBLAS's two GEMMs: OWLET_LORA_GY=pass or =cublas, unset timed (49 µs against
// 63 on the H100 for M8192 N4096 r8).
// At rank 8 without dropout the fused GEMMs can also compute their own L — x Aᵀ in the forward; gy B, and LoRA's gb
// and ga from the gy and x they stream, in dx (lora_gemm.cuh's OWN_L, OWN_GB; session 20) — with OWLET_LORA_GEMM=fused-l
// until a GPU has checked them, then timed on each shape's first call against the paths above (own_l_ok). Their tiles
// wait on flags other blocks set (grid_flags.cuh), which needs every block resident: the grid is never more than the
// device holds at once.
//
// Dropout on the LoRA input keeps element i of x where hash_u01(seed, i) >= p (core/hash_u01.h), scaled by
// 1 / (1 − p), exactly as the CPU backend's LoRA does; the backward regenerates the mask instead of storing it.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

#include "../core/kernels.h"
#include "../core/hash_u01.h"
#include "common.cuh"
#include "gemm.h"
#include "lora_gemm.cuh"
#include "lora_gy_pass.cuh"
#include "lora_mma.cuh"
#include "lora_thin.cuh"
#include "time_candidates.h"

namespace owlet::kern {

using namespace owlet::cuda;

namespace {

// t as dtype `want`: itself, or a converted copy held by `hold` (adapters are small; x and W are never copied).
const Tensor& cast_small(const Tensor& t, DType want, Tensor& hold) {
  if (t.dtype == want) return t;
  hold = Tensor(want, t.shape, t.device());
  copy_convert(t, hold);
  return hold;
}

lora::Drop make_drop(float p, uint64_t seed) {
  lora::Drop d{};
  d.on = p > 0.f;
  d.key = hash_u01_key(seed);
  d.p = p;
  d.scale = float(1.0 / (1.0 - double(p)));  // as the CPU backend rounds it
  return d;
}

__global__ void lora_dropout_kernel(FIn x, FOut y, int64_t n, lora::Drop d) {
  OWLET_KERNEL_LOOP(i, n) y.set(i, hash_u01_at(d.key, uint64_t(i)) >= d.p ? x[i] * d.scale : 0.f);
}

// y = the LoRA dropout of x (element index of x), any float dtypes; 16-byte accesses when x and y share a dtype and
// 16-byte-aligned starts (lora_thin.cuh's dropout_copy_kernel), element by element otherwise.
void lora_dropout(DeviceContext& c, const Tensor& x, Tensor& y, float p, uint64_t seed, const char* op) {
  int64_t n = x.numel();
  if (n == 0) return;
  const bool vec = x.dtype == y.dtype && is_float(x.dtype) && vec_enabled() &&
                   aligned16(x) && aligned16(y);
  if (vec) {
    OWLET_FLOAT_SWITCH(x.dtype, T, op, {
      const int64_t work = n / lora::Vec16<T>::n + 1;
      lora::dropout_copy_kernel<T><<<grid_for(c, work, lora::kThreads), lora::kThreads, 0, c.stream>>>(
          x.data<T>(), y.data<T>(), n, make_drop(p, seed));
    });
  } else {
    lora_dropout_kernel<<<grid_for(c, n, 256), 256, 0, c.stream>>>(fin(x, op, "x"), fout(y, op, "y"), n, make_drop(p, seed));
  }
  check_launch(op);
}

// drop(x): x itself when p = 0, else a masked, rescaled copy in `hold`.
const Tensor& dropped(DeviceContext& c, const Tensor& x, float p, uint64_t seed, Tensor& hold, const char* op) {
  if (p <= 0.f) return x;
  hold = Tensor(x.dtype, x.shape, x.device());
  lora_dropout(c, x, hold, p, seed, op);
  return hold;
}

// OWLET_LORA is read per call, so a benchmark can compare the paths in one process.
bool thin_selected() { return env_is("OWLET_LORA", "thin"); }
bool mma_selected() { return env_is("OWLET_LORA", "mma"); }

// Whether the thin kernels take rank r over matrices with these row lengths (16-byte rows of the dtype).
bool thin_ok(int64_t r, DType dt, std::initializer_list<int64_t> row_lengths) {
  if (!thin_selected() || !(r == 4 || r == 8 || r == 16) || !is_float(dt)) return false;
  int64_t v = 16 / int64_t(dtype_size(dt));
  for (int64_t n : row_lengths)
    if (n % v) return false;
  return true;
}

// out[m][j] = alpha · Σ_k f(X[m][k]) Wt[k][j] (rows kernel), for the dtype of X and the rank.
void thin_rows(DeviceContext& c, const Tensor& X, const Tensor& Wt, int64_t r, float alpha, lora::Drop d, const FOut& out,
               const char* op) {
  int64_t M = X.rows(), K = X.cols();
  if (M == 0) return;
  auto launch = [&](auto tag, auto rtag) {
    using T = decltype(tag);
    constexpr int R = decltype(rtag)::value;
    int64_t rows_per_block = int64_t(lora::kWarps) * lora::rows_per_warp<R>();
    unsigned blocks = unsigned((M + rows_per_block - 1) / rows_per_block);
    lora::rows_kernel<T, R><<<blocks, lora::kThreads, 0, c.stream>>>(X.data<T>(), M, K, Wt.f32(), alpha, d, out);
  };
  OWLET_FLOAT_SWITCH(X.dtype, T, op, {
    if (r == 4) launch(T{}, std::integral_constant<int, 4>{});
    else if (r == 8) launch(T{}, std::integral_constant<int, 8>{});
    else launch(T{}, std::integral_constant<int, 16>{});
  });
  check_launch(op);
}

// acc[j·oj + k·ok] += alpha · Σ_m G[m][j] f(X[m][k]) (cols kernel); acc is fp32 and zeroed by the caller.
void thin_cols(DeviceContext& c, const Tensor& X, const Tensor& G, int64_t r, float alpha, lora::Drop d, float* acc,
               int64_t oj, int64_t ok, const char* op) {
  int64_t M = X.rows(), K = X.cols();
  if (M == 0 || K == 0) return;
  auto launch = [&](auto tag, auto rtag) {
    using T = decltype(tag);
    constexpr int R = decltype(rtag)::value, CB = 32 * lora::Vec16<T>::n;
    int64_t col_blocks = (K + CB - 1) / CB;
    int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((2 * c.prop.multiProcessorCount + col_blocks - 1) / col_blocks,
                                                           (M + 63) / 64));
    int64_t rows_per_chunk = (M + chunks - 1) / chunks;
    size_t smem = size_t(CB) * R * sizeof(float);
    dim3 grid{unsigned(col_blocks), unsigned(chunks), 1u};
    lora::cols_kernel<T, R><<<grid, lora::kThreads, smem, c.stream>>>(X.data<T>(), M, K, G.f32(), rows_per_chunk, alpha,
                                                                       d, acc, oj, ok);
  };
  OWLET_FLOAT_SWITCH(X.dtype, T, op, {
    if (r == 4) launch(T{}, std::integral_constant<int, 4>{});
    else if (r == 8) launch(T{}, std::integral_constant<int, 8>{});
    else launch(T{}, std::integral_constant<int, 16>{});
  });
  check_launch(op);
}

// Whether dx_low_rank_kernel takes gx: ranks 4/8/16, 16-byte rows, a 16-byte-aligned start.
bool dx_low_rank_ok(int64_t r, const Tensor& gx) {
  if (!(r == 4 || r == 8 || r == 16) || !is_float(gx.dtype) || !vec_enabled()) return false;
  const int64_t v = 16 / int64_t(dtype_size(gx.dtype));
  return gx.cols() % v == 0 && aligned16(gx);
}

// gx += alpha · drop-mask ⊙ ((gy B) A): G = gy B [M, r] and A [r, K] converted to fp32 once (small).
void dx_low_rank(DeviceContext& c, Tensor& gx, const Tensor& gyB, const Tensor& a, int64_t r, float alpha, lora::Drop d,
                 const char* op) {
  const int64_t M = gx.rows(), K = gx.cols();
  if (M == 0 || K == 0) return;
  Tensor g32(DType::F32, Shape{M, r}, gx.device()), a32(DType::F32, Shape{r, K}, gx.device());
  copy_convert(gyB, g32);
  copy_convert(a, a32);
  auto launch = [&](auto tag, auto rtag) {
    using T = decltype(tag);
    constexpr int R = decltype(rtag)::value;
    // (8 blocks of 256 threads per SM: a 4096 × 4096 gx then takes 8 rows per block, At's values loaded 8 times)
    const lora::DxGrid grid = lora::dx_low_rank_grid(M, K, lora::Vec16<T>::n, 8 * int64_t(c.prop.multiProcessorCount));
    lora::dx_low_rank_kernel<T, R><<<dim3{grid.col_blocks, grid.row_blocks}, lora::kThreads, 0, c.stream>>>(
        gx.data<T>(), M, K, g32.f32(), a32.f32(), alpha, d, grid.rows_per_block);
  };
  OWLET_FLOAT_SWITCH(gx.dtype, T, op, {
    if (r == 4) launch(T{}, std::integral_constant<int, 4>{});
    else if (r == 8) launch(T{}, std::integral_constant<int, 8>{});
    else launch(T{}, std::integral_constant<int, 16>{});
  });
  check_launch(op);
}

// Whether the tensor-core kernels take rank r over these bf16 matrices (rows of 8-element multiples, 16-byte-aligned
// starts: each lane moves 16 bytes of a row).
bool mma_ok(int64_t r, std::initializer_list<const Tensor*> ts) {
  if (!mma_selected() || !(r == 8 || r == 16)) return false;
  for (const Tensor* t : ts)
    if (t->dtype != DType::BF16 || t->cols() % 8 || !aligned16(*t)) return false;
  return true;
}

template <class F>
void with_rank(int64_t r, F&& f) {
  if (r == 8) f(std::integral_constant<int, 8>{});
  else f(std::integral_constant<int, 16>{});
}

// out[m][j] = alpha · Σ_k f(X[m][k]) Wn[j][k] (lora_mma.cuh rows); X [M, K] and Wn [r, K] bf16.
void mma_rows(DeviceContext& c, const Tensor& X, const Tensor& Wn, int64_t r, float alpha, lora::Drop d, const FOut& out,
              const char* op) {
  const int64_t M = X.rows(), K = X.cols();
  if (M == 0) return;
  const unsigned blocks = unsigned((M + lora::tc::kRowsPerBlock - 1) / lora::tc::kRowsPerBlock);
  with_rank(r, [&](auto rt) {
    constexpr int R = decltype(rt)::value;
    auto kernel = d.on ? lora::tc::rows_kernel<R, true> : lora::tc::rows_kernel<R, false>;
    kernel<<<blocks, lora::tc::kRowsThreads, 0, c.stream>>>(X.data<bf16>(), M, K, Wn.data<bf16>(), alpha, d, out);
  });
  check_launch(op);
}

// (cols_finish4_kernel's 16-byte loads where the rows and ws allow them)
bool cols_by_quads(int64_t K, const float* ws) { return K % 4 == 0 && reinterpret_cast<uintptr_t>(ws) % 16 == 0; }
// out[j·oj + k·ok] = alpha · Σ_c ws[c][j][k] over `chunks` partial sums [chunks, r, K] (fp32), added in chunk order.
void cols_finish(DeviceContext& c, const float* ws, int64_t chunks, int64_t r, int64_t K, float alpha, const FOut& out,
                 int64_t oj, int64_t ok, const char* op) {
  if (cols_by_quads(K, ws))
    lora::tc::cols_finish4_kernel<<<grid_for(c, r * K / 4, 256), 256, 0, c.stream>>>(ws, chunks, r, K, alpha, out, oj, ok);
  else
    lora::tc::cols_finish_kernel<<<grid_for(c, r * K, 256), 256, 0, c.stream>>>(ws, chunks, r, K, alpha, out, oj, ok);
  check_launch(op);
}

// out[j·oj + k·ok] = alpha · Σ_m G[m][j] f(X[m][k]) (lora_mma.cuh cols); X [M, K] and G [M, r] bf16. Rows split into
// chunks by the shape alone, each chunk's sums added in order by cols_finish_kernel.
void mma_cols(DeviceContext& c, const Tensor& X, const Tensor& G, int64_t r, float alpha, lora::Drop d, const FOut& out,
              int64_t oj, int64_t ok, const char* op) {
  const int64_t M = X.rows(), K = X.cols();
  if (K == 0) return;
  if (M == 0) {  // sums over no rows: the finishing kernel over no chunks writes the zeros
    cols_finish(c, nullptr, 0, r, K, alpha, out, oj, ok, op);
    return;
  }
  const int64_t rpc = lora::tc::cols_rows_per_chunk(M, K), chunks = (M + rpc - 1) / rpc;
  Tensor ws;
  if (chunks > 1) ws = Tensor(DType::F32, Shape{chunks, r, K}, X.device());
  const dim3 grid{unsigned((K + lora::tc::kColsStrip - 1) / lora::tc::kColsStrip), unsigned(chunks), 1u};
  with_rank(r, [&](auto rt) {
    lora::tc::cols_kernel<decltype(rt)::value><<<grid, lora::tc::kColsThreads, lora::tc::kColsSmem, c.stream>>>(
        X.data<bf16>(), M, K, G.data<bf16>(), rpc, alpha, d, out, oj, ok, chunks > 1 ? ws.f32() : nullptr);
  });
  check_launch(op);
  if (chunks > 1) cols_finish(c, ws.f32(), chunks, r, K, alpha, out, oj, ok, op);
}

// Two cols_finish in one launch where both take 16-byte loads (else one after the other).
void cols_finish_pair(DeviceContext& c, const lora::tc::ColsJob& a, const lora::tc::ColsJob& b, const char* op) {
  if (!cols_by_quads(a.K, a.ws) || !cols_by_quads(b.K, b.ws)) {
    cols_finish(c, a.ws, a.chunks, a.R, a.K, a.alpha, a.out, a.oj, a.ok, op);
    cols_finish(c, b.ws, b.chunks, b.R, b.K, b.alpha, b.out, b.oj, b.ok, op);
    return;
  }
  lora::tc::cols_finish4_pair_kernel<<<grid_for(c, (a.R * a.K + b.R * b.K) / 4, 256), 256, 0, c.stream>>>(a, b);
  check_launch(op);
}

// t [rows, cols] (any float dtype) transposed into a new bf16 [cols, rows] tensor (small: B or A).
Tensor transposed_bf16(DeviceContext& c, const Tensor& t, const char* op, const char* what) {
  const int64_t rows = t.rows(), cols = t.cols();
  Tensor out(DType::BF16, {cols, rows}, t.device());
  lora::tc::transpose_bf16_kernel<<<grid_for(c, rows * cols, 256), 256, 0, c.stream>>>(fin(t, op, what), rows, cols,
                                                                                   out.data<bf16>());
  check_launch(op);
  return out;
}

// Whether the fused GEMM (lora_gemm.cuh) can compute C [M, N] = A op(W) + s L Rᵀ here: not switched off
// (OWLET_LORA_GEMM=cublas), an sm_90a build on a compute capability 9.0 device, rank 8 or 16, every operand bf16 with
// a 16-byte-aligned start, rows of 16-byte multiples (the TMA's) and an even N (C's bf16 pairs).
bool fused_ok(const DeviceContext& c, int64_t r, std::initializer_list<const Tensor*> ts, int64_t N, int64_t K) {
  if (env_is("OWLET_LORA_GEMM", "cublas") || !sm90a_device(c) || !(r == 8 || r == 16)) return false;
  if (N % 8 || K % 8 || N <= 0 || K <= 0) return false;
  for (const Tensor* t : ts)
    if (t->dtype != DType::BF16 || !aligned16(*t)) return false;
  return true;
}

// How many clusters of `cfg`'s shape the device holds at once for `kernel` (cudaOccupancyMaxActiveClusters: a GPC
// with an odd number of SMs leaves one out), 0 where it cannot say; asked once per kernel and device.
int resident_clusters(const DeviceContext& c, const void* kernel, cudaLaunchConfig_t cfg) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, int> known;
  std::lock_guard<std::mutex> lock(mu);
  auto it = known.find({kernel, c.index});
  if (it != known.end()) return it->second;
  cfg.gridDim = dim3{unsigned(c.prop.multiProcessorCount / lora_gemm::kCluster * lora_gemm::kCluster)};
  int fit = 0;
  if (cudaOccupancyMaxActiveClusters(&fit, kernel, &cfg) != cudaSuccess) {
    cudaGetLastError();
    fit = 0;
  }
  return known[{kernel, c.index}] = fit;
}

// The OWN_L kernels' row-block flags (grid_flags.cuh): one array per device, allocated once and never cleared
// between launches — each launch takes the next epoch and waits for flags equal to it (after 2^32 − 1 launches the
// array is cleared on the stream and the count starts again).
constexpr int64_t kFlagRowBlocks = int64_t(1) << 16;  // M up to 8,388,608 rows
bool grid_flag_epoch(DeviceContext& c, unsigned*& flags, unsigned& epoch) {
  struct Array {
    unsigned* flags = nullptr;
    unsigned epoch = 0;
  };
  static std::mutex mu;
  static std::map<int, Array> arrays;
  std::lock_guard<std::mutex> lock(mu);
  Array& f = arrays[c.index];
  if (!f.flags) {
    void* p = nullptr;
    if (cudaMalloc(&p, size_t(kFlagRowBlocks) * sizeof(unsigned)) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    f.flags = static_cast<unsigned*>(p);
    f.epoch = ~0u;  // (cleared below)
  }
  if (++f.epoch == 0) {
    if (cudaMemsetAsync(f.flags, 0, size_t(kFlagRowBlocks) * sizeof(unsigned), c.stream) != cudaSuccess) {
      cudaGetLastError();
      --f.epoch;
      return false;
    }
    f.epoch = 1;
  }
  flags = f.flags;
  epoch = f.epoch;
  return true;
}

// What the OWN_L kernels compute besides C (lora_gemm.cuh's Args): L = A Pᵀ (rank 8) into the call's `l`; and dx's
// with `xa`, `x` and the two workspaces (OWN_GB) gb_ws[row block][j][k] = Σ over the block's rows of A[m][k] xa[m][j]
// and ga_ws[range][j][n] = Σ over the range's rows of L[m][j] x[m][n].
struct OwnL {
  const Tensor* p;
  const Tensor* xa = nullptr;
  const Tensor* x = nullptr;
  float* gb_ws = nullptr;
  float* ga_ws = nullptr;
};

// The fused GEMM's epilogue (lora_gemm::Epi) from OWLET_LORA_GEMM_EPILOGUE (read per call): group, the default;
// warp, each warp storing its rows of C alone (session 19, to compare; not with the mask, OWN_L or 3 stages); overlap,
// a tile's last rounds of C going out during the next tile's first k-steps; ring, all in one round through the ring's
// stage of the tile's last k-step (session 21; neither with the mask or 3 stages). Unset, kEpilogueByDefault: group
// until a GPU has run the session 21 epilogues (they are emulated only), then the one it measured fastest.
constexpr int kEpilogueByDefault = lora_gemm::kEpiGroup;
int epilogue_selected() {
  const char* e = std::getenv("OWLET_LORA_GEMM_EPILOGUE");
  if (!e) return kEpilogueByDefault;
  const char* const names[] = {"group", "warp", "overlap", "ring"};  // (in lora_gemm::Epi's order)
  for (int i = 0; i < 4; i++)
    if (std::strcmp(e, names[i]) == 0) return i;
  return kEpilogueByDefault;
}

// Whether the fused GEMM splits its last round by k-steps (lora_gemm.cuh's Split: the clusters that would idle through
// it share the last tiles' k-steps, the owners adding the others' partial sums): OWLET_LORA_GEMM_SPLIT=1 (read per
// call), in the kernels that can (lora_gemm::splits: the ring epilogue's, the plain overlapped one's), until a GPU has
// run it (session 22 wrote it without one; then kSplitByDefault).
constexpr bool kSplitByDefault = false;
bool split_selected() {
  const char* e = std::getenv("OWLET_LORA_GEMM_SPLIT");
  return e ? std::strcmp(e, "1") == 0 : kSplitByDefault;
}

// C = A op(W) + s L Rᵀ through lora_gemm.cuh (W [N, K] K-major, or [K, N] with w_nmajor); with `drop` (dx under
// LoRA's input dropout, W N-major) the update under the mask: C = A W + keep ⊙ (s L Rᵀ); with `own` (rank 8, no mask)
// L computed by the kernel itself (and more: OwnL). False (nothing launched) where the driver cannot encode the tensor
// maps or refuses the clustered launch.
bool fused_gemm(DeviceContext& c, const Tensor& a, const Tensor& w, bool w_nmajor, const Tensor& l, const Tensor& r, float s,
                Tensor& out, const char* op, const lora::Drop* drop = nullptr, const OwnL* own = nullptr) {
  lora_gemm::Args g{l.data<bf16>(), r.data<bf16>(), int(a.rows()), int(out.cols()), int(a.cols()), int(l.cols()), s,
                    drop ? drop->key : 0, drop ? drop->p : 0.f, drop ? drop->scale : 1.f};
  const bool masked = drop && drop->on;
  if (masked && !w_nmajor) return false;  // (only dx has a masked update)
  const bool own_l = own != nullptr;
  // row blocks: OWN_L's flags, then (the split) one per block after them, in one array of kFlagRowBlocks
  const int64_t m_blocks = (a.rows() + lora_gemm::kBM - 1) / lora_gemm::kBM;
  if (own_l) {
    const Tensor& p = *own->p;
    if (masked || l.cols() != lora_gemm::kOwnRank || p.rows() != lora_gemm::kOwnRank || p.cols() != a.cols() ||
        m_blocks > kFlagRowBlocks)
      return false;
    g.p = p.data<bf16>();
    g.l_out = l.data<bf16>();
  }
  const bool own_gb = own_l && own->gb_ws;
  if (own_gb) {
    const Tensor *xa = own->xa, *x = own->x;
    if (!w_nmajor || !xa || !x || !own->ga_ws || xa->dtype != DType::BF16 || x->dtype != DType::BF16 ||
        xa->rows() != a.rows() || xa->cols() != lora_gemm::kOwnRank || x->rows() != a.rows() || x->cols() != out.cols() ||
        !aligned16(*x))
      return false;
    g.xa = xa->data<bf16>();
    g.gb_ws = own->gb_ws;
    g.ga_ws = own->ga_ws;
  }
  lora_gemm::Maps maps{};
  std::string why;
  if (!lora_gemm::encode_maps(a.data<bf16>(), w.data<bf16>(), out.data<bf16>(), g, w_nmajor, maps, why)) return false;
  if (own_gb && !tma::encode(maps.x, {own->x->data<bf16>(), 1, g.M, 1, g.N, g.N}, lora_gemm::kBM, why)) return false;
  if (g.M == 0) return true;
  if (own_l && !grid_flag_epoch(c, g.flags, g.epoch)) return false;
  // clusters of kCluster blocks, each cluster taking pairs of row blocks: as many clusters as there are pairs of tiles
  // and as the device can hold at once (a cluster beyond them would start only when another ends, and the tiles are
  // dealt out in advance; OWN_L's waits on other blocks need every block resident)
  constexpr int kCl = lora_gemm::kCluster;
  const int64_t pair_tiles = int64_t((g.M + kCl * lora_gemm::kBM - 1) / (kCl * lora_gemm::kBM)) *
                             ((g.N + lora_gemm::kBN - 1) / lora_gemm::kBN);
  // the ring's depth: 4 stages unless OWLET_LORA_GEMM_STAGES=3 (session 18's, kept to compare; not with the mask)
  const bool three = !masked && !own_l && env_is("OWLET_LORA_GEMM_STAGES", "3");
  // the epilogue (lora_gemm::Epi): OWLET_LORA_GEMM_EPILOGUE=group|warp|overlap|ring, unset kEpilogueByDefault
  const int epi = epilogue_selected();
  const bool warp_epi = !masked && !own_l && !three && epi == lora_gemm::kEpiWarp;
  const bool overlap = !masked && !three && epi == lora_gemm::kEpiOverlap;
  const bool ring = !masked && !three && g.K > 0 && epi == lora_gemm::kEpiRing;  // (K > 0: a stage to hold)
  // the split last round (in the kernels lora_gemm::splits names): each block's slot of partial sums and its flag after
  // the row blocks' (one epoch per launch)
  const int launched_epi = ring ? lora_gemm::kEpiRing : overlap ? lora_gemm::kEpiOverlap : lora_gemm::kEpiGroup;
  const bool split = split_selected() && lora_gemm::splits(launched_epi, own_l, own_gb, masked) &&
                     m_blocks + c.prop.multiProcessorCount <= kFlagRowBlocks;
  Tensor split_ws;
  if (split) {
    if (!own_l && !grid_flag_epoch(c, g.flags, g.epoch)) return false;
    maps.split = 1;
    maps.split_flags = g.flags + m_blocks;
  }
  const size_t smem = three ? lora_gemm::smem_bytes<3>() : lora_gemm::smem_bytes<4>();
  cudaLaunchConfig_t cfg{};
  cfg.blockDim = dim3{unsigned(lora_gemm::kThreads)};
  cfg.dynamicSmemBytes = smem;
  cfg.stream = c.stream;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = kCl, attr.val.clusterDim.y = 1, attr.val.clusterDim.z = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  auto launch = [&](auto kernel) {
    set_smem_limit(reinterpret_cast<const void*>(kernel), smem, c.index, op);
    const int fit = resident_clusters(c, reinterpret_cast<const void*>(kernel), cfg);
    if (fit <= 0) return cudaErrorInvalidConfiguration;
    cfg.gridDim = dim3{unsigned(std::min<int64_t>(pair_tiles, fit) * kCl)};
    if (split) {
      split_ws = Tensor(DType::F32, {int64_t(cfg.gridDim.x), lora_gemm::kSplitSlot}, out.device());
      maps.split_ws = split_ws.f32();
    }
    return cudaLaunchKernelEx(&cfg, kernel, g, maps);
  };
  using lora_gemm::lora_gemm_kernel;
  constexpr int kGroup = lora_gemm::kEpiGroup, kWarp = lora_gemm::kEpiWarp, kOverlap = lora_gemm::kEpiOverlap,
                kRing = lora_gemm::kEpiRing;
  // (one kernel per epilogue: a runtime choice inside would keep the registers of all)
  auto by_epi = [&](auto group, auto over, auto in_ring) {
    return ring ? launch(in_ring) : overlap ? launch(over) : launch(group);
  };
  const cudaError_t e =
      own_gb     ? by_epi(lora_gemm_kernel<true, 4, false, kGroup, true, true>,
                          lora_gemm_kernel<true, 4, false, kOverlap, true, true>,
                          lora_gemm_kernel<true, 4, false, kRing, true, true>)
      : own_l    ? (w_nmajor ? by_epi(lora_gemm_kernel<true, 4, false, kGroup, true>,
                                      lora_gemm_kernel<true, 4, false, kOverlap, true>,
                                      lora_gemm_kernel<true, 4, false, kRing, true>)
                             : by_epi(lora_gemm_kernel<false, 4, false, kGroup, true>,
                                      lora_gemm_kernel<false, 4, false, kOverlap, true>,
                                      lora_gemm_kernel<false, 4, false, kRing, true>))
      : masked   ? launch(lora_gemm_kernel<true, 4, true>)
      : three    ? (w_nmajor ? launch(lora_gemm_kernel<true, 3>) : launch(lora_gemm_kernel<false, 3>))
      : warp_epi ? (w_nmajor ? launch(lora_gemm_kernel<true, 4, false, kWarp>)
                             : launch(lora_gemm_kernel<false, 4, false, kWarp>))
      : w_nmajor ? by_epi(lora_gemm_kernel<true, 4>, lora_gemm_kernel<true, 4, false, kOverlap>,
                          lora_gemm_kernel<true, 4, false, kRing>)
                 : by_epi(lora_gemm_kernel<false, 4>, lora_gemm_kernel<false, 4, false, kOverlap>,
                          lora_gemm_kernel<false, 4, false, kRing>);
  if (e != cudaSuccess) {  // (a device that cannot place the clusters: the caller takes the cuBLAS path)
    cudaGetLastError();
    return false;
  }
  return true;
}

// One of owlet's LoRA kernels (`own`, false where it could not launch) or the cuBLAS path (`plain`) for one call where
// both apply: the environment variable `env` = `force` takes the first; unset, the faster for this (device, shape,
// rank, which product), timed on the first call of the shape (the trials write the call's own outputs, which both
// paths overwrite whole; the choice then runs once more for it). The cuBLAS path stays unless the kernel beats it by
// time_candidates.h's margin. (`env` = cublas is the callers' applicability tests' business: they return false.)
enum class Product { forward_gemm, dx_gemm, dx_gemm_dropout, gy_pass, forward_own_l, dx_own_l };
struct ChoiceKey {
  int device;
  int64_t M, K, N, r;
  Product what;
  bool operator<(const ChoiceKey& o) const {
    return std::tie(device, M, K, N, r, what) < std::tie(o.device, o.M, o.K, o.N, o.r, o.what);
  }
};
template <class Own, class Plain>
void own_or_cublas(DeviceContext& c, const ChoiceKey& key, const char* env, const char* force, Own&& own, Plain&& plain) {
  static std::mutex mu;
  static std::map<ChoiceKey, bool> chose_own;
  if (env_is(env, force)) {
    if (!own()) plain();
    return;
  }
  int known = -1;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = chose_own.find(key);
    if (it != chose_own.end()) known = it->second;
  }
  if (known < 0) {
    const std::vector<float> ms = time_candidates(c.stream, 2, [&](int i) {
      if (i == 1) return own();
      plain();
      return true;
    }, 2);
    known = fastest(ms) == 1;
    std::lock_guard<std::mutex> lock(mu);
    chose_own[key] = known;
  }
  if (!known || !own()) plain();
}

// Whether the fused GEMM may also compute its L (x Aᵀ for y, gy B for dx) itself, the OWN_L kernels: where the fused
// GEMM applies, rank 8, no dropout (L of the masked x is not the GEMM's A), and only with OWLET_LORA_GEMM=fused-l until
// a GPU has run them (session 20 wrote them without one: the default path keeps to kernels a GPU has checked; once
// checked, unset is to time them like the other fused kernels, kOwnLByDefault). OWLET_LORA_GEMM_OWN_L=1 (read per
// call) does now what kOwnLByDefault = true would: OWLET_LORA_GEMM unset, the OWN_L kernels join the timed choice —
// so that a GPU call measures that default (and the steps under it) before the constant changes.
constexpr bool kOwnLByDefault = false;
bool own_l_ok(const DeviceContext& c, int64_t r, float dropout_p, std::initializer_list<const Tensor*> ts, int64_t N,
              int64_t K) {
  if (r != lora_gemm::kOwnRank || dropout_p > 0.f || thin_selected() || mma_selected()) return false;
  const char* e = std::getenv("OWLET_LORA_GEMM");
  const bool by_default = kOwnLByDefault || env_is("OWLET_LORA_GEMM_OWN_L", "1");
  if (e && *e ? std::strcmp(e, "fused-l") != 0 : !by_default) return false;
  return fused_ok(c, r, ts, N, K);
}

// Whether the one pass over gy (lora_gy_pass.cuh) can compute gyB = gy B and gb = s · gyᵀ xa here: not switched off
// (OWLET_LORA_GY=cublas), an sm_90a build on a compute capability 9.0 device, bf16 gy and gyB, rank 8 or 16, rows of
// 16-byte multiples and 16-byte-aligned starts.
bool gy_pass_ok(const DeviceContext& c, const Tensor& gy, const Tensor& gyB, int64_t r) {
  return !env_is("OWLET_LORA_GY", "cublas") && sm90a_device(c) && (r == 8 || r == 16) && gy.rows() > 0 &&
         gy.cols() % 8 == 0 && gy.dtype == DType::BF16 && gyB.dtype == DType::BF16 && aligned16(gy) && aligned16(gyB);
}

// gyB = gy B and gb = s · gyᵀ xa in one pass over gy, where gy_pass_ok; false (nothing done) where the driver cannot
// encode the tensor maps.
bool gy_pass(DeviceContext& c, const Tensor& gy, const Tensor& b, const Tensor& xa, int64_t r, float s, Tensor& gyB,
             Tensor& gb, const char* op) {
  const int64_t M = gy.rows(), N = gy.cols();
  const Tensor bt = transposed_bf16(c, b, op, "b");  // Bᵀ: B's pairs along N
  lora::gy::Maps maps;
  std::string why;
  if (!lora::gy::encode_maps(gy.data<bf16>(), bt.data<bf16>(), int(M), int(N), int(r), maps, why)) return false;
  Tensor hxa;
  const Tensor& XA = cast_small(xa, DType::BF16, hxa);
  const int64_t blocks = (M + lora::gy::kRows - 1) / lora::gy::kRows;
  Tensor ws(DType::F32, {blocks, r, N}, gy.device());
  const lora::gy::Args a{XA.data<bf16>(), gyB.data<bf16>(), ws.f32(), int(M), int(N)};
  auto launch = [&](auto kernel, size_t smem) {
    set_smem_limit(reinterpret_cast<const void*>(kernel), smem, c.index, op);
    kernel<<<unsigned(blocks), lora::gy::kThreads, smem, c.stream>>>(a, maps);
  };
  if (r == 8) launch(lora::gy::gy_pass_kernel<8>, lora::gy::smem_bytes<8>());
  else launch(lora::gy::gy_pass_kernel<16>, lora::gy::smem_bytes<16>());
  check_launch(op);
  cols_finish(c, ws.f32(), blocks, r, N, s, fout(gb, op, "gb"), 1, r, op);
  return true;
}

// An fp32 accumulator for `out` (zeroed): `out` itself when it is f32, else a temporary copied over by finish().
struct Accumulator {
  Tensor& out;
  Tensor tmp;
  float* ptr;
  Accumulator(DeviceContext& c, Tensor& o, const char* op) : out(o) {
    if (o.dtype != DType::F32) tmp = Tensor(DType::F32, o.shape, o.device());
    Tensor& t = o.dtype == DType::F32 ? o : tmp;
    check(cudaMemsetAsync(t.raw(), 0, t.nbytes(), c.stream), op, "cudaMemsetAsync");
    ptr = t.f32();
  }
  void finish() {
    if (out.dtype != DType::F32) copy_convert(tmp, out);
  }
};

// lora_fwd with xa first (cuBLAS, or OWLET_LORA=thin|mma's kernels), then y = x Wᵀ + s xa Bᵀ (the fused GEMM or
// cuBLAS's two).
void lora_fwd_low_rank_first(DeviceContext& c, const Tensor& x, const Tensor& w, const Tensor& a, const Tensor& B, float s,
                             float dropout_p, uint64_t seed, Tensor& y, Tensor& xa, const char* op) {
  const int64_t r = a.dim(0), K = x.cols();
  if (mma_ok(r, {&x, &xa}) && (a.dtype != DType::BF16 || aligned16(a))) {
    Tensor ha;  // A as the rows kernel's Wn: bf16, 16-byte-aligned
    mma_rows(c, x, cast_small(a, DType::BF16, ha), r, 1.f, make_drop(dropout_p, seed), fout(xa, op, "xa"), op);
  } else if (thin_ok(r, x.dtype, {K})) {
    Tensor at(DType::F32, {K, r}, x.device());  // Aᵀ in fp32, [K][r]
    lora::transpose_f32_kernel<<<grid_for(c, r * K, 256), 256, 0, c.stream>>>(fin(a, op, "a"), r, K, at.f32());
    check_launch(op);
    thin_rows(c, x, at, r, 1.f, make_drop(dropout_p, seed), fout(xa, op, "xa"), op);  // xa = drop(x) Aᵀ
  } else {
    Tensor ha, hx;
    const Tensor& A = cast_small(a, x.dtype, ha);
    gemm2d(c, dropped(c, x, dropout_p, seed, hx, op), false, A, true, xa, 1.f, 0.f, op);
  }
  auto plain = [&] {
    gemm2d(c, xa, false, B, true, y, s, 0.f, op);   // y  = s · xa Bᵀ   (rank r)
    gemm2d(c, x, false, w, true, y, 1.f, 1.f, op);  // y += x Wᵀ        (base GEMM, epilogue add)
  };
  if (fused_ok(c, r, {&x, &w, &xa, &B, &y}, y.cols(), K))
    own_or_cublas(c, {c.index, x.rows(), K, y.cols(), r, Product::forward_gemm}, "OWLET_LORA_GEMM", "fused",
                  [&] { return fused_gemm(c, x, w, false, xa, B, s, y, op); }, plain);
  else
    plain();
}

// gx = gy W + s (gy B) A, gy B given: the fused GEMM or cuBLAS's two, whichever times faster (or as forced).
void lora_dx(DeviceContext& c, const Tensor& gy, const Tensor& w, const Tensor& A, const Tensor& gyB, int64_t r, float s,
             Tensor& gx, const char* op) {
  const int64_t K = gx.cols(), N = gy.cols();
  auto plain = [&] {
    gemm2d(c, gyB, false, A, false, gx, s, 0.f, op);   // gx  = s · (gy B) A   (rank r)
    gemm2d(c, gy, false, w, false, gx, 1.f, 1.f, op);  // gx += gy W           (base GEMM, epilogue add)
  };
  if (!fused_ok(c, r, {&gy, &w, &gyB, &A, &gx}, K, N)) return plain();
  const Tensor at = transposed_bf16(c, A, op, "a");  // Aᵀ: the update's R
  own_or_cublas(c, {c.index, gy.rows(), N, K, r, Product::dx_gemm}, "OWLET_LORA_GEMM", "fused",
                [&] { return fused_gemm(c, gy, w, true, gyB, at, s, gx, op); }, plain);
}

}  // namespace

void lora_fwd(const Tensor& x, const Tensor& w, const Tensor& a, const Tensor& b, float s, float dropout_p,
              uint64_t seed, Tensor& y, Tensor& xa) {
  const char* op = "loraForward";
  DeviceContext& c = context_of(x, op);
  int64_t r = a.dim(0), K = x.cols();
  Tensor hb;
  const Tensor& B = cast_small(b, x.dtype, hb);
  // y and xa from one kernel (OWN_L: its column block 0 computes xa) where it applies and times faster than xa first
  // and then the GEMM with the update (either way, below)
  Tensor ha16;
  const Tensor* A16 = nullptr;
  if (own_l_ok(c, r, dropout_p, {&x, &w, &xa, &B, &y}, y.cols(), K)) {
    A16 = &cast_small(a, DType::BF16, ha16);
    if (!aligned16(*A16)) A16 = nullptr;
  }
  if (A16) {
    own_or_cublas(c, {c.index, x.rows(), K, y.cols(), r, Product::forward_own_l}, "OWLET_LORA_GEMM", "fused-l",
                  [&] {
                    const OwnL own{A16};
                    return fused_gemm(c, x, w, false, xa, B, s, y, op, nullptr, &own);
                  },
                  [&] { lora_fwd_low_rank_first(c, x, w, a, B, s, dropout_p, seed, y, xa, op); });
    return;
  }
  lora_fwd_low_rank_first(c, x, w, a, B, s, dropout_p, seed, y, xa, op);
}

void lora_bwd(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& a, const Tensor& b, const Tensor& xa,
              float s, float dropout_p, uint64_t seed, Tensor* gx, Tensor& ga, Tensor& gb) {
  const char* op = "loraBackward";
  DeviceContext& c = context_of(x, op);
  int64_t r = a.dim(0), K = x.cols(), N = gy.cols();
  Tensor ha;
  const Tensor& A = cast_small(a, gy.dtype, ha);
  Shape gyb_shape = x.shape;
  gyb_shape.back() = r;
  Tensor gyB(gy.dtype, gyb_shape, x.device());  // gy B in gy's dtype, for the rank-r GEMM of dx
  if (mma_ok(r, {&gy, &x, &xa})) {
    const Tensor bt = transposed_bf16(c, b, op, "b");  // Bᵀ, the rows kernel's Wn for gy B
    lora::Drop none{};
    mma_rows(c, gy, bt, r, 1.f, none, fout(gyB, op, "gyB"), op);                                // gy B     [M, r]
    mma_cols(c, gy, xa, r, s, none, fout(gb, op, "gb"), 1, r, op);                               // gb = s · gyᵀ xa
    mma_cols(c, x, gyB, r, s, make_drop(dropout_p, seed), fout(ga, op, "ga"), K, 1, op);         // ga = s · (gy B)ᵀ drop(x)
  } else if (thin_ok(r, gy.dtype, {N}) && thin_ok(r, x.dtype, {K})) {
    Tensor bt(DType::F32, {N, r}, x.device()), gyb32(DType::F32, gyb_shape, x.device()), xa32(DType::F32, xa.shape, x.device());
    copy_convert(b, bt);    // B [N][r] is already k-major for gy B
    copy_convert(xa, xa32);
    lora::Drop none{};
    thin_rows(c, gy, bt, r, 1.f, none, FOut{gyb32.raw(), false}, op);  // gy B        [M, r]
    {
      Accumulator acc(c, gb, op);                                        // gb = s · gyᵀ xa   [N, r]
      thin_cols(c, gy, xa32, r, s, none, acc.ptr, 1, r, op);
      acc.finish();
    }
    {
      Accumulator acc(c, ga, op);                                        // ga = s · (gy B)ᵀ drop(x)   [r, K]
      thin_cols(c, x, gyb32, r, s, make_drop(dropout_p, seed), acc.ptr, K, 1, op);
      acc.finish();
    }
    if (gx) copy_convert(gyb32, gyB);
  } else {
    Tensor hxa;
    const Tensor& XA = cast_small(xa, gy.dtype, hxa);
    auto gyb_and_gb = [&] {
      auto plain = [&] {
        Tensor hb;
        const Tensor& B = cast_small(b, gy.dtype, hb);
        gemm2d(c, gy, false, B, false, gyB, 1.f, 0.f, op);
        gemm2d(c, gy, true, XA, false, gb, s, 0.f, op);  // gb = s · gyᵀ xa
      };
      // gy B and gb in one pass over gy where it applies and times faster (or OWLET_LORA_GY=pass)
      if (gy_pass_ok(c, gy, gyB, r))
        own_or_cublas(c, {c.index, gy.rows(), 0, N, r, Product::gy_pass}, "OWLET_LORA_GY", "pass",
                      [&] { return gy_pass(c, gy, b, xa, r, s, gyB, gb, op); }, plain);
      else plain();
    };
    if (gx && own_l_ok(c, r, dropout_p, {&gy, &w, &gyB, &A, gx, &x}, K, N)) {
      // gx, gy B and the partial sums of gb and ga from one kernel (OWN_L, OWN_GB: its column block 0 computes gy B
      // and gb's sums from the gy boxes it streams anyway; ga's come from x's boxes after the tiles, on the blocks the
      // last round leaves idle), gb and ga from those by cols_finish — where that times faster than gy B and gb first
      // (one pass over gy or cuBLAS), then the GEMM with the update and cuBLAS's (gy B)ᵀ x
      own_or_cublas(c, {c.index, gy.rows(), N, K, r, Product::dx_own_l}, "OWLET_LORA_GEMM", "fused-l",
                    [&] {
                      // Bᵀ (P) and Aᵀ (R) in one launch
                      Tensor bt(DType::BF16, {r, N}, gy.device()), at(DType::BF16, {K, r}, gy.device());
                      lora::tc::transpose2_bf16_kernel<<<grid_for(c, r * (N + K), 256), 256, 0, c.stream>>>(
                          fin(b, op, "b"), N, r, bt.data<bf16>(), fin(A, op, "a"), r, K, at.data<bf16>());
                      check_launch(op);
                      const int64_t blocks = (gy.rows() + lora_gemm::kBM - 1) / lora_gemm::kBM,
                                    ranges = (blocks + lora_gemm::kTailRows - 1) / lora_gemm::kTailRows;
                      Tensor gb_ws(DType::F32, {blocks, r, N}, gy.device()), ga_ws(DType::F32, {ranges, r, K}, gy.device());
                      const OwnL own{&bt, &XA, &x, gb_ws.f32(), ga_ws.f32()};
                      if (!fused_gemm(c, gy, w, true, gyB, at, s, *gx, op, nullptr, &own)) return false;
                      // gb = s · gyᵀ xa and ga = s · (gy B)ᵀ x, in one launch
                      cols_finish_pair(c, {gb_ws.f32(), blocks, r, N, s, fout(gb, op, "gb"), 1, r},
                                       {ga_ws.f32(), ranges, r, K, s, fout(ga, op, "ga"), K, 1}, op);
                      return true;
                    },
                    [&] {
                      gyb_and_gb();
                      lora_dx(c, gy, w, A, gyB, r, s, *gx, op);
                      gemm2d(c, gyB, true, x, false, ga, s, 0.f, op);  // ga = s · (gy B)ᵀ x
                    });
      return;
    }
    gyb_and_gb();
    Tensor hx;                                          // drop(x), released before dx
    gemm2d(c, gyB, true, dropped(c, x, dropout_p, seed, hx, op), false, ga, s, 0.f, op);  // ga = s · (gy B)ᵀ drop(x)
  }
  if (!gx) return;
  if (dropout_p <= 0.f) return lora_dx(c, gy, w, A, gyB, r, s, *gx, op);
  if (dx_low_rank_ok(r, *gx)) {
    // the low-rank path saw drop(x): its gradient goes through the same mask and scale, added into gx = gy W in one
    // pass over gx (dx_low_rank_kernel) instead of a masked temporary and the GEMM's beta = 1 read — or, where the fused
    // GEMM applies and times faster (session 19, emulated only until a GPU runs it), inside that GEMM: the mask on
    // its rank-r update, no pass over gx at all
    const lora::Drop d = make_drop(dropout_p, seed);
    auto plain = [&] {
      gemm2d(c, gy, false, w, false, *gx, 1.f, 0.f, op);
      dx_low_rank(c, *gx, gyB, a, r, s, d, op);
    };
    if (!fused_ok(c, r, {&gy, &w, &gyB, &A, gx}, K, N)) return plain();
    const Tensor at = transposed_bf16(c, A, op, "a");
    own_or_cublas(c, {c.index, gy.rows(), N, K, r, Product::dx_gemm_dropout}, "OWLET_LORA_GEMM", "fused",
                  [&] { return fused_gemm(c, gy, w, true, gyB, at, s, *gx, op, &d); }, plain);
    return;
  } else {
    Tensor t(gx->dtype, gx->shape, gx->device());
    gemm2d(c, gyB, false, A, false, t, s, 0.f, op);
    lora_dropout(c, t, *gx, dropout_p, seed, op);
  }
  gemm2d(c, gy, false, w, false, *gx, 1.f, 1.f, op);  // gx += gy W (epilogue add)
}

}  // namespace owlet::kern
