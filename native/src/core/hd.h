// OWLET_HD marks small inline functions that compile unchanged as host C++ and as CUDA host/device code (the
// counter-based hash of dropout masks must be the same function on both backends).
#pragma once
#ifdef __CUDACC__
#define OWLET_HD __host__ __device__ __forceinline__
#else
#define OWLET_HD inline
#endif
