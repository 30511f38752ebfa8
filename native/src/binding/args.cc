#include "args.h"

#include <cmath>
#include <sstream>

#include "native_tensor.h"
#include "own_props.h"

namespace owlet {

void Args::error(ErrorKind k, const std::string& msg) const { throw Error(k, msg); }

static std::string argname(size_t i, const char* what) { return std::string(what) + " (argument " + std::to_string(i) + ")"; }

Tensor& Args::tensor(size_t i, const char* what) {
  if (i >= info_.Length() || info_[i].IsUndefined() || info_[i].IsNull())
    error(ErrorKind::Argument, "missing tensor " + argname(i, what));
  NativeTensor* nt = NativeTensor::unwrap(env(), info_[i]);
  if (!nt) error(ErrorKind::Device, argname(i, what) + " is not a tensor of this backend");
  if (nt->disposed()) error(ErrorKind::Disposed, argname(i, what) + " was already disposed");
  return nt->tensor();
}

Tensor* Args::opt_tensor(size_t i, const char* what) { return present(i) ? &tensor(i, what) : nullptr; }

std::vector<Tensor*> Args::tensors(size_t i, const char* what) { return tensor_list(i, what, false); }
std::vector<Tensor*> Args::opt_tensors(size_t i, const char* what) { return tensor_list(i, what, true); }

std::vector<Tensor*> Args::tensor_list(size_t i, const char* what, bool nullable) {
  if (i >= info_.Length() || !info_[i].IsArray()) error(ErrorKind::Argument, argname(i, what) + " must be an array of tensors");
  Napi::Array arr = info_[i].As<Napi::Array>();
  std::vector<Tensor*> out;
  out.reserve(arr.Length());
  for (uint32_t j = 0; j < arr.Length(); j++) {
    Napi::Value v = element(env(), arr, j);
    // (a getter that threw: its exception stands, and the op must not run with that entry taken as null)
    if (v.IsEmpty()) error(ErrorKind::Argument, ArgName(what, j).str() + " could not be read");
    if (nullable && (v.IsNull() || v.IsUndefined())) {
      out.push_back(nullptr);
      continue;
    }
    NativeTensor* nt = NativeTensor::unwrap(env(), v);
    if (!nt) error(ErrorKind::Device, ArgName(what, j).str() + " is not a tensor of this backend");
    if (nt->disposed()) error(ErrorKind::Disposed, ArgName(what, j).str() + " was already disposed");
    out.push_back(&nt->tensor());
  }
  return out;
}

double Args::number(size_t i, const char* what) {
  if (i >= info_.Length() || !info_[i].IsNumber()) error(ErrorKind::Argument, argname(i, what) + " must be a number");
  return info_[i].As<Napi::Number>().DoubleValue();
}

int64_t Args::integer(size_t i, const char* what) {
  double d = number(i, what);
  if (!std::isfinite(d) || std::floor(d) != d || std::fabs(d) > 0x1p62)  // (beyond 2^62 the cast below is UB)
    error(ErrorKind::Argument, argname(i, what) + " must be an integer of at most 2^62");
  return int64_t(d);
}

float Args::dropout_p(size_t i, const char* what) {
  const double p = number(i, what);
  if (!(p >= 0 && p < 1 && float(p) < 1.f))
    error(ErrorKind::Argument, argname(i, what) + " must be a dropout probability in [0, 1) (as a float), got " + std::to_string(p));
  return float(p);
}

bool Args::boolean(size_t i, const char* what) {
  if (i >= info_.Length() || !info_[i].IsBoolean()) error(ErrorKind::Argument, argname(i, what) + " must be a boolean");
  return info_[i].As<Napi::Boolean>().Value();
}

std::string Args::string(size_t i, const char* what) {
  if (i >= info_.Length() || !info_[i].IsString()) error(ErrorKind::Argument, argname(i, what) + " must be a string");
  return info_[i].As<Napi::String>().Utf8Value();
}

std::vector<double> Args::numbers(size_t i, const char* what) {
  if (i >= info_.Length() || !info_[i].IsArray()) error(ErrorKind::Argument, argname(i, what) + " must be an array of numbers");
  Napi::Array arr = info_[i].As<Napi::Array>();
  std::vector<double> out;
  for (uint32_t j = 0; j < arr.Length(); j++) {
    Napi::Value v = element(env(), arr, j);
    if (!v.IsNumber()) error(ErrorKind::Argument, argname(i, what) + " must be an array of numbers");
    out.push_back(v.As<Napi::Number>().DoubleValue());
  }
  return out;
}

Shape Args::shape(size_t i, const char* what) {
  Shape s;
  for (double d : numbers(i, what)) {
    if (!std::isfinite(d) || d < 0 || std::floor(d) != d || d > 9.0e15) {
      std::ostringstream got;  // (a dim of 2^59 is a non-negative integer: say which bound it passed)
      got << d;
      error(ErrorKind::Shape, argname(i, what) + " must hold non-negative integers of at most 9e15, got " + got.str() +
                                  " at index " + std::to_string(s.size()));
    }
    s.push_back(int64_t(d));
  }
  shape_numel(s);  // throws when the product passes 2^60 elements
  return s;
}

DType Args::dtype(size_t i, const char* what) {
  DType d;
  std::string s = string(i, what);
  if (!dtype_from_name(s, &d)) error(ErrorKind::DType, argname(i, what) + ": unknown dtype '" + s + "'");
  return d;
}

void Args::expect_dtype(const Tensor& t, ArgName what, DType d) const {
  if (t.dtype != d) error(ErrorKind::DType, what.str() + " must be " + dtype_name(d) + ", got " + t.describe());
}

void Args::expect_gradient(const Tensor& t, ArgName what) const {
  if (t.dtype != DType::F32 && t.dtype != DType::BF16)
    error(ErrorKind::DType, what.str() + " must be f32 or bf16, got " + t.describe());
}

// The CPU backend computes in f32 (bf16 is a storage type there); the CUDA backend also takes bf16 inputs.
void Args::expect_float(const Tensor& t, ArgName what) const {
#ifdef OWLET_BACKEND_CUDA
  if (t.dtype != DType::F32 && t.dtype != DType::BF16)
    error(ErrorKind::DType, what.str() + " must be f32 or bf16, got " + t.describe());
#else
  expect_dtype(t, what, DType::F32);
#endif
}

void Args::expect_rank(const Tensor& t, ArgName what, int rank) const {
  if (t.ndim() != rank)
    error(ErrorKind::Shape, what.str() + " must have " + std::to_string(rank) + " dimensions, got " + t.describe());
}

void Args::expect_shape(const Tensor& t, ArgName what, const Shape& s) const {
  if (t.shape != s) error(ErrorKind::Shape, what.str() + " must have shape " + shape_str(s) + ", got " + t.describe());
}

void Args::expect_same_shape(const Tensor& a, ArgName an, const Tensor& b, ArgName bn) const {
  if (a.shape != b.shape)
    error(ErrorKind::Shape, an.str() + " and " + bn.str() + " must have the same shape, got " + a.describe() + " and " + b.describe());
}

void Args::expect_same_device(const Tensor& a, ArgName an, const Tensor& b, ArgName bn) const {
  if (a.device() != b.device())
    error(ErrorKind::Device, an.str() + " and " + bn.str() + " are on different devices: " + a.describe() + ", " + b.describe());
}

void Args::set_result(Napi::Array arr, size_t i, Napi::Value v) const {
  if (!define_own(env(), arr, uint32_t(i), v)) error(ErrorKind::Backend, "cannot fill in result " + std::to_string(i));
}

void Args::expect_not_aliased(const Tensor& dst, ArgName dn, const Tensor& src, ArgName sn) const {
  if (dst.numel() && src.numel() && dst.storage == src.storage)
    error(ErrorKind::Argument, sn.str() + " " + src.describe() + " shares its storage with " + dn.str() + " " + dst.describe() +
                                   ", which this op writes while it reads " + sn.str() + ": pass a copy (clone)");
}

Napi::Value Args::ret(Tensor t) const { return NativeTensor::wrap(env(), std::move(t)); }

Napi::Value Args::ret(std::vector<Tensor> ts) const {
  Napi::Array arr = Napi::Array::New(env(), ts.size());
  for (size_t i = 0; i < ts.size(); i++) set_result(arr, i, NativeTensor::wrap(env(), std::move(ts[i])));
  return arr;
}

}  // namespace owlet
