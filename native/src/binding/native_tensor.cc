#include "native_tensor.h"

#include <cstring>

#include "../core/kernels.h"
#include "registry.h"

namespace owlet {

namespace {
struct AddonData {
  Napi::FunctionReference ctor;
  bool constructing = false;
};
AddonData* data(Napi::Env env) { return env.GetInstanceData<AddonData>(); }
}  // namespace

Napi::Function NativeTensor::define(Napi::Env env) {
  Napi::Function f = DefineClass(env, "NativeTensor",
                                 {InstanceMethod("dispose", &NativeTensor::dispose),
                                  InstanceMethod("view", &NativeTensor::view),
                                  InstanceMethod("read", &NativeTensor::read),
                                  InstanceAccessor("dtype", &NativeTensor::get_dtype, nullptr),
                                  InstanceAccessor("shape", &NativeTensor::get_shape, nullptr),
                                  InstanceAccessor("device", &NativeTensor::get_device, nullptr),
                                  InstanceAccessor("nbytes", &NativeTensor::get_nbytes, nullptr),
                                  InstanceAccessor("disposed", &NativeTensor::get_disposed, nullptr),
                                  InstanceAccessor("storageId", &NativeTensor::get_storage_id, nullptr),
                                  InstanceAccessor("storageShared", &NativeTensor::get_storage_shared, nullptr)});
  auto* d = new AddonData();
  d->ctor = Napi::Persistent(f);
  env.SetInstanceData(d);
  return f;
}

NativeTensor::NativeTensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeTensor>(info) {
  if (!data(info.Env())->constructing)
    Napi::TypeError::New(info.Env(), "NativeTensor cannot be constructed from JS; use the backend's creation ops")
        .ThrowAsJavaScriptException();
}

Napi::Object NativeTensor::wrap(Napi::Env env, Tensor t) {
  AddonData* d = data(env);
  d->constructing = true;
  Napi::Object obj = d->ctor.New({});
  d->constructing = false;
  NativeTensor* nt = Napi::ObjectWrap<NativeTensor>::Unwrap(obj);
  nt->t_ = std::move(t);
  return obj;
}

// nullptr for anything that is not one of this addon's handles, with no JS exception left pending: an object can pass
// the InstanceOf test without being a handle (a Proxy around one, Object.create of the prototype), and
// ObjectWrap::Unwrap would then leave an exception pending that the caller's own error, thrown on top, turns into a
// fatal abort of node.
NativeTensor* NativeTensor::unwrap(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) return nullptr;
  Napi::Object o = v.As<Napi::Object>();
  bool is = o.InstanceOf(data(env)->ctor.Value());
  if (env.IsExceptionPending()) env.GetAndClearPendingException();  // a Proxy trap that threw
  if (!is) return nullptr;
  void* p = nullptr;
  if (napi_unwrap(env, o, &p) != napi_ok || !p) {
    if (env.IsExceptionPending()) env.GetAndClearPendingException();
    return nullptr;
  }
  return static_cast<NativeTensor*>(p);
}

Napi::Value NativeTensor::dispose(const Napi::CallbackInfo& info) {
  if (op_running()) {
    Napi::Error err = Napi::Error::New(info.Env(), "dispose: a tensor cannot be disposed while an op is reading its "
                                                   "arguments (a getter or Proxy on an argument called dispose)");
    err.Value().Set("code", Napi::String::New(info.Env(), "OWLET_ARGUMENT"));
    err.Value().Set("op", Napi::String::New(info.Env(), "dispose"));
    err.ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  // Idempotent: a second dispose is harmless (scopes and `using` may both reach the same tensor).
  disposed_ = true;
  t_.storage.reset();
  return info.Env().Undefined();
}

static Napi::Value disposed_error(Napi::Env env, const char* op, const Tensor&) {
  Napi::Error err = Napi::Error::New(env, std::string(op) + ": tensor was already disposed");
  err.Value().Set("code", Napi::String::New(env, "OWLET_DISPOSED"));
  err.Value().Set("op", Napi::String::New(env, op));
  err.ThrowAsJavaScriptException();
  return env.Undefined();
}

// A new handle sharing the storage, with another shape of the same element count (reshape; also how the autograd
// tape keeps a tensor alive after the user disposed their handle).
Napi::Value NativeTensor::view(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (disposed_) return disposed_error(env, "view", t_);
  Shape s = t_.shape;
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!info[0].IsArray()) {
      Napi::TypeError::New(env, "view: shape must be an array").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Array arr = info[0].As<Napi::Array>();
    s.clear();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value x = arr.Get(i);
      double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : -1;
      if (!(d >= 0 && d <= 0x1p62) || d != double(int64_t(d))) {  // (the range first: the cast of NaN or 1e300 is UB)
        Napi::Error err = Napi::Error::New(env, "view: shape must hold non-negative integers");
        err.Value().Set("code", Napi::String::New(env, "OWLET_SHAPE"));
        err.ThrowAsJavaScriptException();
        return env.Undefined();
      }
      s.push_back(int64_t(d));
    }
  }
  int64_t n = -1;
  try {
    n = shape_numel(s);
  } catch (const Error&) {  // more than 2^60 elements: no C++ exception may leave an N-API callback
  }
  if (n != t_.numel()) {
    Napi::Error err = Napi::Error::New(env, "view: cannot view " + t_.describe() + " as " + shape_str(s) +
                                                " (element counts differ)");
    err.Value().Set("code", Napi::String::New(env, "OWLET_SHAPE"));
    err.Value().Set("op", Napi::String::New(env, "view"));
    err.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Tensor v = t_;
  v.shape = s;
  return wrap(env, std::move(v));
}

// Copies the contents into a new ArrayBuffer (host staging for device tensors happens in the backend's copy op).
Napi::Value NativeTensor::read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (disposed_) return disposed_error(env, "read", t_);
  Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, t_.nbytes());
  try {
    if (t_.nbytes()) kern::download(t_, buf.Data());
  } catch (const Error& e) {
    Napi::Error err = Napi::Error::New(env, std::string("read: ") + e.what());
    err.Value().Set("code", Napi::String::New(env, error_code(e.kind)));
    err.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return buf;
}

Napi::Value NativeTensor::get_dtype(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), dtype_name(t_.dtype));
}

Napi::Value NativeTensor::get_shape(const Napi::CallbackInfo& info) {
  Napi::Array arr = Napi::Array::New(info.Env(), t_.shape.size());
  for (size_t i = 0; i < t_.shape.size(); i++) arr.Set(uint32_t(i), Napi::Number::New(info.Env(), double(t_.shape[i])));
  return arr;
}

Napi::Value NativeTensor::get_device(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), disposed_ ? "disposed" : t_.device().name());
}

Napi::Value NativeTensor::get_nbytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(t_.nbytes()));
}

Napi::Value NativeTensor::get_disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), disposed_);
}

// Whether another live handle uses this storage (a view, a share): writing through this one would change theirs.
Napi::Value NativeTensor::get_storage_shared(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), t_.storage && t_.storage.use_count() > 1);
}

Napi::Value NativeTensor::get_storage_id(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(reinterpret_cast<uintptr_t>(t_.raw()) & 0xffffffffffffull));
}

}  // namespace owlet
