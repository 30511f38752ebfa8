// Mean cross-entropy over the rows whose label is not the ignore index, with the logits' gradient written in the
// same kernel: no fp32 copy of the logits ever exists, the loss stays on the device (no host synchronisation).
//
// Three launches: count the rows that count (one block), then one block per row — an online log-sum-exp pass over
// the V logits (16-byte loads where the row allows) and a pass writing (softmax − onehot) / count — then a
// fixed-order sum of the per-row losses (one block, so the loss repeats bit for bit).
#include "../core/kernels.h"
#include "common.cuh"
#include "vec_map_launch.cuh"

namespace owlet::kern {

using namespace owlet::cuda;

namespace {

constexpr int kRowThreads = 512;

__device__ __forceinline__ bool label_counts(int32_t label, int64_t ignore, int64_t V) {
  return int64_t(label) != ignore && label >= 0 && int64_t(label) < V;
}

__global__ void count_kernel(const int32_t* labels, int64_t N, int64_t ignore, int64_t V, float* count, int* err) {
  __shared__ float scratch[32];
  float n = 0.f;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    int32_t l = labels[i];
    if (label_counts(l, ignore, V)) n += 1.f;
    else if (int64_t(l) != ignore) *err = kLabelRange;
  }
  n = block_sum(n, scratch);
  if (threadIdx.x == 0) *count = n;
}

// (max, sum of exp(x − max)) pairs: the online log-sum-exp state, merged associatively.
struct Lse {
  float m, s;
};
__device__ __forceinline__ Lse lse_add(Lse a, float x) {
  if (x <= a.m) return {a.m, a.s + expf(x - a.m)};
  return {x, a.s * expf(a.m - x) + 1.f};  // a.m = -inf gives a.s * 0 = 0
}
__device__ __forceinline__ Lse lse_merge(Lse a, Lse b) {
  float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, 0.f};
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

template <class T> struct Vec;  // 16 bytes of T
template <> struct Vec<float> { static constexpr int n = 4; };
template <> struct Vec<bf16> { static constexpr int n = 8; };

template <class T, bool VEC>
__global__ void __launch_bounds__(kRowThreads) cross_entropy_kernel(const T* logits, const int32_t* labels, int64_t V,
                                                                    int64_t ignore, const float* count, T* dlogits,
                                                                    float* row_loss) {
  __shared__ float sm_m[32], sm_s[32];
  int64_t row = blockIdx.x;
  const T* x = logits + row * V;
  T* g = dlogits + row * V;
  int32_t label = labels[row];
  if (!label_counts(label, ignore, V)) {
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) g[j] = from_f<T>(0.f);
    if (threadIdx.x == 0) row_loss[row] = 0.f;
    return;
  }
  constexpr int W = Vec<T>::n;
  Lse st{-INFINITY, 0.f};
  if (VEC) {
    const uint4* xv = reinterpret_cast<const uint4*>(x);
    for (int64_t j = threadIdx.x; j < V / W; j += blockDim.x) {
      uint4 raw = xv[j];
      const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int k = 0; k < W; k++) st = lse_add(st, to_f(e[k]));
    }
  } else {
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) st = lse_add(st, to_f(x[j]));
  }
  // Merge the block's states: within warps by shuffles, then across warps through shared memory.
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Lse other{__shfl_xor_sync(0xffffffffu, st.m, o), __shfl_xor_sync(0xffffffffu, st.s, o)};
    st = lse_merge(st, other);
  }
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  if (lane == 0) {
    sm_m[warp] = st.m;
    sm_s[warp] = st.s;
  }
  __syncthreads();
  st = lane < nw ? Lse{sm_m[lane], sm_s[lane]} : Lse{-INFINITY, 0.f};
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Lse other{__shfl_xor_sync(0xffffffffu, st.m, o), __shfl_xor_sync(0xffffffffu, st.s, o)};
    st = lse_merge(st, other);
  }
  float lse = st.m + logf(st.s);
  float inv_count = 1.f / *count;  // count >= 1: this row counts
  if (threadIdx.x == 0) row_loss[row] = lse - to_f(x[label]);
  if (VEC) {
    const uint4* xv = reinterpret_cast<const uint4*>(x);
    uint4* gv = reinterpret_cast<uint4*>(g);
    for (int64_t j = threadIdx.x; j < V / W; j += blockDim.x) {
      uint4 raw = xv[j], out;
      const T* e = reinterpret_cast<const T*>(&raw);
      T* o = reinterpret_cast<T*>(&out);
#pragma unroll
      for (int k = 0; k < W; k++) {
        float p = expf(to_f(e[k]) - lse);
        if (j * W + k == label) p -= 1.f;
        o[k] = from_f<T>(p * inv_count);
      }
      gv[j] = out;
    }
  } else {
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
      float p = expf(to_f(x[j]) - lse);
      if (j == label) p -= 1.f;
      g[j] = from_f<T>(p * inv_count);
    }
  }
}

__global__ void mean_loss_kernel(const float* row_loss, int64_t N, const float* count, float* loss) {
  __shared__ float scratch[32];
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) s += row_loss[i];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) *loss = *count > 0.f ? s / *count : 0.f;
}

}  // namespace

