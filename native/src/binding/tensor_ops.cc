// Creation, copy, dtype conversion and memory accounting ops.
#include <cmath>
#include <cstring>
#include <mutex>
#include <sstream>

#include "../core/backend.h"
#include "../core/kernels.h"
#include "own_props.h"
#include "registry.h"

using namespace owlet;

static Device device_arg(Args& a, size_t i) {
  return a.present(i) ? parse_device(a.string(i, "device")) : default_device();
}

// A list's tensors (argument i), all on the first one's device, as the kernels take them.
static std::vector<const Tensor*> on_one_device(Args& a, size_t i, const char* what) {
  std::vector<Tensor*> xs = a.tensors(i, what);
  for (size_t j = 1; j < xs.size(); j++)
    OWLET_CHECK(a, xs[j]->device() == xs[0]->device(), ErrorKind::Device,
                ArgName(what, j).str() + " " + xs[j]->describe() + " is not on " + xs[0]->describe() + "'s device");
  return {xs.begin(), xs.end()};
}

// empty(dtype, shape, device?) -> uninitialised tensor
OWLET_OP(empty) { return a.ret(Tensor(a.dtype(0, "dtype"), a.shape(1, "shape"), device_arg(a, 2))); }

// full(dtype, shape, value, device?)
namespace {
std::string number_str(double v) {
  std::ostringstream o;
  o << v;
  return o.str();
}
}  // namespace

OWLET_OP(full) {
  Tensor t(a.dtype(0, "dtype"), a.shape(1, "shape"), device_arg(a, 3));
  double v = a.number(2, "value");
  if (t.dtype == DType::I32 || t.dtype == DType::I64 || t.dtype == DType::U8) {
    double lo = t.dtype == DType::U8 ? 0 : t.dtype == DType::I32 ? -2147483648.0 : -0x1p63;
    double hi = t.dtype == DType::U8 ? 255 : t.dtype == DType::I32 ? 2147483647.0 : 0x1.fffffffffffffp62;
    OWLET_CHECK(a, std::floor(v) == v && v >= lo && v <= hi, ErrorKind::Argument,
            "value " + number_str(v) + " is not a whole number that " + dtype_name(t.dtype) + " holds");
  }
  kern::fill(t, v);
  return a.ret(std::move(t));
}

// fromBuffer(dtype, shape, data: TypedArray | ArrayBuffer, device?) copies the bytes in. A Float32Array for a bf16
// tensor holds its values instead: they are rounded to bf16 on the host as they go in (kern::upload_f32_as_bf16).
OWLET_OP(fromBuffer) {
  DType dt = a.dtype(0, "dtype");
  Shape s = a.shape(1, "shape");
  Napi::Value v = a.raw(2);
  const uint8_t* src = nullptr;
  size_t len = 0;
  if (v.IsTypedArray()) {
    // The data pointer as napi_get_typedarray_info gives it: also for a view on a SharedArrayBuffer, which
    // ta.ArrayBuffer().Data() gave as null (N-API has no SharedArrayBuffer; the copy then read address 0).
    napi_typedarray_type type;
    size_t elements = 0;
    void* data = nullptr;
    OWLET_CHECK(a, napi_get_typedarray_info(a.env(), v, &type, &elements, &data, nullptr, nullptr) == napi_ok,
                ErrorKind::Argument, "data (argument 2): cannot read the typed array");
    len = v.As<Napi::TypedArray>().ByteLength();
    OWLET_CHECK(a, data || len == 0, ErrorKind::Argument, "data (argument 2): the typed array's memory cannot be read");
    src = static_cast<const uint8_t*>(data);
    if (dt == DType::BF16 && type == napi_float32_array) {
      const size_t values = size_t(shape_numel(s));
      OWLET_CHECK(a, elements == values, ErrorKind::Shape,
                  "data holds " + std::to_string(elements) + " float32 values but bf16" + shape_str(s) +
                      " needs " + std::to_string(values));
      Tensor t(dt, s, device_arg(a, 3));
      if (values) kern::upload_f32_as_bf16(t, reinterpret_cast<const float*>(src));
      return a.ret(std::move(t));
    }
  } else if (v.IsArrayBuffer()) {
    Napi::ArrayBuffer ab = v.As<Napi::ArrayBuffer>();
    src = static_cast<const uint8_t*>(ab.Data());
    len = ab.ByteLength();
    OWLET_CHECK(a, src || len == 0, ErrorKind::Argument, "data (argument 2): the ArrayBuffer's memory cannot be read");
  } else {
    a.error(ErrorKind::Argument, "data (argument 2) must be a TypedArray or an ArrayBuffer");
  }
  size_t want = size_t(shape_numel(s)) * dtype_size(dt);
  OWLET_CHECK(a, len == want, ErrorKind::Shape,
          "data holds " + std::to_string(len) + " bytes but " + dtype_name(dt) + shape_str(s) + " needs " +
              std::to_string(want));
  Tensor t(dt, s, device_arg(a, 3));
  if (want) kern::upload(t, src);
  return a.ret(std::move(t));
}

// cast(x, dtype) -> new tensor of another dtype (f32<->bf16 round to nearest even; ints <-> floats).
OWLET_OP(cast) {
  Tensor& x = a.tensor(0, "x");
  Tensor y(a.dtype(1, "dtype"), x.shape, x.device());
  kern::copy_convert(x, y);
  return a.ret(std::move(y));
}

// castMany(xs, dtype) -> [cast(x, dtype) for x in xs], in one launch on a GPU (the working copies of a layer).
OWLET_OP(castMany) {
  const std::vector<const Tensor*> src = on_one_device(a, 0, "xs");
  DType d = a.dtype(1, "dtype");
  std::vector<Tensor> ys;
  ys.reserve(src.size());
  std::vector<Tensor*> dst;
  for (const Tensor* x : src) ys.emplace_back(d, x->shape, x->device());
  for (Tensor& y : ys) dst.push_back(&y);
  kern::copy_convert_many(src, dst);
  return a.ret(std::move(ys));
}

