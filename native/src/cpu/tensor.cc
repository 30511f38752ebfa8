// Fill, dtype conversion and host transfers for the CPU backend.
#include <chrono>
#include <cstring>

#include "../core/int_convert.h"
#include "../core/kernels.h"
#include "../core/queued_reads.h"

namespace owlet::kern {

namespace {
// Reads element i of any dtype as double, writes double into any dtype: the conversion matrix in two small switches.
inline double load(const Tensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::F32: return t.data<float>()[i];
    case DType::BF16: return bf16_to_f32(t.data<uint16_t>()[i]);
    case DType::F16: return f16_to_f32(t.data<uint16_t>()[i]);
    case DType::I32: return t.data<int32_t>()[i];
    case DType::I64: return double(t.data<int64_t>()[i]);
    case DType::U8: return t.data<uint8_t>()[i];
  }
  return 0;
}
inline void store(const Tensor& t, int64_t i, double v) {
  switch (t.dtype) {
    case DType::F32: t.data<float>()[i] = float(v); break;
    case DType::BF16: t.data<uint16_t>()[i] = f32_to_bf16(float(v)); break;
    case DType::F16: fail(ErrorKind::NotImplemented, "conversion to f16 is not supported on the CPU backend");
    case DType::I32: t.data<int32_t>()[i] = to_i32(v); break;
    case DType::I64: t.data<int64_t>()[i] = to_i64(v); break;
    case DType::U8: t.data<uint8_t>()[i] = to_u8(v); break;
  }
}
}  // namespace

void fill(Tensor& x, double value) {
  int64_t n = x.numel();
  if (x.dtype == DType::F32) {
    float v = float(value), *p = x.f32();
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) p[i] = v;
    return;
  }
  for (int64_t i = 0; i < n; i++) store(x, i, value);
}

void copy_convert_many(const std::vector<const Tensor*>& src, const std::vector<Tensor*>& dst) {
  for (size_t i = 0; i < src.size(); i++) copy_convert(*src[i], *dst[i]);
}

void copy_convert(const Tensor& src, Tensor& dst) {
  int64_t n = src.numel();
  if (src.dtype == dst.dtype) {
    if (src.raw() != dst.raw()) std::memcpy(dst.raw(), src.raw(), src.nbytes());
    return;
  }
  if (src.dtype == DType::F32 && dst.dtype == DType::BF16) {
    const float* s = src.f32();
    uint16_t* d = dst.data<uint16_t>();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) d[i] = f32_to_bf16(s[i]);
    return;
  }
  if (src.dtype == DType::BF16 && dst.dtype == DType::F32) {
    const uint16_t* s = src.data<uint16_t>();
    float* d = dst.f32();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) d[i] = bf16_to_f32(s[i]);
    return;
  }
  if (src.dtype == DType::I64 && dst.dtype == DType::I32) {
    const int64_t* s = src.data<int64_t>();
    int32_t* d = dst.i32();
    for (int64_t i = 0; i < n; i++) {
      if (s[i] < INT32_MIN || s[i] > INT32_MAX) fail(ErrorKind::Argument, "i64 value out of i32 range at index " + std::to_string(i));
      d[i] = int32_t(s[i]);
    }
    return;
  }
  for (int64_t i = 0; i < n; i++) store(dst, i, load(src, i));
}

void upload(Tensor& dst, const void* host_src) { std::memcpy(dst.raw(), host_src, dst.nbytes()); }
void upload_f32_as_bf16(Tensor& dst, const float* host_src) {
  uint16_t* d = dst.data<uint16_t>();
  const int64_t n = dst.numel();
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) d[i] = f32_to_bf16(host_src[i]);
}
void download(const Tensor& src, void* host_dst) { std::memcpy(host_dst, src.raw(), src.nbytes()); }
void synchronize() {}

namespace {
// The CPU's kernels have finished when they return: a queued read is a copy made now.
QueuedReads<std::vector<std::vector<uint8_t>>> queued_reads;
}  // namespace

uint64_t read_queue(const std::vector<const Tensor*>& xs) {
  queued_reads.check_room("readQueue");
  std::vector<std::vector<uint8_t>> copies(xs.size());
  for (size_t i = 0; i < xs.size(); i++) {
    copies[i].resize(xs[i]->nbytes());
    if (!copies[i].empty()) std::memcpy(copies[i].data(), xs[i]->raw(), copies[i].size());
  }
  return queued_reads.add(std::move(copies));
}

void read_take(uint64_t ticket, ReadSink take, void* ctx) {
  const std::vector<std::vector<uint8_t>> copies = queued_reads.claim(ticket, "readTake");
  for (size_t i = 0; i < copies.size(); i++) take(ctx, i, copies[i].data(), copies[i].size());
}

void read_drop(uint64_t ticket) { queued_reads.claim(ticket, "readDrop"); }

namespace {
std::vector<std::chrono::steady_clock::time_point> timeline;
}
void timeline_mark(Device) { timeline.push_back(std::chrono::steady_clock::now()); }
std::vector<double> timeline_read(Device) {
  std::vector<double> ms;
  for (const auto& t : timeline) ms.push_back(std::chrono::duration<double, std::milli>(t - timeline.front()).count());
  timeline.clear();
  return ms;
}

}  // namespace owlet::kern
