// A tensor is a contiguous, typed view of a reference-counted storage. Views (reshape) share the storage; the
// storage is returned to its allocator when the last view is released, so disposing a tensor that the autograd tape
// still holds through another view is safe.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dtype.h"
#include "errors.h"

namespace owlet {

enum class DeviceKind : int { CPU = 0, CUDA = 1 };

struct Device {
  DeviceKind kind = DeviceKind::CPU;
  int index = 0;
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string name() const { return kind == DeviceKind::CPU ? "cpu" : "cuda:" + std::to_string(index); }
};

struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device;
  Storage(size_t bytes, Device d);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

struct Tensor {
  std::shared_ptr<Storage> storage;
  DType dtype = DType::F32;
  Shape shape;

  Tensor() = default;
  Tensor(DType dt, Shape sh, Device dev);  // allocates (uninitialised)

  int64_t numel() const { return shape_numel(shape); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  int ndim() const { return int(shape.size()); }
  int64_t dim(int i) const { return shape[i < 0 ? shape.size() + i : i]; }
  Device device() const { return storage ? storage->device : Device{}; }
  void* raw() const { return storage ? storage->data : nullptr; }
  template <class T> T* data() const { return static_cast<T*>(raw()); }
  float* f32() const { return data<float>(); }
  int32_t* i32() const { return data<int32_t>(); }
  std::string describe() const;  // "f32[2,3]@cpu"
  // Rows x cols view of the last axis: rows = the product of the leading dims (also when the last one is 0).
  int64_t rows() const { return shape.empty() ? 1 : shape_numel(Shape(shape.begin(), shape.end() - 1)); }
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
};

// A tensor seen as [outer, len, inner] around one axis: how concat/slice along an axis walk memory on every backend.
struct AxisView {
  int64_t outer, len, inner;
};
inline AxisView around_axis(const Tensor& t, int axis) {
  AxisView v{1, t.shape[size_t(axis)], 1};
  for (int i = 0; i < axis; i++) v.outer *= t.shape[size_t(i)];
  for (int i = axis + 1; i < t.ndim(); i++) v.inner *= t.shape[size_t(i)];
  return v;
}

// Per-device accounting for tests and the `bytesInUse(device)` API.
size_t bytes_in_use(Device d);
size_t peak_bytes(Device d);
void reset_peak_bytes(Device d);
size_t live_storages();

}  // namespace owlet
