// GEMMs through cuBLASLt (single matrices, bf16, aligned: per shape, the heuristic's first algorithm, or with
// OWLET_GEMM_TUNE=1 the fastest of its first candidates, timed; the plan cached) and cuBLAS
// (batched, f32, or whatever cuBLASLt declines), always with fp32 accumulation (CUBLAS_COMPUTE_32F, never TF32, so
// f32 results can be checked against the CPU backend).
//
// Row-major to cuBLAS's column-major: a row-major X [r, c] is the column-major Xᵀ [c, r] with the same leading
// dimension, so C = op(A) op(B) is computed as Cᵀ = op(B)ᵀ op(A)ᵀ: cuBLAS's first operand is our B.
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "../core/kernels.h"
#include "common.cuh"
#include "gemm.h"
#include "time_candidates.h"

namespace owlet::cuda {

namespace {

cudaDataType_t cuda_type(DType d) { return d == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F; }

int to_int(int64_t v, const char* op, const char* what) {
  if (v < 0 || v > int64_t(0x7fffffff))
    fail(ErrorKind::Shape, std::string(op) + ": " + what + " = " + std::to_string(v) + " exceeds cuBLAS's 32-bit range");
  return int(v);
}

// Unset (or 0): cuBLASLt's first heuristic as is. OWLET_GEMM_TUNE=1: its first candidates are timed on the first call
// of each shape bucket (tune_bucket) and later shapes of that bucket take the winner's rank among their own candidates
// untimed; =exact times every new shape. Tuning was the default until 2026-11-27, when the H100 measured it no better
// where it matters: trainer steps tuned and untuned, alternated twice in one call, differed by less than the run-to-run
// noise (±10%); the LLaMA down projection's tuned choice ran 746–798 against the heuristic's 808–832 TFLOP/s in four
// runs of the steady benchmark (its short trials misjudge it) while the ViT's dense layer gained 4–12%. Untuned, the
// algorithm is the same in every run (tuned choices depend on timing) and no step pays for trials. Read per call (part
// of the plan's key), so that a benchmark can compare the modes in one process.
enum TuneMode { kTuneOff = 0, kTuneBucket = 1, kTuneExact = 2 };
int tune_mode() {
  if (env_is("OWLET_GEMM_TUNE", "1")) return kTuneBucket;
  return env_is("OWLET_GEMM_TUNE", "exact") ? kTuneExact : kTuneOff;
}
constexpr int kTuneCandidates = 8, kTuneReps = 3;

// OWLET_BGRAD_EPILOGUE=0: bias gradients by sum_rows instead of the weight-gradient GEMM's epilogue (read per call, so a
// benchmark can compare both in one process).
bool bgrad_epilogue_enabled() { return !env_is("OWLET_BGRAD_EPILOGUE", "0"); }

bool lt_disabled() {
  static const bool off = env_is("OWLET_GEMM", "cublas");
  return off;
}

// One cached cuBLASLt plan (descriptors and the heuristic's first algorithm) per shape and per pointer alignment: cuBLASLt's heuristic assumes 256-byte-aligned operands unless told
// otherwise, so an operand at an offset into its storage (a view) gets a plan made for its actual alignment instead
// of leaving cuBLASLt (measured: a weight-gradient GEMM of the ViT took 0.68 ms through cublasGemmEx, 0.08 through
// cuBLASLt).
// `bias`: an epilogue with a vector (its pointer set per call): kEpiBias adds a bias (CUBLASLT_EPILOGUE_BIAS), kEpiBgradB
// writes the bias gradient, the sums of cuBLAS's B over k (CUBLASLT_EPILOGUE_BGRADB, as Transformer Engine's weight
// gradient GEMM uses it).
// `tune` (a TuneMode): the plan's algorithm is the fastest of cuBLASLt's first kTuneCandidates heuristics, timed on the
// first call (or taken from its bucket's timing).
enum Epi { kEpiNone = 0, kEpiBias = 1, kEpiBgradB = 2 };
struct LtKey {
  int dev, m, n, k, lda, ldb, ldc, transa, transb, ab, c, align_a, align_b, align_c, bias, tune;
  bool operator<(const LtKey& o) const {
    return std::tie(dev, m, n, k, lda, ldb, ldc, transa, transb, ab, c, align_a, align_b, align_c, bias, tune) <
           std::tie(o.dev, o.m, o.n, o.k, o.lda, o.ldb, o.ldc, o.transa, o.transb, o.ab, o.c, o.align_a, o.align_b,
                    o.align_c, o.bias, o.tune);
  }
};
struct LtPlan {
  bool ok = false;  // false: cuBLASLt declined this shape; use cublasGemmEx
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  std::vector<cublasLtMatmulAlgo_t> candidates;  // the heuristic's, best first; emptied once timed
};
std::map<LtKey, LtPlan> lt_plans;
std::mutex lt_mutex;

// Shapes whose dimensions are within a quarter-octave share one tuning: training data makes new shapes every step —
// the images in a batch (the ViT's rows), the counted tokens (the LM head's rows) — and timing 8 candidates 3 times
// for each new one cost about 30 extra GEMMs per shape, most of a 7B-sized LM-head step each time. The bucket keeps
// the rank (in the heuristic's order) that won the timing; a shape of the same bucket takes its own heuristic's
// candidate of that rank, which cuBLASLt returned for that exact shape (so always valid).
int tune_bucket(int v) {
  if (v <= 64) return v;  // few values, each cheap to time
  int p = 1;
  while (p <= v / 2) p *= 2;  // p <= v < 2p
  const int step = p / 4;
  return (v + step - 1) / step * step;
}
struct BucketKey {
  int dev, m, n, k, transa, transb, ab, c, align_a, align_b, align_c, bias;
  bool operator<(const BucketKey& o) const {
    return std::tie(dev, m, n, k, transa, transb, ab, c, align_a, align_b, align_c, bias) <
           std::tie(o.dev, o.m, o.n, o.k, o.transa, o.transb, o.ab, o.c, o.align_a, o.align_b, o.align_c, o.bias);
  }
};
BucketKey bucket_key(const LtKey& k) {
  return {k.dev, tune_bucket(k.m), tune_bucket(k.n), tune_bucket(k.k), k.transa, k.transb, k.ab, k.c,
          k.align_a, k.align_b, k.align_c, k.bias};
}
std::map<BucketKey, int> bucket_rank;  // under lt_mutex

LtPlan make_plan(DeviceContext& ctx, const LtKey& k) {
  LtPlan p;
  cublasOperation_t ta = cublasOperation_t(k.transa), tb = cublasOperation_t(k.transb);
  cudaDataType_t abt = cuda_type(DType(k.ab)), ct = cuda_type(DType(k.c));
  if (cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) return p;
  cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
  cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
  if (k.bias) {
    // cuBLAS's column-major D is our row-major C transposed: its rows are C's columns, so a bias of one value per
    // row of D (length m) is one per output feature of the linear layer. BGRADB: one value per column of D (length
    // n), the sum over k of cuBLAS's B — our A.
    cublasLtEpilogue_t epi = k.bias == kEpiBgradB ? CUBLASLT_EPILOGUE_BGRADB : CUBLASLT_EPILOGUE_BIAS;
    cudaDataType_t bt = ct;
    if (cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt) != CUBLAS_STATUS_SUCCESS)
      return p;
  }
  // Column-major layouts of cuBLAS's operands as stored (before the transpose op).
  bool ok = cublasLtMatrixLayoutCreate(&p.a, abt, ta == CUBLAS_OP_N ? k.m : k.k, ta == CUBLAS_OP_N ? k.k : k.m,
                                       k.lda) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatrixLayoutCreate(&p.b, abt, tb == CUBLAS_OP_N ? k.k : k.n, tb == CUBLAS_OP_N ? k.n : k.k,
                                       k.ldb) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatrixLayoutCreate(&p.c, ct, k.m, k.n, k.ldc) == CUBLAS_STATUS_SUCCESS;
  if (!ok) return p;
  cublasLtMatmulPreference_t pref = nullptr;
  if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) return p;
  size_t ws = ctx.workspace_bytes;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  uint32_t al_a = uint32_t(k.align_a), al_b = uint32_t(k.align_b), al_c = uint32_t(k.align_c);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c);
  cublasLtMatmulHeuristicResult_t res[kTuneCandidates] = {};
  int found = 0;
  cublasStatus_t s =
      cublasLtMatmulAlgoGetHeuristic(ctx.lt, p.desc, p.a, p.b, p.c, p.c, pref, k.tune ? kTuneCandidates : 1, res, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (s != CUBLAS_STATUS_SUCCESS) return p;
  for (int i = 0; i < found; i++)
    if (res[i].state == CUBLAS_STATUS_SUCCESS) p.candidates.push_back(res[i].algo);
  if (p.candidates.empty()) return p;
  p.algo = p.candidates[0];
  p.ok = true;
  if (p.candidates.size() == 1) p.candidates.clear();  // nothing to choose between
  return p;
}

