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
  int64_t n = 1;
  for (auto v : s) n *= v;
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
