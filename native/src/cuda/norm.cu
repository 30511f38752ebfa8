// LayerNorm and RMSNorm, forward and backward, fp32 statistics (two passes over the row: mean, then the centred sum
// of squares, so no cancellation). Rows held in registers (norm_rows.cuh: a warp per row up to 1024 bf16, else a
// block) where they fit and are aligned; otherwise one block per row re-reading the row from L1/L2, not from DRAM.
// Weight and bias gradients are column sums over rows, computed deterministically: in gx's pass where the row
// kernels take the call (norm_rows::bwd_params_kernel, then reduce_cols' final kernel), else by reduce_cols.
#include <type_traits>

#include "../core/kernels.h"
#include "common.cuh"
#include "norm_rows.cuh"
#include "reduce_cols_launch.cuh"

namespace owlet::kern {

using namespace owlet::cuda;

namespace {

int row_threads(int64_t C) { return C <= 256 ? 64 : C <= 1024 ? 128 : 256; }

// The row a norm reads: x's, or sum = x + res formed here (rounded to T as an add kernel stores it); each thread
// later re-reads only the elements it wrote, so no barrier is needed before the statistics.
template <class T>
__device__ __forceinline__ const T* norm_row(const T* x, const T* res, T* sum, int64_t row, int64_t C) {
  const T* xr = x + row * C;
  if (!res) return xr;
  const T* rr = res + row * C;
  T* sr = sum + row * C;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) sr[j] = from_f<T>(__fadd_rn(to_f(xr[j]), to_f(rr[j])));
  return sr;
}

// gx = v (+ add[i]): v rounded to T first, then the sum rounded, as storing gx and adding in a second kernel would.
template <class T>
__device__ __forceinline__ void store_gx(FOut gx, const T* add, int64_t i, float v) {
  if (add) v = __fadd_rn(to_f(from_f<T>(v)), to_f(add[i]));
  gx.set(i, v);
}

template <class T>
__global__ void layernorm_fwd_kernel(const T* x, const T* res, T* sum, FIn w, bool has_w, FIn b, bool has_b, FOut y,
                                     FOut mean_out, FOut rstd_out, int64_t C, float eps) {
  __shared__ float scratch[32];
  int64_t row = blockIdx.x;
  const T* xr = norm_row(x, res, sum, row, C);
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += to_f(xr[j]);
  float mean = block_sum(s, scratch) / float(C);
  float ss = 0.f;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    float d = to_f(xr[j]) - mean;
    ss += d * d;
  }
  float rstd = 1.f / sqrtf(block_sum(ss, scratch) / float(C) + eps);
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    float v = (to_f(xr[j]) - mean) * rstd;
    if (has_w) v *= w[j];
    if (has_b) v += b[j];
    y.set(row * C + j, v);
  }
  if (threadIdx.x == 0) {
    mean_out.set(row, mean);
    rstd_out.set(row, rstd);
  }
}

// gx = rstd · (g − mean(g) − x̂ · mean(g · x̂)) with g = gy · w, x̂ = (x − mean) · rstd.
template <class T>
__global__ void layernorm_bwd_kernel(const T* gy, const T* x, FIn w, bool has_w, FIn mean_in, FIn rstd_in, FOut gx,
                                     const T* gx_add, int64_t C) {
  __shared__ float scratch[32];
  int64_t row = blockIdx.x;
  const T *gr = gy + row * C, *xr = x + row * C;
  float mean = mean_in[row], rstd = rstd_in[row];
  float sg = 0.f, sgx = 0.f;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    float g = to_f(gr[j]) * (has_w ? w[j] : 1.f);
    float xh = (to_f(xr[j]) - mean) * rstd;
    sg += g;
    sgx += g * xh;
  }
  float mg = block_sum(sg, scratch) / float(C);
  float mgx = block_sum(sgx, scratch) / float(C);
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    float g = to_f(gr[j]) * (has_w ? w[j] : 1.f);
    float xh = (to_f(xr[j]) - mean) * rstd;
    store_gx(gx, gx_add, row * C + j, rstd * (g - mg - xh * mgx));
  }
}