// What tuning did, for backend info: plans timed, plans where another algorithm than the heuristic's first won, and
// the time those wins save per call of each shape, summed (ms).
std::atomic<uint64_t> n_tuned{0}, n_tuned_changed{0}, n_tune_reused{0};
double tune_saved_ms = 0.0;  // under lt_mutex

// Times the plan's candidates on this call's operands (time_candidates: kTuneReps runs each per round, after one
// warm-up) and keeps the fastest.
// The trial runs write the real output when this call overwrites it anyway (beta = 0), else a scratch buffer (no
// tuning when that would exceed 64 MiB). The host waits for each trial: this happens once per shape bucket, mostly in
// the first step. Returns the winner's rank, or -1 when nothing was timed.
int tune_plan(DeviceContext& ctx, LtPlan& p, const Gemm& g, int n, int ldc, const void* A, const void* B) {
  std::vector<cublasLtMatmulAlgo_t> cands;
  cands.swap(p.candidates);
  if (cands.size() < 2) return -1;
  void* out = g.C;
  Tensor scratch;
  if (g.beta != 0.f) {
    const size_t bytes = size_t(ldc) * size_t(n) * dtype_size(g.c);
    if (bytes > (size_t(64) << 20)) return -1;
    try {  // at the step's memory peak the scratch may not fit: then this shape keeps the heuristic's choice
      scratch = Tensor(DType::U8, {int64_t(bytes)}, Device{DeviceKind::CUDA, ctx.index});
    } catch (const Error&) {
      return -1;
    }
    out = scratch.raw();
  }
  const float beta0 = 0.f;
  const std::vector<float> ms = time_candidates(ctx.stream, int(cands.size()), [&](int i) {
    return cublasLtMatmul(ctx.lt, p.desc, &g.alpha, A, p.a, B, p.b, &beta0, out, p.c, out, p.c, &cands[size_t(i)],
                          ctx.workspace, ctx.workspace_bytes, ctx.stream) == CUBLAS_STATUS_SUCCESS;
  }, kTuneReps);
  const int best_i = fastest(ms);
  if (best_i < 0) return -1;
  const float first = ms[0], best = ms[size_t(best_i)];
  p.algo = cands[best_i];
  n_tuned++;
  if (best_i != 0) {
    n_tuned_changed++;
    if (first > 0.f) tune_saved_ms += double(first - best);
  }
  return best_i;
}

