#include "registry.h"

#include <new>

namespace owlet {

std::vector<OpEntry>& op_registry() {
  static std::vector<OpEntry> ops;
  return ops;
}

static Napi::Value throw_js(Napi::Env env, const char* op, const char* code, const std::string& msg) {
  Napi::Error err = Napi::Error::New(env, std::string(op) + ": " + msg);
  err.Value().Set("code", Napi::String::New(env, code));
  err.Value().Set("op", Napi::String::New(env, op));
  err.ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value run_op(const Napi::CallbackInfo& info, const char* name, Napi::Value (*body)(Args&)) {
  Napi::Env env = info.Env();
  try {
    Args a(info, name);
    Napi::Value v = body(a);
    if (env.IsExceptionPending()) return env.Undefined();
    return v;
  } catch (const Error& e) {
    return throw_js(env, name, error_code(e.kind), e.what());
  } catch (const std::bad_alloc&) {
    return throw_js(env, name, "OWLET_OOM", "out of host memory");
  } catch (const std::exception& e) {
    return throw_js(env, name, "OWLET_BACKEND", e.what());
  }
}

}  // namespace owlet
