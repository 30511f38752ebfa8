// Concatenation and slicing along an axis (strided 2-D copies), row gather/scatter (embedding lookup and its
// gradient) and image patchification. Out-of-range row indices cannot throw from a kernel: they are reported as a
// deferred error (runtime.h) at the next synchronisation, and the affected rows are zeroed (gather) or skipped
// (scatter).
#include <algorithm>
#include <cstring>

#include "../core/kernels.h"
#include "common.cuh"
#include "pitched_copy.cuh"
#include "row_gather.cuh"

namespace owlet::kern {

using namespace owlet::cuda;

namespace {


// height rows of width bytes, between two pitched buffers on the device's stream.
// 16-byte-aligned rows go through pitched_copy_kernel, the rest through cudaMemcpy2DAsync.
void copy2d(DeviceContext& c, void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
            const char* op) {
  if (width == 0 || height == 0) return;
  if (pitched_copy_fits(dst, dpitch, src, spitch, width) && vec_enabled()) {
    const int64_t w16 = int64_t(width / 16), n = w16 * int64_t(height);
    pitched_copy_kernel<<<grid_for(c, n, 256), 256, 0, c.stream>>>(static_cast<uint4*>(dst), int64_t(dpitch / 16),
                                                                     static_cast<const uint4*>(src), int64_t(spitch / 16),
                                                                     w16, int64_t(height));
    check_launch(op);
    return;
  }
  check(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, cudaMemcpyDeviceToDevice, c.stream), op,
        "cudaMemcpy2DAsync");
}

// dst rows [outer, chunk] at row pitch dlen (elements) += src rows at pitch chunk.
__global__ void accumulate_rows_kernel(FOut dst, int64_t dpitch, int64_t doff, FIn src, int64_t chunk, int64_t n) {
  OWLET_KERNEL_LOOP(i, n) {
    int64_t r = i / chunk, j = i - r * chunk;
    int64_t di = r * dpitch + doff + j;
    dst.set(di, dst.get(di) + src[i]);
  }
}

template <class T>
__global__ void gather_rows_kernel(const T* src, const int32_t* idx, T* out, int64_t n, int64_t rows, int64_t cols,
                                   int* err) {
  OWLET_KERNEL_LOOP(e, n * cols) {
    int64_t i = e / cols, j = e - i * cols;
    int32_t r = idx[i];
    if (r < 0 || r >= rows) {
      if (j == 0) *err = kGatherIndex;
      out[e] = T(0);
    } else {
      out[e] = src[int64_t(r) * cols + j];
    }
  }
}

template <class T>
__global__ void scatter_rows_copy_kernel(T* dst, const int32_t* idx, const T* src, int64_t n, int64_t rows,
                                         int64_t cols, int* err) {
  OWLET_KERNEL_LOOP(e, n * cols) {
    int64_t i = e / cols, j = e - i * cols;
    int32_t r = idx[i];
    if (r < 0 || r >= rows) {
      if (j == 0) *err = kScatterIndex;
    } else {
      dst[int64_t(r) * cols + j] = src[e];
    }
  }
}

// Repeated indices must add up: atomics (fp32, or bf16 where the destination is bf16).
template <class T>
__global__ void scatter_rows_add_kernel(T* dst, const int32_t* idx, FIn src, int64_t n, int64_t rows, int64_t cols,
                                        int* err) {
  OWLET_KERNEL_LOOP(e, n * cols) {
    int64_t i = e / cols, j = e - i * cols;
    int32_t r = idx[i];
    if (r < 0 || r >= rows) {
      if (j == 0) *err = kScatterIndex;
    } else {
      atomicAdd(dst + int64_t(r) * cols + j, from_f<T>(src[e]));
    }
  }
}

template <class T>
__global__ void patchify_kernel(const T* img, T* out, int64_t N, int64_t C, int64_t H, int64_t W, int p) {
  int64_t gh = H / p, gw = W / p, feat = C * p * p, total = N * gh * gw * feat;
  OWLET_KERNEL_LOOP(e, total) {
    int64_t f = e % feat, patch = e / feat;
    int64_t gx = patch % gw, t = patch / gw;
    int64_t gy = t % gh, n = t / gh;
    int64_t x = f % p, t2 = f / p;
    int64_t y = t2 % p, c = t2 / p;
    out[e] = img[((n * C + c) * H + gy * p + y) * W + gx * p + x];
  }
}

// Runs a kernel template on the unsigned integer type of an element size (copies need no arithmetic).
#define OWLET_BYTES_SWITCH(ES, T, ...)                                  \
  switch (ES) {                                                         \
    case 1: { using T = uint8_t; __VA_ARGS__; } break;                  \
    case 2: { using T = uint16_t; __VA_ARGS__; } break;                 \
    case 4: { using T = uint32_t; __VA_ARGS__; } break;                 \
    default: { using T = unsigned long long; __VA_ARGS__; } break;      \
  }

}  // namespace

void concat(const std::vector<const Tensor*>& xs, int axis, Tensor& out) {
  DeviceContext& c = context_of(out, "concat");
  AxisView o = around_axis(out, axis);
  size_t es = dtype_size(out.dtype);
  int64_t off = 0;
  for (const Tensor* x : xs) {
    AxisView v = around_axis(*x, axis);
    copy2d(c, static_cast<char*>(out.raw()) + size_t(off * o.inner) * es, size_t(o.len * o.inner) * es, x->raw(),
           size_t(v.len * v.inner) * es, size_t(v.len * v.inner) * es, size_t(v.outer), "concat");
    off += v.len;
  }
}