// A new plan's algorithm when its bucket was timed already (bucket mode): its own candidate of the winning rank.
bool take_bucket_choice(LtPlan& p, const LtKey& key) {
  if (key.tune != kTuneBucket) return false;
  auto it = bucket_rank.find(bucket_key(key));
  if (it == bucket_rank.end() || size_t(it->second) >= p.candidates.size()) return false;
  p.algo = p.candidates[size_t(it->second)];
  p.candidates.clear();
  n_tune_reused++;
  return true;
}

// The largest power of two (up to 256) dividing the address: the alignment cuBLASLt may assume.
int alignment_of(const void* p) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int al = 256;
  while (al > 1 && (a & uintptr_t(al - 1))) al >>= 1;
  return al;
}

// Which path each GEMM took, for backend info (a shape falling off cuBLASLt is a performance bug to look at).
std::atomic<uint64_t> n_lt{0}, n_ex{0}, n_bias{0}, n_bgrad{0};
std::map<std::string, uint64_t> ex_shapes;  // under lt_mutex

void note_ex(int m, int n, int k, cublasOperation_t ta, cublasOperation_t tb, const char* why) {
  n_ex++;
  std::lock_guard<std::mutex> lock(lt_mutex);
  if (ex_shapes.size() < 32)
    ex_shapes[std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) + (ta == CUBLAS_OP_T ? " tA" : "") +
              (tb == CUBLAS_OP_T ? " tB" : "") + " (" + why + ")"]++;
}

