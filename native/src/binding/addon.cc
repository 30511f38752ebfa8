// Module init: the NativeTensor class plus every registered op. Shared by the CPU and CUDA addons.
#include <napi.h>

#include "../core/backend.h"
#include "native_tensor.h"
#include "registry.h"

static Napi::Object init(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeTensor", owlet::NativeTensor::define(env));
  exports.Set("backend", Napi::String::New(env, owlet::backend_name()));
  for (const auto& op : owlet::op_registry()) exports.Set(op.name, Napi::Function::New(env, op.fn, op.name));
  return exports;
}

NODE_API_MODULE(owlet, init)