void slice(const Tensor& x, int axis, int64_t start, Tensor& out) {
  DeviceContext& c = context_of(out, "slice");
  AxisView v = around_axis(x, axis), o = around_axis(out, axis);
  size_t es = dtype_size(x.dtype);
  copy2d(c, out.raw(), size_t(o.len * o.inner) * es, static_cast<const char*>(x.raw()) + size_t(start * v.inner) * es,
         size_t(v.len * v.inner) * es, size_t(o.len * o.inner) * es, size_t(v.outer), "slice");
}

void slice_assign(Tensor& dst, const Tensor& src, int axis, int64_t start, bool accumulate) {
  DeviceContext& c = context_of(dst, "sliceAssign");
  AxisView d = around_axis(dst, axis), s = around_axis(src, axis);
  int64_t chunk = s.len * s.inner;
  if (!accumulate) {
    size_t es = dtype_size(dst.dtype);
    copy2d(c, static_cast<char*>(dst.raw()) + size_t(start * d.inner) * es, size_t(d.len * d.inner) * es, src.raw(),
           size_t(chunk) * es, size_t(chunk) * es, size_t(d.outer), "sliceAssign");
    return;
  }
  int64_t n = d.outer * chunk;
  if (n == 0) return;
  accumulate_rows_kernel<<<grid_for(c, n, 256), 256, 0, c.stream>>>(fout(dst, "sliceAssign", "dst"), d.len * d.inner,
                                                                      start * d.inner,
                                                                      fin(src, "sliceAssign", "src"), chunk, n);
  check_launch("sliceAssign");
}

// The 16-byte chunks per row when a row gather/scatter between a and b goes through row_gather.cuh, else 0: one
// dtype, rows of whole chunks and at least a warp of them (a narrower row would leave most of a block idle),
// 16-byte-aligned starts.
int64_t rows16_chunks(const Tensor& a, const Tensor& b, int64_t cols) {
  const int64_t bytes = cols * int64_t(dtype_size(a.dtype));
  const bool fit = a.dtype == b.dtype && vec_enabled() && bytes % 16 == 0 && bytes / 16 >= 32 && aligned16(a) &&
                   aligned16(b);
  return fit ? bytes / 16 : 0;
}
// Blocks for n rows of row_gather.cuh (a block per row at a time, up to 16 per SM).
unsigned rows16_blocks(const DeviceContext& c, int64_t n) {
  return unsigned(std::min<int64_t>(n, 16 * int64_t(c.prop.multiProcessorCount)));
}

void gather_rows(const Tensor& src, const Tensor& idx, Tensor& out) {
  DeviceContext& c = context_of(out, "gatherRows");
  int64_t n = idx.numel(), rows = src.rows(), cols = src.cols();
  if (n * cols == 0) return;
  if (const int64_t c16 = rows16_chunks(src, out, cols)) {
    rows16::gather_kernel<<<rows16_blocks(c, n), rows16::kThreads, 0, c.stream>>>(
        static_cast<const uint4*>(src.raw()), idx.i32(), static_cast<uint4*>(out.raw()), n, rows, c16, c.error_flag_dev,
        kGatherIndex);
    check_launch("gatherRows");
    return;
  }
  int blocks = grid_for(c, n * cols, 256);
  OWLET_BYTES_SWITCH(dtype_size(src.dtype), T,
                     gather_rows_kernel<T><<<blocks, 256, 0, c.stream>>>(src.data<T>(), idx.i32(), out.data<T>(), n,
                                                                          rows, cols, c.error_flag_dev));
  check_launch("gatherRows");
}

void scatter_rows(Tensor& dst, const Tensor& idx, const Tensor& src, bool accumulate) {
  DeviceContext& c = context_of(dst, "scatterRows");
  int64_t n = idx.numel(), rows = dst.rows(), cols = dst.cols();
  if (n * cols == 0) return;
  if (const int64_t c16 = accumulate ? 0 : rows16_chunks(src, dst, cols)) {
    rows16::scatter_kernel<<<rows16_blocks(c, n), rows16::kThreads, 0, c.stream>>>(
        static_cast<uint4*>(dst.raw()), idx.i32(), static_cast<const uint4*>(src.raw()), n, rows, c16, c.error_flag_dev,
        kScatterIndex);
    check_launch("scatterRows");
    return;
  }
  int blocks = grid_for(c, n * cols, 256);
  if (!accumulate) {
    OWLET_BYTES_SWITCH(dtype_size(dst.dtype), T,
                       scatter_rows_copy_kernel<T><<<blocks, 256, 0, c.stream>>>(
                           dst.data<T>(), idx.i32(), src.data<T>(), n, rows, cols, c.error_flag_dev));
  } else {
    FIn s = fin(src, "scatterRows", "src");
    OWLET_FLOAT_SWITCH(dst.dtype, T, "scatterRows",
                       scatter_rows_add_kernel<T><<<blocks, 256, 0, c.stream>>>(dst.data<T>(), idx.i32(), s, n, rows,
                                                                                cols, c.error_flag_dev));
  }
  check_launch("scatterRows");
}

void patchify(const Tensor& img, int p, Tensor& out) {
  DeviceContext& c = context_of(out, "patchify");
  int64_t N = img.dim(0), C = img.dim(1), H = img.dim(2), W = img.dim(3);
  int64_t total = out.numel();
  if (total == 0) return;
  if (img.dtype != out.dtype)
    fail(ErrorKind::DType, "patchify: output " + out.describe() + " must have the image's dtype " + img.describe());
  int blocks = grid_for(c, total, 256);
  OWLET_BYTES_SWITCH(dtype_size(img.dtype), T,
                     patchify_kernel<T><<<blocks, 256, 0, c.stream>>>(img.data<T>(), out.data<T>(), N, C, H, W, p));
  check_launch("patchify");
}

}  // namespace owlet::kern