// x *= s[0], s read on the device (the incoming gradient of the scalar loss): no host synchronisation. 16-byte
// accesses (vec::map): the element-by-element kernel moved the LM head's logits gradient ([3056, 32000] bf16) at
// about half the copy rate (0.27–0.31 ms of an H100 step).
void mul_scalar_inplace(Tensor& x, const Tensor& s) {
  const char* op = "mulScalarInplace";
  if (x.numel() == 0) return;
  if (s.numel() < 1) fail(ErrorKind::Shape, std::string(op) + ": s must hold one value, got " + s.describe());
  vec::map(op, {&x}, {&x}, vec::ScaleByDevice{fin(s, op, "s")});
}

void cross_entropy(const Tensor& logits, const Tensor& labels, int64_t ignore_index, Tensor& loss, Tensor& dlogits) {
  const char* op = "crossEntropy";
  DeviceContext& c = context_of(logits, op);
  expect_dtype(labels, DType::I32, op, "labels");
  expect_dtype(loss, DType::F32, op, "loss");
  if (dlogits.dtype != logits.dtype)
    fail(ErrorKind::DType, std::string(op) + ": dlogits " + dlogits.describe() + " must have the logits' dtype " +
                               logits.describe());
  int64_t N = logits.rows(), V = logits.cols();
  Tensor scratch(DType::F32, {N + 1}, logits.device());  // [count, per-row losses...]
  float* count = scratch.f32();
  float* row_loss = count + 1;
  count_kernel<<<1, 1024, 0, c.stream>>>(labels.i32(), N, ignore_index, V, count, c.error_flag_dev);
  check_launch(op);
  if (N > 0 && V > 0) {
    OWLET_FLOAT_SWITCH(logits.dtype, T, op, {
      bool vec = V % Vec<T>::n == 0;  // rows then start on 16-byte boundaries (the allocator aligns the base)
      if (vec)
        cross_entropy_kernel<T, true><<<unsigned(N), kRowThreads, 0, c.stream>>>(
            logits.data<T>(), labels.i32(), V, ignore_index, count, dlogits.data<T>(), row_loss);
      else
        cross_entropy_kernel<T, false><<<unsigned(N), kRowThreads, 0, c.stream>>>(
            logits.data<T>(), labels.i32(), V, ignore_index, count, dlogits.data<T>(), row_loss);
    });
    check_launch(op);
  }
  mean_loss_kernel<<<1, 1024, 0, c.stream>>>(row_loss, N, count, loss.f32());
  check_launch(op);
}

namespace {
constexpr int kArgmaxThreads = 256;

// (value, index) with index -1 for "nothing yet"; b wins over a when larger, or equal with a smaller index.
__device__ __forceinline__ void argmax_merge(float& v, int& i, float ov, int oi) {
  if (oi >= 0 && (i < 0 || ov > v || (ov == v && oi < i))) {
    v = ov;
    i = oi;
  }
}

__device__ __forceinline__ void argmax_take(float v, int j, float& best, int& bi) {
  if (v > best || (bi < 0 && !isnan(v))) {
    best = v;
    bi = j;
  }
}

// One block per row; each thread scans a strided slice in increasing j, so a strict > keeps its first maximum. VEC:
// 16-byte loads of Vec<T>::n consecutive values (rows of a multiple of that many: the element-by-element loads read
// the LM head's [3056, 32000] bf16 logits at about a third of the copy rate, 0.18–0.23 ms of an H100 step).
template <class T, bool VEC>
__global__ void __launch_bounds__(kArgmaxThreads) argmax_rows_kernel(const T* x, int64_t V, int32_t* out) {
  __shared__ float sv[32];
  __shared__ int si[32];
  const T* row = x + int64_t(blockIdx.x) * V;
  float best = 0.f;
  int bi = -1;
  if (VEC) {
    constexpr int W = Vec<T>::n;
    const uint4* rv = reinterpret_cast<const uint4*>(row);
    for (int64_t j = threadIdx.x; j < V / W; j += blockDim.x) {
      uint4 raw = rv[j];
      const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int k = 0; k < W; k++) argmax_take(to_f(e[k]), int(j * W + k), best, bi);
    }
  } else {
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) argmax_take(to_f(row[j]), int(j), best, bi);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, best, o);
    int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    argmax_merge(best, bi, ov, oi);
  }
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  if (lane == 0) {
    sv[warp] = best;
    si[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    best = lane < nw ? sv[lane] : 0.f;
    bi = lane < nw ? si[lane] : -1;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      float ov = __shfl_xor_sync(0xffffffffu, best, o);
      int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      argmax_merge(best, bi, ov, oi);
    }
    if (lane == 0) out[blockIdx.x] = bi < 0 ? 0 : bi;
  }
}
}  // namespace

void argmax_rows(const Tensor& x, Tensor& out) {
  const char* op = "argmaxRows";
  int64_t rows = x.rows(), V = x.cols();
  if (rows == 0) return;
  DeviceContext& c = context_of(x, op);
  expect_dtype(out, DType::I32, op, "out");
  OWLET_FLOAT_SWITCH(x.dtype, T, op, {
    // (rows then start on 16-byte boundaries when the base does: the allocator aligns it, a view may not)
    if (V % Vec<T>::n == 0 && aligned16(x) && vec_enabled())
      argmax_rows_kernel<T, true><<<unsigned(rows), kArgmaxThreads, 0, c.stream>>>(x.data<T>(), V, out.i32());
    else
      argmax_rows_kernel<T, false><<<unsigned(rows), kArgmaxThreads, 0, c.stream>>>(x.data<T>(), V, out.i32());
  });
  check_launch(op);
}

}  // namespace owlet::kern