template <class T>
__global__ void rmsnorm_fwd_kernel(const T* x, const T* res, T* sum, FIn w, FOut y, FOut rstd_out, int64_t C, float eps) {
  __shared__ float scratch[32];
  int64_t row = blockIdx.x;
  const T* xr = norm_row(x, res, sum, row, C);
  float ss = 0.f;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    float v = to_f(xr[j]);
    ss += v * v;
  }
  float rstd = 1.f / sqrtf(block_sum(ss, scratch) / float(C) + eps);
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) y.set(row * C + j, to_f(xr[j]) * rstd * w[j]);
  if (threadIdx.x == 0) rstd_out.set(row, rstd);
}

// gx = rstd · (g − x̂ · mean(g · x̂)) with g = gy · w, x̂ = x · rstd.
template <class T>
__global__ void rmsnorm_bwd_kernel(const T* gy, const T* x, FIn w, FIn rstd_in, FOut gx, const T* gx_add, int64_t C) {
  __shared__ float scratch[32];
  int64_t row = blockIdx.x;
  const T *gr = gy + row * C, *xr = x + row * C;
  float rstd = rstd_in[row];
  float sgx = 0.f;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) sgx += to_f(gr[j]) * w[j] * to_f(xr[j]) * rstd;
  float mgx = block_sum(sgx, scratch) / float(C);
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    float xh = to_f(xr[j]) * rstd;
    store_gx(gx, gx_add, row * C + j, rstd * (to_f(gr[j]) * w[j] - xh * mgx));
  }
}

// Per (row, col): gy · x̂ and gy, summed over rows into gw and gb.
struct LayerNormParamGrads {
  FIn gy, x, mean, rstd;
  int64_t C;
  __device__ void operator()(int64_t r, int64_t c, float (&v)[2]) const {
    float g = gy[r * C + c];
    v[0] = g * (x[r * C + c] - mean[r]) * rstd[r];
    v[1] = g;
  }
};
struct RmsNormParamGrad {
  FIn gy, x, rstd;
  int64_t C;
  __device__ void operator()(int64_t r, int64_t c, float (&v)[1]) const { v[0] = gy[r * C + c] * x[r * C + c] * rstd[r]; }
};

}  // namespace

