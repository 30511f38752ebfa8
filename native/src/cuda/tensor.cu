// Fill, dtype conversion and host transfers for the CUDA backend. Uploads are queued on the device's stream
// (the host buffer is staged before cudaMemcpyAsync returns); downloads wait for the stream, so they also report
// deferred kernel errors.
#include <cstring>
#include <mutex>
#include <vector>

#include "../core/dtype.h"
#include "../core/int_convert.h"
#include "../core/kernels.h"
#include "common.cuh"
#include "multi_tensor.cuh"
#include "staging.h"
#include "vec_map.cuh"

namespace owlet::kern {

using namespace owlet::cuda;

namespace {

template <class T>
__global__ void fill_kernel(T* p, int64_t n, T v) {
  OWLET_KERNEL_LOOP(i, n) p[i] = v;
}

// Element i of any dtype as double, and double into any dtype: the conversion matrix in two switches. Rare pairs
// only; f32 <-> bf16 has its own kernel below.
__device__ __forceinline__ double load_any(const void* p, int dt, int64_t i) {
  switch (DType(dt)) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return __bfloat162float(static_cast<const bf16*>(p)[i]);
    case DType::F16: return __half2float(static_cast<const __half*>(p)[i]);
    case DType::I32: return static_cast<const int32_t*>(p)[i];
    case DType::I64: return double(static_cast<const int64_t*>(p)[i]);
    case DType::U8: return static_cast<const uint8_t*>(p)[i];
  }
  return 0;
}
__device__ __forceinline__ void store_any(void* p, int dt, int64_t i, double v) {
  switch (DType(dt)) {
    case DType::F32: static_cast<float*>(p)[i] = float(v); break;
    case DType::BF16: static_cast<bf16*>(p)[i] = __float2bfloat16_rn(float(v)); break;
    case DType::F16: static_cast<__half*>(p)[i] = __float2half_rn(float(v)); break;
    case DType::I32: static_cast<int32_t*>(p)[i] = to_i32(v); break;
    case DType::I64: static_cast<int64_t*>(p)[i] = to_i64(v); break;
    case DType::U8: static_cast<uint8_t*>(p)[i] = to_u8(v); break;
  }
}

__global__ void convert_any_kernel(const void* src, int sdt, void* dst, int ddt, int64_t n) {
  OWLET_KERNEL_LOOP(i, n) store_any(dst, ddt, i, load_any(src, sdt, i));
}

template <class S, class D>
__global__ void convert_float_kernel(const S* src, D* dst, int64_t n) {
  OWLET_KERNEL_LOOP(i, n) dst[i] = from_f<D>(to_f<S>(src[i]));
}

// One (src, dst) pair of a multi-tensor conversion: f32 -> bf16 when to_bf, else bf16 -> f32.
struct ConvertSlot {
  const void* src;
  void* dst;
  int64_t n;
  bool to_bf;
};

// Four elements per thread and step (16-byte f32 / 8-byte bf16 accesses: chunk starts are multiples of 32768
// elements and storages 256-byte aligned); the tail of a tensor whose size is not a multiple of 4 one at a time.
__global__ void convert_many_kernel(const ConvertSlot* slots, const WorkItem* items) {
  WorkItem w = items[blockIdx.x];
  ConvertSlot s = slots[w.slot];
  int64_t end = min(s.n, w.start + kChunk), end4 = w.start + (end - w.start) / 4 * 4;
  if (s.to_bf) {
    const float* src = static_cast<const float*>(s.src);
    bf16* dst = static_cast<bf16*>(s.dst);
    for (int64_t i = w.start + 4 * int64_t(threadIdx.x); i < end4; i += 4 * int64_t(blockDim.x)) {
      float4 v = *reinterpret_cast<const float4*>(src + i);
      __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
      uint2 packed;
      packed.x = *reinterpret_cast<uint32_t*>(&lo);
      packed.y = *reinterpret_cast<uint32_t*>(&hi);
      *reinterpret_cast<uint2*>(dst + i) = packed;
    }
    for (int64_t i = end4 + threadIdx.x; i < end; i += blockDim.x) dst[i] = __float2bfloat16_rn(src[i]);
  } else {
    const bf16* src = static_cast<const bf16*>(s.src);
    float* dst = static_cast<float*>(s.dst);
    for (int64_t i = w.start + 4 * int64_t(threadIdx.x); i < end4; i += 4 * int64_t(blockDim.x)) {
      uint2 packed = *reinterpret_cast<const uint2*>(src + i);
      __nv_bfloat162 lo = *reinterpret_cast<__nv_bfloat162*>(&packed.x), hi = *reinterpret_cast<__nv_bfloat162*>(&packed.y);
      float2 a = __bfloat1622float2(lo), b = __bfloat1622float2(hi);
      *reinterpret_cast<float4*>(dst + i) = make_float4(a.x, a.y, b.x, b.y);
    }
    for (int64_t i = end4 + threadIdx.x; i < end; i += blockDim.x) dst[i] = __bfloat162float(src[i]);
  }
}

}  // namespace

