#include "tensor.h"

#include <sstream>

#include "allocator.h"

namespace owlet {

Storage::Storage(size_t b, Device d) : bytes(b), device(d) { data = device_alloc(d, b); }
Storage::~Storage() { device_free(device, data, bytes); }

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); i++) o << (i ? "," : "") << s[i];
  o << "]";
  return o.str();
}

int64_t shape_numel(const Shape& s) {
  // A product past 2^60 elements cannot be allocated on any machine; refusing it here keeps every later size
  // computation (bytes, row counts, slice bounds) free of wrap-around.
  constexpr int64_t kMaxElements = int64_t(1) << 60;
  int64_t n = 1;
  for (auto v : s) {
    if (v < 0) fail(ErrorKind::Shape, "negative dimension in shape " + shape_str(s));
    if (v != 0 && n > kMaxElements / v) {
      // a later zero dimension still makes it empty
      for (auto z : s)
        if (z == 0) return 0;
      fail(ErrorKind::Shape, "shape " + shape_str(s) + " has more than 2^60 elements");
    }
    n *= v;
  }
  return n;
}

Tensor::Tensor(DType dt, Shape sh, Device dev) : dtype(dt), shape(std::move(sh)) {
  for (auto v : shape)
    if (v < 0) fail(ErrorKind::Shape, "negative dimension in shape " + shape_str(shape));
  storage = std::make_shared<Storage>(nbytes(), dev);
}

std::string Tensor::describe() const {
  return std::string(dtype_name(dtype)) + shape_str(shape) + "@" + device().name();
}

}  // namespace owlet