// clone(x) -> a copy with its own storage.
OWLET_OP(clone) {
  Tensor& x = a.tensor(0, "x");
  Tensor y = a.like(x);
  kern::copy_convert(x, y);
  return a.ret(std::move(y));
}

// copyInto(dst, src): same element count, converts dtype. In place on dst (optimizer states, loading weights).
OWLET_OP(copyInto) {
  Tensor& dst = a.tensor(0, "dst");
  Tensor& src = a.tensor(1, "src");
  OWLET_CHECK(a, dst.numel() == src.numel(), ErrorKind::Shape, "dst " + dst.describe() + " and src " + src.describe() + " differ in size");
  kern::copy_convert(src, dst);
  return a.env().Undefined();
}

// fill(x, value) in place.
OWLET_OP(fill) {
  kern::fill(a.tensor(0, "x"), a.number(1, "value"));
  return a.env().Undefined();
}

OWLET_OP(synchronize) {
  kern::synchronize();
  return a.env().Undefined();
}

namespace {
// The backend's process-wide queues (queued reads, timeline marks) are plain containers: worker threads that load the
// addon each call these ops, and two at once corrupted them (a segfault within seconds of concurrent readQueue).
std::mutex& queues_mutex() {
  static std::mutex mu;
  return mu;
}
}  // namespace

// timelineMark(device?): a mark behind the work queued so far (kern::timeline_mark); timelineRead(device?) -> the
// times the device reached the marks since the last read, ms after the first, as a Float64Array.
OWLET_OP(timelineMark) {
  const Device d = device_arg(a, 0);
  std::lock_guard<std::mutex> lock(queues_mutex());
  kern::timeline_mark(d);
  return a.env().Undefined();
}

OWLET_OP(timelineRead) {
  const Device d = device_arg(a, 0);
  std::vector<double> ms;
  {
    std::lock_guard<std::mutex> lock(queues_mutex());
    ms = kern::timeline_read(d);
  }
  Napi::Float64Array out = Napi::Float64Array::New(a.env(), ms.size());
  for (size_t i = 0; i < ms.size(); i++) out[i] = ms[i];
  return out;
}

// readQueue(xs) -> ticket: copies of xs to the host queued behind the work queued so far (kern::read_queue);
// readTake(ticket) -> [ArrayBuffer per tensor], waiting for those copies only; readDrop(ticket) forgets them unread.
OWLET_OP(readQueue) {
  const std::vector<const Tensor*> xs = on_one_device(a, 0, "xs");
  std::lock_guard<std::mutex> lock(queues_mutex());
  return a.ret_number(double(kern::read_queue(xs)));
}

namespace {
uint64_t ticket_arg(Args& a) {
  const int64_t t = a.integer(0, "ticket");
  OWLET_CHECK(a, t > 0, ErrorKind::Argument, "ticket (argument 0) must be a ticket readQueue returned");
  return uint64_t(t);
}
struct TakeInto {
  Args& a;
  Napi::Array out;
};
}  // namespace

OWLET_OP(readTake) {
  TakeInto into{a, Napi::Array::New(a.env())};
  const uint64_t ticket = ticket_arg(a);
  std::lock_guard<std::mutex> lock(queues_mutex());  // (the callback runs no JS: it cannot come back here)
  kern::read_take(ticket, [](void* ctx, size_t i, const void* bytes, size_t n) {
    TakeInto& t = *static_cast<TakeInto*>(ctx);
    void* data = nullptr;
    napi_value buf;
    if (napi_create_arraybuffer(t.a.env(), n, &data, &buf) != napi_ok)
      t.a.error(ErrorKind::OutOfMemory, "cannot make an ArrayBuffer of " + std::to_string(n) + " bytes for tensor " + std::to_string(i));
    if (n) std::memcpy(data, bytes, n);
    t.a.set_result(t.out, i, Napi::Value(t.a.env(), buf));
  }, &into);
  return into.out;
}

OWLET_OP(readDrop) {
  const uint64_t ticket = ticket_arg(a);
  std::lock_guard<std::mutex> lock(queues_mutex());
  kern::read_drop(ticket);
  return a.env().Undefined();
}

// memory(device?) -> { bytesInUse, peakBytes, liveStorages }
OWLET_OP(memory) {
  Device d = device_arg(a, 0);
  Napi::Object o = Napi::Object::New(a.env());
  const std::pair<const char*, double> fields[] = {
      {"bytesInUse", double(bytes_in_use(d))}, {"peakBytes", double(peak_bytes(d))}, {"liveStorages", double(live_storages())}};
  for (const auto& [name, value] : fields)  // (own properties: no setter on Object.prototype runs)
    OWLET_CHECK(a, define_own(a.env(), o, name, Napi::Number::New(a.env(), value)), ErrorKind::Backend,
                std::string("cannot fill in ") + name);
  return o;
}

OWLET_OP(resetPeakMemory) {
  reset_peak_bytes(device_arg(a, 0));
  return a.env().Undefined();
}

OWLET_OP(info) { return backend_info(a.env()); }

// deviceCount() -> devices of this backend (CUDA: visible GPUs, without creating a context on any of them).
OWLET_OP(deviceCount) { return a.ret_number(device_count()); }

OWLET_OP(setNumThreads) {
  int64_t n = a.integer(0, "threads");
  OWLET_CHECK(a, n >= 1 && n <= 1024, ErrorKind::Argument, "threads must be in 1..1024");
  set_num_threads(int(n));
  return a.env().Undefined();
}