// Tries cuBLASLt for a single bf16 matrix product; false when it does not apply or declines.
bool try_lt(DeviceContext& ctx, const Gemm& g, int m, int n, int k, int lda, int ldb, int ldc, cublasOperation_t ta,
            cublasOperation_t tb, const void* A, const void* B, Epi epi) {
  const bool with_bias = epi != kEpiNone;
  if (lt_disabled() || g.batch != 1 || g.ab != DType::BF16) return false;
  size_t cs = dtype_size(g.c);
  int al_a = alignment_of(A), al_b = alignment_of(B), al_c = alignment_of(g.C);
  if (al_a < 16 || al_b < 16 || al_c < 16 || (lda * 2) % 16 || (ldb * 2) % 16 || (size_t(ldc) * cs) % 16) {
    note_ex(m, n, k, ta, tb, "operands not 16-byte aligned");
    return false;
  }
  LtKey key{ctx.index, m, n, k, lda, ldb, ldc, int(ta), int(tb), int(g.ab), int(g.c), al_a, al_b, al_c, int(epi),
            tune_mode()};
  LtPlan* plan;
  {
    std::lock_guard<std::mutex> lock(lt_mutex);
    auto it = lt_plans.find(key);
    if (it == lt_plans.end()) it = lt_plans.emplace(key, make_plan(ctx, key)).first;
    plan = &it->second;
  }
  if (!plan->ok) {
    if (!with_bias) note_ex(m, n, k, ta, tb, "no cuBLASLt plan");
    return false;
  }
  const void* vec = epi == kEpiBgradB ? static_cast<const void*>(g.bias_grad) : g.bias;
  if (with_bias &&
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &vec, sizeof vec) != CUBLAS_STATUS_SUCCESS)
    return false;
  if (!plan->candidates.empty()) {  // the first call of a tuned shape (the bias pointer is set: trials read it)
    std::lock_guard<std::mutex> lock(lt_mutex);
    if (!take_bucket_choice(*plan, key)) {
      const int rank = tune_plan(ctx, *plan, g, n, ldc, A, B);
      if (rank >= 0 && key.tune == kTuneBucket) bucket_rank[bucket_key(key)] = rank;
    }
  }
  cublasStatus_t s = cublasLtMatmul(ctx.lt, plan->desc, &g.alpha, A, plan->a, B, plan->b, &g.beta, g.C, plan->c, g.C,
                                    plan->c, &plan->algo, ctx.workspace, ctx.workspace_bytes, ctx.stream);
  if (s != CUBLAS_STATUS_SUCCESS) {
    std::lock_guard<std::mutex> lock(lt_mutex);
    plan->ok = false;  // do not try this shape again
    if (!with_bias) note_ex(m, n, k, ta, tb, "cuBLASLt failed");
    return false;
  }
  n_lt++;
  if (epi == kEpiBias) n_bias++;
  if (epi == kEpiBgradB) n_bgrad++;
  return true;
}

}  // namespace

GemmStats gemm_stats() {
  GemmStats st;
  st.lt = n_lt.load();
  st.ex = n_ex.load();
  st.bias_epilogue = n_bias.load();
  st.bias_grad_epilogue = n_bgrad.load();
  st.tuned = n_tuned.load();
  st.tuned_changed = n_tuned_changed.load();
  st.tune_reused = n_tune_reused.load();
  std::lock_guard<std::mutex> lock(lt_mutex);
  st.tune_saved_ms = tune_saved_ms;
  for (auto& [shape, count] : ex_shapes) st.ex_shapes += (st.ex_shapes.empty() ? "" : "; ") + shape + " ×" + std::to_string(count);
  return st;
}

