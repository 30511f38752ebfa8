// Returning a JS array whose entries may be null: backward ops return a gradient only for the inputs asked for.
#pragma once
#include <napi.h>

#include <optional>
#include <vector>

#include "args.h"
#include "native_tensor.h"

namespace owlet {

inline Napi::Value ret_optional(const Args& a, std::vector<std::optional<Tensor>> ts) {
  Napi::Array arr = Napi::Array::New(a.env(), ts.size());
  for (size_t i = 0; i < ts.size(); i++)
    a.set_result(arr, i, ts[i] ? Napi::Value(NativeTensor::wrap(a.env(), std::move(*ts[i]))) : a.env().Null());
  return arr;
}

}  // namespace owlet
