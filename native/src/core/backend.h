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
// Devices this backend can place tensors on (the CPU: 1); throws Error(Backend) naming why when none is usable.
int device_count();
void set_num_threads(int n);

}  // namespace owlet