void copy_convert_many(const std::vector<const Tensor*>& src, const std::vector<Tensor*>& dst) {
  const char* op = "castMany";
  std::vector<ConvertSlot> slots;
  for (size_t i = 0; i < src.size(); i++) {
    const Tensor& a = *src[i];
    Tensor& b = *dst[i];
    bool f2b = a.dtype == DType::F32 && b.dtype == DType::BF16, b2f = a.dtype == DType::BF16 && b.dtype == DType::F32;
    bool aligned = aligned16(a) && aligned16(b);
    if ((f2b || b2f) && aligned && a.device() == b.device() && a.device() == src[0]->device()) {
      if (a.numel()) slots.push_back({a.raw(), b.raw(), a.numel(), f2b});
    } else {
      copy_convert(a, b);  // other dtypes, devices or a view at an odd offset: one at a time
    }
  }
  if (slots.empty()) return;
  DeviceContext& c = context_of(*src[0], op);
  std::vector<WorkItem> items = work_items(slots);
  Tensor hold;
  const ConvertSlot* ds;
  const WorkItem* di;
  upload_tables(c, slots, items, hold, &ds, &di, op);
  convert_many_kernel<<<unsigned(items.size()), 512, 0, c.stream>>>(ds, di);
  check_launch(op);
}

void fill(Tensor& x, double value) {
  int64_t n = x.numel();
  if (n == 0) return;
  DeviceContext& c = context_of(x, "fill");
  if (value == 0.0) {  // all-zero bits in every dtype
    check(cudaMemsetAsync(x.raw(), 0, x.nbytes(), c.stream), "fill", "cudaMemsetAsync");
    return;
  }
  int threads = 256, blocks = grid_for(c, n, threads);
  switch (x.dtype) {
    case DType::F32: fill_kernel<float><<<blocks, threads, 0, c.stream>>>(x.f32(), n, float(value)); break;
    case DType::BF16: {
      uint16_t bits = f32_to_bf16(float(value));
      fill_kernel<uint16_t><<<blocks, threads, 0, c.stream>>>(x.data<uint16_t>(), n, bits);
      break;
    }
    case DType::F16: {
      __half h = __float2half_rn(float(value));
      uint16_t bits;
      std::memcpy(&bits, &h, 2);
      fill_kernel<uint16_t><<<blocks, threads, 0, c.stream>>>(x.data<uint16_t>(), n, bits);
      break;
    }
    case DType::I32: fill_kernel<int32_t><<<blocks, threads, 0, c.stream>>>(x.i32(), n, to_i32(value)); break;
    case DType::I64: fill_kernel<int64_t><<<blocks, threads, 0, c.stream>>>(x.data<int64_t>(), n, to_i64(value)); break;
    case DType::U8: fill_kernel<uint8_t><<<blocks, threads, 0, c.stream>>>(x.data<uint8_t>(), n, to_u8(value)); break;
  }
  check_launch("fill");
}

