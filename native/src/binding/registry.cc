#include "registry.h"

#include <new>

#include "own_props.h"

namespace owlet {

std::vector<OpEntry>& op_registry() {
  static std::vector<OpEntry> ops;
  return ops;
}

Napi::Value throw_js(Napi::Env env, const char* op, const char* code, const std::string& msg) {
  // JS run while reading the arguments (a getter, a Proxy trap) may have thrown already, or the stack ran out: that
  // exception stands (a second one on top would abort node)
  if (env.IsExceptionPending()) return env.Undefined();
  // (plain N-API rather than Napi::Error: its ThrowAsJavaScriptException aborts node when napi_throw fails)
  const std::string text = std::string(op) + ": " + msg;
  napi_value message, error, code_v, op_v;
  if (napi_create_string_utf8(env, text.c_str(), text.size(), &message) != napi_ok ||
      napi_create_error(env, nullptr, message, &error) != napi_ok ||
      napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_v) != napi_ok ||
      napi_create_string_utf8(env, op, NAPI_AUTO_LENGTH, &op_v) != napi_ok || !define_own(env, error, "code", code_v) ||
      !define_own(env, error, "op", op_v))
    return env.Undefined();
  napi_throw(env, error);
  return env.Undefined();
}

namespace {
// Ops on this thread's stack: more than one when reading an argument ran JS that called another op. Per thread: each
// worker thread that loads the addon is its own JS environment, and an op running on one must not stop a dispose on
// another (a shared counter refused them at random, and its unguarded ++/-- from two threads could stick at 1).
thread_local int ops_running = 0;
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
