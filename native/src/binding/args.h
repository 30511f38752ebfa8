// Argument access and validation for op bodies. Every failure throws owlet::Error with a message that names the op,
// the argument and the shapes involved; run_op turns it into a JS exception. No math here.
#pragma once
#include <napi.h>

#include <string>
#include <vector>

#include "../core/tensor.h"

namespace owlet {

// An argument's name in a message: "x", or a list's entry "params[3]", formatted only when a message needs it (a list
// op checks every entry on every call: hundreds of parameters for AdamW).
class ArgName {
 public:
  ArgName(const char* name) : name_(name) {}  // (implicit: every plain name still reads as before)
  ArgName(const char* list, size_t i) : name_(list), index_(int64_t(i)) {}
  std::string str() const { return index_ < 0 ? std::string(name_) : name_ + ("[" + std::to_string(index_) + "]"); }

 private:
  const char* name_;
  int64_t index_ = -1;
};

class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* op) : info_(info), op_(op) {}
  Napi::Env env() const { return info_.Env(); }
  const char* op() const { return op_; }
  size_t count() const { return info_.Length(); }
  Napi::Value raw(size_t i) const { return i < info_.Length() ? info_[i] : env().Undefined(); }
  bool present(size_t i) const { return i < info_.Length() && !info_[i].IsUndefined() && !info_[i].IsNull(); }

  Tensor& tensor(size_t i, const char* what);
  Tensor* opt_tensor(size_t i, const char* what);  // undefined/null -> nullptr
  std::vector<Tensor*> tensors(size_t i, const char* what);
  std::vector<Tensor*> opt_tensors(size_t i, const char* what);  // entries may be null/undefined -> nullptr
  double number(size_t i, const char* what);
  double number_or(size_t i, const char* what, double dflt) { return present(i) ? number(i, what) : dflt; }
  int64_t integer(size_t i, const char* what);
  int64_t integer_or(size_t i, const char* what, int64_t dflt) { return present(i) ? integer(i, what) : dflt; }
  // A dropout probability in [0, 1) as the kernels take it, a float: a p just below 1 that rounds to 1.0f would drop
  // every element (and scale by 1/0), so it is refused as 1 is.
  float dropout_p(size_t i, const char* what);
  bool boolean(size_t i, const char* what);
  bool boolean_or(size_t i, const char* what, bool dflt) { return present(i) ? boolean(i, what) : dflt; }
  std::string string(size_t i, const char* what);
  Shape shape(size_t i, const char* what);
  DType dtype(size_t i, const char* what);
  std::vector<double> numbers(size_t i, const char* what);

  // Checks (OWLET_CHECK below for a condition with a message)
  [[noreturn]] void error(ErrorKind k, const std::string& msg) const;
  void expect_dtype(const Tensor& t, ArgName what, DType d) const;
  void expect_float(const Tensor& t, ArgName what) const;  // f32 (and bf16 where a backend supports it)
  // f32 or bf16 on every backend: a gradient the optimizer reads, which may be kept in the compute dtype (bf16 on the
  // CPU too, where the optimizer widens it exactly).
  void expect_gradient(const Tensor& t, ArgName what) const;
  void expect_rank(const Tensor& t, ArgName what, int rank) const;
  void expect_shape(const Tensor& t, ArgName what, const Shape& s) const;
  void expect_same_shape(const Tensor& a, ArgName an, const Tensor& b, ArgName bn) const;
  void expect_same_device(const Tensor& a, ArgName an, const Tensor& b, ArgName bn) const;
  // An in-place op's output `dst` and an input it reads while writing dst (element by element in another order, or
  // as indices) on separate storage: through a shared one (a view), the op would read what it already overwrote.
  void expect_not_aliased(const Tensor& dst, ArgName dn, const Tensor& src, ArgName sn) const;

  // Results
  Device device_of(const Tensor& like) const { return like.device(); }
  Tensor make(DType dt, Shape s, Device d) const { return Tensor(dt, std::move(s), d); }
  Tensor like(const Tensor& t) const { return Tensor(t.dtype, t.shape, t.device()); }
  Napi::Value ret(Tensor t) const;
  Napi::Value ret(std::vector<Tensor> ts) const;
  Napi::Value ret_number(double v) const { return Napi::Number::New(env(), v); }
  // arr[i] = v as an own element (no setter JS put on Array.prototype runs); throws when N-API refuses.
  void set_result(Napi::Array arr, size_t i, Napi::Value v) const;

 private:
  std::vector<Tensor*> tensor_list(size_t i, const char* what, bool nullable);
  const Napi::CallbackInfo& info_;
  const char* op_;
};

}  // namespace owlet

// Throws Error(kind, msg) from an op body when cond is false. A macro so that the message — which formats shapes and
// numbers — is built only when the check fails: built eagerly, the few messages of an op's checks cost about as much
// as the rest of its binding on every call.
#define OWLET_CHECK(args, cond, kind, msg) \
  do {                                     \
    if (!(cond)) (args).error(kind, msg);  \
  } while (0)
