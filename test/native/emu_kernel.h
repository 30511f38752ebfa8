// Included first by every host-emulator test: the CUDA names the kernel headers use (cuda_emu.h), and __device__ /
// __host__ as nothing, so the kernels compile as host functions the emulator runs as warps of fibers.
#pragma once
#define OWLET_CUDA_EMULATION 1
#include "cuda_emu.h"
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __grid_constant__
#define __grid_constant__
