// Ops register themselves by name at static-initialisation time; the addon's init exports every registered op.
// Each op body gets an Args, which unwraps and checks arguments and turns failures into typed JS errors.
#pragma once
#include <napi.h>

#include <functional>
#include <string>
#include <vector>

#include "args.h"

namespace owlet {

using OpFn = Napi::Value (*)(const Napi::CallbackInfo&);
struct OpEntry {
  const char* name;
  OpFn fn;
};
std::vector<OpEntry>& op_registry();

struct OpRegistrar {
  OpRegistrar(const char* name, OpFn fn) { op_registry().push_back({name, fn}); }
};

// Runs an op body, translating owlet::Error and std exceptions into a JS Error with `code` and `op` properties.
Napi::Value run_op(const Napi::CallbackInfo& info, const char* name, Napi::Value (*body)(Args&));

// Throws a JS Error "op: msg" with `code` and `op` properties; leaves an exception already pending as it is.
Napi::Value throw_js(Napi::Env env, const char* op, const char* code, const std::string& msg);

// Whether an op is between reading its arguments and returning. Reading an argument can run JS (a getter on an
// array element, a Proxy): a tensor disposed from there would free storage the op already holds a reference to.
bool op_running();

}  // namespace owlet

#define OWLET_OP(NAME)                                                                                  \
  static Napi::Value NAME##_body(owlet::Args& a);                                                       \
  static owlet::OpRegistrar NAME##_registrar(                                                           \
      #NAME, [](const Napi::CallbackInfo& info) -> Napi::Value { return owlet::run_op(info, #NAME, NAME##_body); }); \
  static Napi::Value NAME##_body(owlet::Args& a)
