// OWLET_VECTOR_CLONES: compile a function for the baseline ISA (x86-64-v2, the addon's target) and again for AVX2
// and AVX-512; the loader picks the best the CPU has (an ifunc; GCC clones a function's OpenMP regions with it).
// The addon is built for x86-64-v2 so that it loads anywhere, which leaves the elementwise loops at 4 lanes.
//
// A clone gives the same bits as the baseline wherever each element's arithmetic is done alone (every op is IEEE and
// -ffp-contract=off keeps multiplies and adds separately rounded); a vectorised reduction (`omp simd reduction`)
// sums in another order per vector width, so the loops that have one are kept out of clones unless their sums'
// order is fixed by hand (lora.cc's blocks).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define OWLET_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define OWLET_VECTOR_CLONES
#endif
