// Filling in the arrays and objects the binding hands to JS (results, shapes, error objects). Napi's Set assigns, and
// an assignment runs any setter that JS put on Array.prototype or Object.prototype for that key: JS in the middle of
// an op, and a setter that throws leaves an exception pending that the next N-API call turns into a fatal abort of
// node. Defining an own data property runs no JS.
#pragma once
#include <napi.h>

#include <string>

namespace owlet {

// false when N-API refused (a JS exception pending, e.g. the stack ran out): the caller stops and lets it stand.
inline bool define_own(napi_env env, napi_value obj, napi_value key, napi_value value) {
  napi_property_descriptor d{};
  d.name = key;
  d.value = value;
  d.attributes = napi_default_jsproperty;  // writable, enumerable, configurable: what an assignment creates
  return napi_define_properties(env, obj, 1, &d) == napi_ok;
}

inline bool define_own(napi_env env, napi_value obj, const char* name, napi_value value) {
  napi_value key;
  return napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &key) == napi_ok && define_own(env, obj, key, value);
}

inline bool define_own(napi_env env, napi_value obj, uint32_t index, napi_value value) {
  return define_own(env, obj, std::to_string(index).c_str(), value);
}

// arr[i], or an empty value when N-API refuses: a getter threw (its exception stays pending), or the environment is
// terminating (Worker.terminate() while an op reads its arguments). Napi's Get answers both by throwing a JS error of
// its own, which is impossible there and aborts the whole process.
inline Napi::Value element(napi_env env, napi_value arr, uint32_t i) {
  napi_value v = nullptr;
  return napi_get_element(env, arr, i, &v) == napi_ok ? Napi::Value(env, v) : Napi::Value();
}

}  // namespace owlet
