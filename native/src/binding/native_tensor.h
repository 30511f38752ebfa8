// The JS-visible handle of a native tensor. It owns one reference to a storage; dispose() drops it at once and any
// later use throws OWLET_DISPOSED. If JS forgets to dispose, the garbage collector's finalizer drops it (backstop).
#pragma once
#include <napi.h>

#include "../core/tensor.h"

namespace owlet {

class NativeTensor : public Napi::ObjectWrap<NativeTensor> {
 public:
  static Napi::Function define(Napi::Env env);
  static Napi::Object wrap(Napi::Env env, Tensor t);
  // nullptr when `v` is not a NativeTensor of this addon (a tensor of another backend, a plain object, …).
  static NativeTensor* unwrap(Napi::Env env, Napi::Value v);

  explicit NativeTensor(const Napi::CallbackInfo& info);
  Tensor& tensor() { return t_; }
  bool disposed() const { return disposed_; }

 private:
  Napi::Value dispose(const Napi::CallbackInfo& info);
  Napi::Value view(const Napi::CallbackInfo& info);
  Napi::Value read(const Napi::CallbackInfo& info);
  Napi::Value get_dtype(const Napi::CallbackInfo& info);
  Napi::Value get_shape(const Napi::CallbackInfo& info);
  Napi::Value get_device(const Napi::CallbackInfo& info);
  Napi::Value get_nbytes(const Napi::CallbackInfo& info);
  Napi::Value get_disposed(const Napi::CallbackInfo& info);
  Napi::Value get_storage_id(const Napi::CallbackInfo& info);
  Napi::Value get_storage_shared(const Napi::CallbackInfo& info);

  Tensor t_;
  bool disposed_ = false;
};

}  // namespace owlet