bool gemm(DeviceContext& ctx, const Gemm& g, const char* op) {
  if (g.M == 0 || g.N == 0 || g.batch == 0) return false;
  if (!is_float(g.ab) || !is_float(g.c) || (g.ab == DType::F32 && g.c != DType::F32))
    fail(ErrorKind::DType, std::string(op) + ": unsupported GEMM types (operands " + dtype_name(g.ab) + ", result " +
                               dtype_name(g.c) + ")");
  // cuBLAS (column-major) computes Cᵀ[N, M] = op(B)ᵀ[N, K] · op(A)ᵀ[K, M].
  cublasOperation_t ta = g.tb ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g.ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  int m = to_int(g.N, op, "N"), n = to_int(g.M, op, "M"), k = to_int(g.K, op, "K");
  int lda = to_int(g.ldb, op, "ldb"), ldb = to_int(g.lda, op, "lda"), ldc = to_int(g.ldc, op, "ldc");
  // cuBLAS wants leading dimensions >= the stored rows even when a dimension is 0 or 1.
  if (lda < 1) lda = 1;
  if (ldb < 1) ldb = 1;
  if (ldc < 1) ldc = 1;
  // With a bias: the epilogue plan when cuBLASLt offers one for a bias at that address, else the plain GEMM and the
  // caller adds the bias.
  // The same for a bias gradient (BGRADB), when the caller asks for one.
  bool with_bias = g.bias && g.c == DType::BF16 && alignment_of(g.bias) >= 16;
  if (with_bias && try_lt(ctx, g, m, n, k, lda, ldb, ldc, ta, tb, g.B, g.A, kEpiBias)) return true;
  bool with_bgrad = g.bias_grad && g.c == DType::BF16 && alignment_of(g.bias_grad) >= 16 && k > 0 && bgrad_epilogue_enabled();
  if (with_bgrad && try_lt(ctx, g, m, n, k, lda, ldb, ldc, ta, tb, g.B, g.A, kEpiBgradB)) return true;
  if (try_lt(ctx, g, m, n, k, lda, ldb, ldc, ta, tb, g.B, g.A, kEpiNone)) return false;
  cudaDataType_t abt = cuda_type(g.ab), ct = cuda_type(g.c);
  if (g.batch == 1) {
    check(cublasGemmEx(ctx.blas, ta, tb, m, n, k, &g.alpha, g.B, abt, lda, g.A, abt, ldb, &g.beta, g.C, ct, ldc,
                       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          op, "cublasGemmEx");
  } else {
    check(cublasGemmStridedBatchedEx(ctx.blas, ta, tb, m, n, k, &g.alpha, g.B, abt, lda, g.strideB, g.A, abt, ldb,
                                     g.strideA, &g.beta, g.C, ct, ldc, g.strideC, to_int(g.batch, op, "batch"),
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          op, "cublasGemmStridedBatchedEx");
  }
  return false;
}

namespace {
// A float tensor as `want` dtype: itself, or a converted temporary kept alive by `hold`.
const Tensor& as_dtype(const Tensor& t, DType want, Tensor& hold) {
  if (t.dtype == want) return t;
  hold = Tensor(want, t.shape, t.device());
  kern::copy_convert(t, hold);
  return hold;
}
}  // namespace

bool gemm2d(DeviceContext& ctx, const Tensor& a, bool ta, const Tensor& b, bool tb, Tensor& c, float alpha, float beta,
            const char* op, const Tensor* bias, Tensor* bias_grad) {
  expect_float(a, op, "a");
  expect_float(b, op, "b");
  expect_float(c, op, "c");
  DType ab = a.dtype == b.dtype ? a.dtype : DType::F32;
  Tensor ha, hb, hc;
  const Tensor& A = as_dtype(a, ab, ha);
  const Tensor& B = as_dtype(b, ab, hb);
  Gemm g;
  g.ta = ta;
  g.tb = tb;
  g.M = ta ? a.cols() : a.rows();
  g.K = ta ? a.rows() : a.cols();
  g.N = tb ? b.rows() : b.cols();
  g.A = A.raw();
  g.lda = a.cols();
  g.B = B.raw();
  g.ldb = b.cols();
  g.ldc = g.N;
  g.ab = ab;
  g.alpha = alpha;
  g.beta = beta;
  if (ab == DType::F32 && c.dtype == DType::BF16) {  // cuBLAS has no f32 x f32 -> bf16: go through an f32 result
    hc = Tensor(DType::F32, c.shape, c.device());
    if (beta != 0.f) kern::copy_convert(c, hc);
    g.C = hc.raw();
    g.c = DType::F32;
    gemm(ctx, g, op);
    kern::copy_convert(hc, c);
    return false;
  }
  g.C = c.raw();
  g.c = c.dtype;
  if (bias && bias->dtype == c.dtype) g.bias = bias->raw();
  if (bias_grad && bias_grad->dtype == c.dtype) g.bias_grad = bias_grad->raw();
  return gemm(ctx, g, op);
}

}  // namespace owlet::cuda

namespace owlet::kern {

using namespace owlet::cuda;

void matmul(const Tensor& a, const Tensor& b, Tensor& c, bool ta, bool tb, float alpha, float beta) {
  const char* op = "matmul";
  DeviceContext& ctx = context_of(c, op);
  expect_float(a, op, "a");
  expect_float(b, op, "b");
  expect_float(c, op, "c");
  int64_t M = c.dim(-2), N = c.dim(-1);
  int64_t K = ta ? a.dim(-2) : a.dim(-1);
  if (M == 0 || N == 0) return;
  int64_t batch = c.numel() / (M * N);
  bool b_shared = b.ndim() == 2 && batch > 1;
  DType ab = a.dtype == b.dtype ? a.dtype : DType::F32;
  Tensor ha, hb, hc;
  const Tensor& A = as_dtype(a, ab, ha);
  const Tensor& B = as_dtype(b, ab, hb);
  Tensor* C = &c;
  if (ab == DType::F32 && c.dtype == DType::BF16) {
    hc = Tensor(DType::F32, c.shape, c.device());
    if (beta != 0.f) kern::copy_convert(c, hc);
    C = &hc;
  }
  Gemm g;
  g.ta = ta;
  g.tb = tb;
  g.K = K;
  g.N = N;
  g.A = A.raw();
  g.lda = a.dim(-1);
  g.B = B.raw();
  g.ldb = b.dim(-1);
  g.C = C->raw();
  g.ldc = N;
  g.ab = ab;
  g.c = C->dtype;
  g.alpha = alpha;
  g.beta = beta;
  if (b_shared && !ta) {  // one big GEMM over every batch row: [batch*M, K] x B
    g.M = batch * M;
  } else {
    g.M = M;
    g.batch = batch;
    g.strideA = a.dim(-2) * a.dim(-1);
    g.strideB = b_shared ? 0 : b.dim(-2) * b.dim(-1);
    g.strideC = M * N;
  }
  gemm(ctx, g, op);
  if (C != &c) kern::copy_convert(*C, c);
}

void linear_bias(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y) {
  const char* op = "linear";
  DeviceContext& ctx = context_of(y, op);
  if (x.cols() == 0) kern::fill(y, 0);
  else if (gemm2d(ctx, x, false, w, true, y, 1.f, 0.f, op, &bias)) return;
  add(y, bias, y, 1.f, 1.f);
}

void linear_weight_grad(const Tensor& gy, const Tensor& x, Tensor& gw, Tensor* gb) {
  const char* op = "linearWeightGrad";
  DeviceContext& ctx = context_of(gw, op);
  if (gy.rows() == 0) {
    kern::fill(gw, 0);
    if (gb) kern::fill(*gb, 0);
    return;
  }
  if (gemm2d(ctx, gy, true, x, false, gw, 1.f, 0.f, op, nullptr, gb) || !gb) return;
  sum_rows(gy, *gb);
}

}  // namespace owlet::kern