namespace {

// The residual and its sum (or nulls), both in x's dtype.
template <class T>
std::pair<const T*, T*> residual_ptrs(const Tensor& x, const Tensor* residual, Tensor* sum, const char* op) {
  if (!residual) return {nullptr, nullptr};
  if (residual->dtype != x.dtype || sum->dtype != x.dtype)
    fail(ErrorKind::DType, std::string(op) + ": the residual " + residual->describe() + " and the sum must have x's dtype " + x.describe());
  return {residual->data<T>(), sum->data<T>()};
}

// Whether the register-resident kernels (norm_rows.cuh) take these rows: a row of whole 16-byte packs that fits,
// every row tensor 16-byte aligned, f32 statistics.
template <class T>
bool rows_fit(int64_t C, std::initializer_list<const void*> rows, std::initializer_list<const Tensor*> stats) {
  if (!norm_rows::fits<T>(C) || !vec_enabled()) return false;
  for (const void* p : rows)
    if (p && reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  for (const Tensor* t : stats)
    if (t && t->dtype != DType::F32) return false;
  return true;
}

// A warp per row (norm_rows.cuh, G = 32) for rows of at most 32 · kPacks packs, unless OWLET_NORM_ROWS=block (read
// per call); a block per row otherwise. Session 12's H200 measured it no faster (the ViT's 4112 × 1024 residual
// LayerNorm forward 1305 GB/s against 1290); both H200 calls of session 17 measured it faster, forward and backward
// (1897 / 2020 GB/s against 1802 / 1851 forward, 2644 / 2699 against 2134 / 2192 backward): the default since.
template <class T>
bool warp_per_row(int64_t C) {
  return norm_rows::fits<T, 32>(C) && !env_is("OWLET_NORM_ROWS", "block");
}

// Calls launch(std::integral_constant<int, G>) with the threads per row chosen for rows of C elements.
template <class T, class F>
void with_row_threads(int64_t C, F&& launch) {
  if (warp_per_row<T>(C)) launch(std::integral_constant<int, 32>{});
  else launch(std::integral_constant<int, norm_rows::kThreads>{});
}

// Whether a backward that wants the weight (and bias) gradients computes them in gx's pass
// (norm_rows::bwd_params_kernel) where the row kernels take the call: unless OWLET_NORM_PARAMS=separate (their own
// pass through reduce_cols, reading gy and x again; read per call).
bool fused_params() { return !env_is("OWLET_NORM_PARAMS", "separate"); }

// Whether bwd_with_params takes rows of C elements: those of a warp per row (the ViT's and the abstractor's 1024;
// wider rows keep the separate pass).
template <class T>
bool params_in_rows(int64_t C) {
  return norm_rows::fits<T, norm_rows::kParamRowThreads>(C) && fused_params();
}

// gx, and the weight (gw) and bias (gb) gradients where given, in one pass over gy and x (norm_rows::bwd_params_kernel,
// a warp per row: the backward's warp-per-row kernel ran at 2644 GB/s against a block per row's 2134 for the ViT's
// 4112 × 1024 on an H200, 2026-11-27), plus reduce_cols' final kernel over the blocks' partial sums.
template <class T, bool LN>
void bwd_with_params(DeviceContext& c, const char* op, const T* gy, const T* x, FIn w, bool has_w, const float* mean,
                     const float* rstd, T* gx, const T* ga, int64_t rows, int64_t C, FOut* gw, FOut* gb) {
  namespace d = reduce_cols_detail;
  const int64_t per = norm_rows::param_rows_per_block(rows);
  const int chunks = int((rows + per - 1) / per);
  Tensor partial(DType::F32, {2, chunks, C}, Device{DeviceKind::CUDA, c.index});
  norm_rows::bwd_params_kernel<T, LN><<<unsigned(chunks), norm_rows::kThreads, 0, c.stream>>>(
      gy, x, w, has_w, mean, rstd, gx, ga, rows, C, per, partial.f32(), chunks, gb != nullptr);
  check_launch(op);
  d::Outs<2> o{};
  for (int k = 0; k < 2; k++) {
    FOut* out = k == 0 ? gw : gb;
    o.present[k] = out != nullptr;
    if (out) o.o[k] = *out;
  }
  d::final_kernel<2><<<dim3(unsigned((C + d::kLanes - 1) / d::kLanes), 2u, 1u), d::kThreads, 0, c.stream>>>(
      partial.f32(), chunks, C, o);
}

template <class T>
const T* same_dtype_or_null(const Tensor* t, const Tensor& x, const char* op, const char* what) {
  if (!t) return nullptr;
  if (t->dtype != x.dtype) fail(ErrorKind::DType, std::string(op) + ": " + what + " " + t->describe() + " must have x's dtype " + x.describe());
  return t->data<T>();
}

}  // namespace

void layernorm_fwd(const Tensor& x, const Tensor* w, const Tensor* b, Tensor& y, Tensor& mean, Tensor& rstd,
                   float eps, const Tensor* residual, Tensor* sum) {
  const char* op = "layerNorm";
  DeviceContext& c = context_of(x, op);
  int64_t rows = x.rows(), C = x.cols();
  if (rows == 0 || C == 0) return;
  FIn fw = w ? fin(*w, op, "w") : FIn{nullptr, false}, fb = b ? fin(*b, op, "b") : FIn{nullptr, false};
  OWLET_FLOAT_SWITCH(x.dtype, T, op, {
    const auto [res_, sm_] = residual_ptrs<T>(x, residual, sum, op);
    const T* res = res_;  // (plain variables: the launch lambda below captures them)
    T* sm = sm_;
    if (y.dtype == x.dtype && rows_fit<T>(C, {x.raw(), res, sm, y.raw()}, {&mean, &rstd}))
      with_row_threads<T>(C, [&](auto g) {
        constexpr int G = decltype(g)::value;
        norm_rows::fwd_kernel<T, true, G><<<norm_rows::blocks<G>(rows), norm_rows::kThreads, 0, c.stream>>>(
            x.data<T>(), res, sm, fw, w != nullptr, fb, b != nullptr, y.data<T>(), mean.data<float>(),
            rstd.data<float>(), rows, C, eps);
      });
    else
      layernorm_fwd_kernel<T><<<unsigned(rows), row_threads(C), 0, c.stream>>>(
          x.data<T>(), res, sm, fw, w != nullptr, fb, b != nullptr, fout(y, op, "y"), fout(mean, op, "mean"),
          fout(rstd, op, "rstd"), C, eps);
  });
  check_launch(op);
}

void layernorm_bwd(const Tensor& gy, const Tensor& x, const Tensor* w, const Tensor& mean, const Tensor& rstd,
                   Tensor* gx, Tensor* gw, Tensor* gb, const Tensor* gx_add) {
  const char* op = "layerNormBackward";
  DeviceContext& c = context_of(x, op);
  int64_t rows = x.rows(), C = x.cols();
  if (C == 0) return;
  if (gy.dtype != x.dtype) fail(ErrorKind::DType, std::string(op) + ": gy " + gy.describe() + " must have x's dtype " + x.describe());
  FIn fw = w ? fin(*w, op, "w") : FIn{nullptr, false};
  FOut ow = gw ? fout(*gw, op, "gw") : FOut{}, ob = gb ? fout(*gb, op, "gb") : FOut{};
  bool params_done = false;  // gw and gb computed in gx's pass
  if (gx && rows > 0) {
    OWLET_FLOAT_SWITCH(x.dtype, T, op, {
      const T* ga = same_dtype_or_null<T>(gx_add, x, op, "gxAdd");
      const bool rows_kernels = gx->dtype == x.dtype && rows_fit<T>(C, {gy.raw(), x.raw(), gx->raw(), ga}, {&mean, &rstd});
      if (rows_kernels && (gw || gb) && params_in_rows<T>(C)) {
        bwd_with_params<T, true>(c, op, gy.data<T>(), x.data<T>(), fw, w != nullptr, mean.data<float>(),
                                 rstd.data<float>(), gx->data<T>(), ga, rows, C, gw ? &ow : nullptr, gb ? &ob : nullptr);
        params_done = true;
      } else if (rows_kernels)
        with_row_threads<T>(C, [&](auto g) {
          constexpr int G = decltype(g)::value;
          norm_rows::bwd_kernel<T, true, G><<<norm_rows::blocks<G>(rows), norm_rows::kThreads, 0, c.stream>>>(
              gy.data<T>(), x.data<T>(), fw, w != nullptr, mean.data<float>(), rstd.data<float>(), gx->data<T>(), ga,
              rows, C);
        });
      else
        layernorm_bwd_kernel<T><<<unsigned(rows), row_threads(C), 0, c.stream>>>(
            gy.data<T>(), x.data<T>(), fw, w != nullptr, fin(mean, op, "mean"), fin(rstd, op, "rstd"),
            fout(*gx, op, "gx"), ga, C);
    });
    check_launch(op);
  }
  if ((gw || gb) && !params_done) {
    FOut* outs[2] = {gw ? &ow : nullptr, gb ? &ob : nullptr};
    reduce_cols<2>(c, op, rows, C,
                   LayerNormParamGrads{fin(gy, op, "gy"), fin(x, op, "x"), fin(mean, op, "mean"), fin(rstd, op, "rstd"), C},
                   outs);
  }
}

void rmsnorm_fwd(const Tensor& x, const Tensor& w, Tensor& y, Tensor& rstd, float eps, const Tensor* residual,
                 Tensor* sum) {
  const char* op = "rmsNorm";
  DeviceContext& c = context_of(x, op);
  int64_t rows = x.rows(), C = x.cols();
  if (rows == 0 || C == 0) return;
  OWLET_FLOAT_SWITCH(x.dtype, T, op, {
    const auto [res_, sm_] = residual_ptrs<T>(x, residual, sum, op);
    const T* res = res_;  // (plain variables: the launch lambda below captures them)
    T* sm = sm_;
    if (y.dtype == x.dtype && rows_fit<T>(C, {x.raw(), res, sm, y.raw()}, {&rstd}))
      with_row_threads<T>(C, [&](auto g) {
        constexpr int G = decltype(g)::value;
        norm_rows::fwd_kernel<T, false, G><<<norm_rows::blocks<G>(rows), norm_rows::kThreads, 0, c.stream>>>(
            x.data<T>(), res, sm, fin(w, op, "w"), true, FIn{nullptr, false}, false, y.data<T>(), nullptr,
            rstd.data<float>(), rows, C, eps);
      });
    else
      rmsnorm_fwd_kernel<T><<<unsigned(rows), row_threads(C), 0, c.stream>>>(
          x.data<T>(), res, sm, fin(w, op, "w"), fout(y, op, "y"), fout(rstd, op, "rstd"), C, eps);
  });
  check_launch(op);
}

void rmsnorm_bwd(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor* gx, Tensor* gw,
                 const Tensor* gx_add) {
  const char* op = "rmsNormBackward";
  DeviceContext& c = context_of(x, op);
  int64_t rows = x.rows(), C = x.cols();
  if (C == 0) return;
  if (gy.dtype != x.dtype) fail(ErrorKind::DType, std::string(op) + ": gy " + gy.describe() + " must have x's dtype " + x.describe());
  FOut ow = gw ? fout(*gw, op, "gw") : FOut{};
  bool params_done = false;  // gw computed in gx's pass
  if (gx && rows > 0) {
    OWLET_FLOAT_SWITCH(x.dtype, T, op, {
      const T* ga = same_dtype_or_null<T>(gx_add, x, op, "gxAdd");
      const bool rows_kernels = gx->dtype == x.dtype && rows_fit<T>(C, {gy.raw(), x.raw(), gx->raw(), ga}, {&rstd});
      if (rows_kernels && gw && params_in_rows<T>(C)) {
        bwd_with_params<T, false>(c, op, gy.data<T>(), x.data<T>(), fin(w, op, "w"), true, nullptr, rstd.data<float>(),
                                  gx->data<T>(), ga, rows, C, &ow, nullptr);
        params_done = true;
      } else if (rows_kernels)
        with_row_threads<T>(C, [&](auto g) {
          constexpr int G = decltype(g)::value;
          norm_rows::bwd_kernel<T, false, G><<<norm_rows::blocks<G>(rows), norm_rows::kThreads, 0, c.stream>>>(
              gy.data<T>(), x.data<T>(), fin(w, op, "w"), true, nullptr, rstd.data<float>(), gx->data<T>(), ga, rows,
              C);
        });
      else
        rmsnorm_bwd_kernel<T><<<unsigned(rows), row_threads(C), 0, c.stream>>>(
            gy.data<T>(), x.data<T>(), fin(w, op, "w"), fin(rstd, op, "rstd"), fout(*gx, op, "gx"), ga, C);
    });
    check_launch(op);
  }
  if (gw && !params_done) {
    FOut* outs[1] = {&ow};
    reduce_cols<1>(c, op, rows, C, RmsNormParamGrad{fin(gy, op, "gy"), fin(x, op, "x"), fin(rstd, op, "rstd"), C}, outs);
  }
}

}  // namespace owlet::kern
