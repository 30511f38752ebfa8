// What differs between the CPU and CUDA addons at the binding level: their name, default device, and info.
#pragma once
#include <napi.h>

#include <string>

#include "tensor.h"

namespace owlet {

const char* backend_name();
Device default_device();
Device parse_device(const std::string& s);  // throws Error(Device) for a device this backend cannot use
Napi::Object backend_info(Napi::Env env);
void set_num_threads(int n);

}  // namespace owlet