void copy_convert(const Tensor& src, Tensor& dst) {
  int64_t n = src.numel();
  if (n == 0) return;
  DeviceContext& c = context_of(dst, "copy");
  if (src.device() != dst.device())
    fail(ErrorKind::Device, "copy: " + src.describe() + " and " + dst.describe() + " are on different devices");
  if (src.dtype == dst.dtype) {
    if (src.raw() != dst.raw())
      check(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, c.stream), "copy",
            "cudaMemcpyAsync");
    return;
  }
  int threads = 256, blocks = grid_for(c, n, threads);
  const bool f2b = src.dtype == DType::F32 && dst.dtype == DType::BF16, b2f = src.dtype == DType::BF16 && dst.dtype == DType::F32;
  const bool vec16 = (f2b || b2f) && vec_enabled() && aligned16(src) && aligned16(dst);
  const int vblocks = vec16 ? grid_for(c, n / 8 + 1, threads) : 0;
  if (vec16 && f2b)  // 16-byte accesses (vec_map.cuh)
    vec::convert_kernel<float, bf16><<<vblocks, threads, 0, c.stream>>>(src.f32(), dst.data<bf16>(), n);
  else if (vec16)
    vec::convert_kernel<bf16, float><<<vblocks, threads, 0, c.stream>>>(src.data<bf16>(), dst.f32(), n);
  else if (f2b)
    convert_float_kernel<float, bf16><<<blocks, threads, 0, c.stream>>>(src.f32(), dst.data<bf16>(), n);
  else if (b2f)
    convert_float_kernel<bf16, float><<<blocks, threads, 0, c.stream>>>(src.data<bf16>(), dst.f32(), n);
  else
    convert_any_kernel<<<blocks, threads, 0, c.stream>>>(src.raw(), int(src.dtype), dst.raw(), int(dst.dtype), n);
  check_launch("copy");
}

void upload(Tensor& dst, const void* host_src) {
  if (dst.nbytes() == 0) return;
  DeviceContext& c = context_of(dst, "upload");
  copy_to_device(c, dst.raw(), host_src, dst.nbytes(), "upload");
}

void upload_f32_as_bf16(Tensor& dst, const float* host_src) {
  if (dst.numel() == 0) return;
  DeviceContext& c = context_of(dst, "upload");
  // Rounded into a host buffer kept between calls (a fresh one would page-fault its megabytes in at every batch),
  // then staged like any upload; the buffer may be reused as soon as copy_to_device returns.
  static std::mutex mu;
  static std::vector<uint16_t> rounded;
  std::lock_guard<std::mutex> lock(mu);
  const size_t n = size_t(dst.numel());
  if (rounded.size() < n) rounded.resize(n);
  for (size_t i = 0; i < n; i++) rounded[i] = f32_to_bf16(host_src[i]);
  copy_to_device(c, dst.raw(), rounded.data(), n * 2, "upload");
}

void download(const Tensor& src, void* host_dst) {
  if (src.nbytes() == 0) return;
  DeviceContext& c = context_of(src, "download");
  check(cudaMemcpyAsync(host_dst, src.raw(), src.nbytes(), cudaMemcpyDeviceToHost, c.stream), "download",
        "cudaMemcpyAsync(device to host)");
  sync(c, "download");
}

void synchronize() { sync_all("synchronize"); }

namespace {
// Per device: events created on first need and reused; `used` of them recorded since the last read.
struct Timeline {
  std::vector<cudaEvent_t> events;
  size_t used = 0;
};
Timeline timelines[cuda::kMaxDevices];
}  // namespace

void timeline_mark(Device d) {
  DeviceContext& c = context(d);
  Timeline& t = timelines[c.index];
  if (t.used == t.events.size()) {
    cudaEvent_t e;
    check(cudaEventCreate(&e), "timelineMark", "cudaEventCreate");
    t.events.push_back(e);
  }
  check(cudaEventRecord(t.events[t.used++], c.stream), "timelineMark", "cudaEventRecord");
}

std::vector<double> timeline_read(Device d) {
  DeviceContext& c = context(d);
  Timeline& t = timelines[c.index];
  std::vector<double> ms;
  if (t.used == 0) return ms;
  check(cudaEventSynchronize(t.events[t.used - 1]), "timelineRead", "cudaEventSynchronize");
  for (size_t i = 0; i < t.used; i++) {
    float v = 0.f;
    check(cudaEventElapsedTime(&v, t.events[0], t.events[i]), "timelineRead", "cudaEventElapsedTime");
    ms.push_back(v);
  }
  t.used = 0;
  return ms;
}

}  // namespace owlet::kern
