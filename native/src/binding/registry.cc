#include "registry.h"

#include <new>

namespace owlet {

std::vector<OpEntry>& op_registry() {
  static std::vector<OpEntry> ops;
  return ops;
}

static Napi::Value throw_js(Napi::Env env, const char* op, const char* code, const std::string& msg) {
  // JS run while reading the arguments (a getter, a Proxy trap) may have thrown already: that exception stands (a
  // second one on top would abort node)
  if (env.IsExceptionPending()) return env.Undefined();
  Napi::Error err = Napi::Error::New(env, std::string(op) + ": " + msg);
  err.Value().Set("code", Napi::String::New(env, code));
  err.Value().Set("op", Napi::String::New(env, op));
  err.ThrowAsJavaScriptException();
  return env.Undefined();
}

namespace {
int ops_running = 0;  // ops on the stack: more than one when reading an argument ran JS that called another op
struct Running {
  Running() { ops_running++; }
  ~Running() { ops_running--; }
};
}  // namespace

bool op_running() { return ops_running > 0; }

Napi::Value run_op(const Napi::CallbackInfo& info, const char* name, Napi::Value (*body)(Args&)) {
  Napi::Env env = info.Env();
  Running running;
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
