#include "native_tensor.h"

#include <cstring>
#include <optional>

#include "../core/kernels.h"
#include "own_props.h"
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

// Throws owlet::Error when no handle can be made: N-API refuses while a JS exception is pending (the stack ran out),
// and the exception then stands; `t` is released.
Napi::Object NativeTensor::wrap(Napi::Env env, Tensor t) {
  AddonData* d = data(env);
  napi_value obj = nullptr;
  d->constructing = true;
  const napi_status st = napi_new_instance(env, d->ctor.Value(), 0, nullptr, &obj);
  d->constructing = false;
  void* p = nullptr;
  if (st != napi_ok || napi_unwrap(env, obj, &p) != napi_ok || !p)
    fail(ErrorKind::Backend, "cannot create the handle of a result " + t.describe());
  static_cast<NativeTensor*>(p)->t_ = std::move(t);
  return Napi::Object(env, obj);
}

// nullptr for anything that is not one of this addon's handles, with no JS exception left pending: an object can pass
// the InstanceOf test without being a handle (a Proxy around one, Object.create of the prototype), and
// ObjectWrap::Unwrap would then leave an exception pending that the caller's own error, thrown on top, turns into a
// fatal abort of node.
NativeTensor* NativeTensor::unwrap(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) return nullptr;
  Napi::Object o = v.As<Napi::Object>();
  // (plain N-API: Napi's InstanceOf aborts node when it fails in a terminating worker, where no error can be thrown)
  bool is = false;
  if (napi_instanceof(env, o, data(env)->ctor.Value(), &is) != napi_ok) {
    napi_value ignored;  // a Proxy trap that threw
    napi_get_and_clear_last_exception(env, &ignored);
    return nullptr;
  }
  if (!is) return nullptr;
  void* p = nullptr;
  if (napi_unwrap(env, o, &p) != napi_ok || !p) {
    napi_value ignored;
    napi_get_and_clear_last_exception(env, &ignored);
    return nullptr;
  }
  return static_cast<NativeTensor*>(p);
}

Napi::Value NativeTensor::dispose(const Napi::CallbackInfo& info) {
  if (op_running())
    return throw_js(info.Env(), "dispose", error_code(ErrorKind::Argument),
                    "a tensor cannot be disposed while an op is reading its arguments (a getter or Proxy on an "
                    "argument called dispose)");
  // Idempotent: a second dispose is harmless (scopes and `using` may both reach the same tensor).
  disposed_ = true;
  t_.storage.reset();
  return info.Env().Undefined();
}

static Napi::Value disposed_error(Napi::Env env, const char* op) {
  return throw_js(env, op, error_code(ErrorKind::Disposed), "tensor was already disposed");
}

// view's shape argument: an array of whole numbers (nullopt: an error, thrown or left pending).
static std::optional<Shape> view_shape(Napi::Env env, Napi::Value v) {
  if (!v.IsArray()) {
    throw_js(env, "view", error_code(ErrorKind::Argument), "shape must be an array");
    return std::nullopt;
  }
  Napi::Array arr = v.As<Napi::Array>();
  Shape s;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value x = element(env, arr, i);  // (may run a getter: it may throw, or dispose this tensor)
    if (x.IsEmpty() || env.IsExceptionPending()) return std::nullopt;
    double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d <= 0x1p62) || d != double(int64_t(d))) {  // (the range first: the cast of NaN or 1e300 is UB)
      throw_js(env, "view", error_code(ErrorKind::Shape), "shape must hold non-negative integers");
      return std::nullopt;
    }
    s.push_back(int64_t(d));
  }
  return s;
}

// A new handle sharing the storage, with another shape of the same element count (reshape; also how the autograd
// tape keeps a tensor alive after the user disposed their handle).
Napi::Value NativeTensor::view(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (disposed_) return disposed_error(env, "view");
  Shape s = t_.shape;
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    std::optional<Shape> given = view_shape(env, info[0]);
    if (!given) return env.Undefined();
    s = std::move(*given);
    // a getter on the shape may have disposed this tensor: a view of it would read freed storage
    if (disposed_) return disposed_error(env, "view");
  }
  int64_t n = -1;
  try {
    n = shape_numel(s);
  } catch (const Error&) {  // more than 2^60 elements: no C++ exception may leave an N-API callback
  }
  if (n != t_.numel())
    return throw_js(env, "view", error_code(ErrorKind::Shape),
                    "cannot view " + t_.describe() + " as " + shape_str(s) + " (element counts differ)");
  Tensor v = t_;
  v.shape = s;
  try {
    return wrap(env, std::move(v));
  } catch (const Error& e) {
    return throw_js(env, "view", error_code(e.kind), e.what());
  }
}

// Copies the contents into a new ArrayBuffer (host staging for device tensors happens in the backend's copy op).
Napi::Value NativeTensor::read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (disposed_) return disposed_error(env, "read");
  void* data = nullptr;
  napi_value buf;
  if (napi_create_arraybuffer(env, t_.nbytes(), &data, &buf) != napi_ok) return env.Undefined();  // (left pending)
  try {
    if (t_.nbytes()) kern::download(t_, data);
  } catch (const Error& e) {
    return throw_js(env, "read", error_code(e.kind), e.what());
  }
  return Napi::Value(env, buf);
}

Napi::Value NativeTensor::get_dtype(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), dtype_name(t_.dtype));
}

Napi::Value NativeTensor::get_shape(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array arr = Napi::Array::New(env, t_.shape.size());
  for (size_t i = 0; i < t_.shape.size(); i++)
    if (!define_own(env, arr, uint32_t(i), Napi::Number::New(env, double(t_.shape[i])))) return env.Undefined();
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
