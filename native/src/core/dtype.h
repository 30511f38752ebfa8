// Element types the runtime stores. Compute on the CPU backend is fp32; bf16 is a storage type there.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace owlet {

enum class DType : int { F32 = 0, BF16 = 1, I32 = 2, I64 = 3, F16 = 4, U8 = 5 };

inline size_t dtype_size(DType d) {
  switch (d) {
    case DType::F32: case DType::I32: return 4;
    case DType::BF16: case DType::F16: return 2;
    case DType::I64: return 8;
    case DType::U8: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::F16: return "f16";
    case DType::U8: return "u8";
  }
  return "?";
}

inline bool dtype_from_name(const std::string& s, DType* out) {
  static const struct { const char* n; DType d; } table[] = {
      {"f32", DType::F32}, {"bf16", DType::BF16}, {"i32", DType::I32},
      {"i64", DType::I64}, {"f16", DType::F16},   {"u8", DType::U8}};
  for (auto& e : table)
    if (s == e.n) { *out = e.d; return true; }
  return false;
}

// bf16 <-> f32 with round-to-nearest-even, NaN kept quiet.
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// IEEE half <-> f32 (safetensors F16 checkpoints).
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0) {
    if (man == 0) u = sign;
    else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) { man <<= 1; exp--; }
      man &= 0x3ff;
      u = sign | (exp << 23) | (man << 13);
    }
  } else if (exp == 31) u = sign | 0x7f800000u | (man << 13);
  else u = sign | ((exp + 127 - 15) << 23) | (man << 13);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace owlet
