// Runs the 16-byte elementwise kernels (native/src/cuda/vec_map.cuh) through the host emulator, with the ops' own
// functors, against the same functor applied element by element on the host: bit for bit, for bf16 and f32, lengths
// that leave a tail (n % 8 or n % 4), a length below one pack, an in-place output (axpy), two outputs (swiglu's
// backward); the element-by-element kernel (map_scalar_kernel, mixed dtypes) likewise; and the f32 <-> bf16
// conversion (convert_kernel). Build and run:
// scripts/flash-emu.sh.
#include "emu_kernel.h"

#include "../../native/src/cuda/vec_map.cuh"
#include "emu_values.h"

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace v = owlet::cuda::vec;
using owlet::cuda::bf16;

using namespace emu_values;

namespace {

int failures = 0;

// Runs functor f over NI random inputs of length n (output o aliasing input `inplace` when >= 0) on the vector
// kernel, and compares with f applied element by element.
template <class T, int NI, int NO, class F>
void check(const char* name, int64_t n, F f, int inplace = -1) {
  std::mt19937 rng(unsigned(n * 7 + NI));
  std::normal_distribution<float> nd(0.f, 2.f);
  std::vector<std::vector<T>> in(NI, std::vector<T>(size_t(n))), out(NO, std::vector<T>(size_t(n)));
  for (auto& a : in) for (auto& e : a) e = from_float<T>(nd(rng));
  std::vector<std::vector<T>> want(NO, std::vector<T>(size_t(n)));
  for (int64_t i = 0; i < n; i++) {
    float x[NI], y[NO];
    for (int a = 0; a < NI; a++) x[a] = to_float(in[size_t(a)][size_t(i)]);
    f(x, y);
    for (int o = 0; o < NO; o++) want[size_t(o)][size_t(i)] = from_float<T>(y[o]);
  }
  v::Operands<NI, NO> ops{};
  for (int a = 0; a < NI; a++) ops.in[a] = in[size_t(a)].data();
  for (int o = 0; o < NO; o++) ops.out[o] = inplace >= 0 && o == 0 ? static_cast<void*>(in[size_t(inplace)].data()) : out[size_t(o)].data();
  constexpr int N = v::Pack<T>::N;
  unsigned blocks = unsigned(std::max<int64_t>(1, std::min<int64_t>(3, n / N / 32 + 1)));  // grid-stride over several blocks
  ::emu::launch(::emu::Dim{blocks, 1, 1}, 32, 0, [&] { v::map_kernel<T, NI, NO>(ops, n, f); });
  int64_t wrong = 0;
  for (int o = 0; o < NO; o++) {
    const T* got = static_cast<const T*>(ops.out[o]);
    for (int64_t i = 0; i < n; i++) wrong += std::memcmp(&got[i], &want[size_t(o)][size_t(i)], sizeof(T)) != 0;
  }
  std::printf("%s %s %s n=%lld: %lld of %lld differ\n", wrong ? "FAIL" : "PASS", name, sizeof(T) == 2 ? "bf16" : "f32",
              (long long)n, (long long)wrong, (long long)(n * NO));
  failures += wrong != 0;
}

// The element-by-element kernel with a bf16 input and an f32 one (no common dtype: the vector path does not apply).
void check_scalar_mixed(int64_t n) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<bf16> a(static_cast<size_t>(n));
  std::vector<float> b(static_cast<size_t>(n)), out(static_cast<size_t>(n));
  for (auto& e : a) e = __float2bfloat16_rn(nd(rng));
  for (auto& e : b) e = nd(rng);
  v::ScalarOperands<2, 1> ops{};
  ops.in[0] = owlet::cuda::FIn{a.data(), true};
  ops.in[1] = owlet::cuda::FIn{b.data(), false};
  ops.out[0] = owlet::cuda::FOut{out.data(), false};
  v::AddScaled f{0.5f, -2.f};
  ::emu::launch(::emu::Dim{2, 1, 1}, 32, 0, [&] { v::map_scalar_kernel<2, 1>(ops, n, f); });
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; i++) {
    float x[2] = {__bfloat162float(a[size_t(i)]), b[size_t(i)]}, y[1];
    f(x, y);
    wrong += std::memcmp(&y[0], &out[size_t(i)], 4) != 0;
  }
  std::printf("%s scalar map, bf16 + f32 -> f32 n=%lld: %lld differ\n", wrong ? "FAIL" : "PASS", (long long)n, (long long)wrong);
  failures += wrong != 0;
}

// The f32 <-> bf16 conversion (convert_kernel, copy_convert's 16-byte path) against the element-by-element
// conversion on the host, bit for bit, specials included (±inf, NaN, the largest finite f32, a value that rounds to
// even, f32 subnormals).
template <class S, class D>
void check_convert(int64_t n) {
  std::mt19937 rng(unsigned(n + 11));
  std::normal_distribution<float> nd(0.f, 3.f);
  std::vector<S> src(static_cast<size_t>(n));
  for (auto& e : src) e = from_float<S>(nd(rng));
  const float specials[] = {INFINITY, -INFINITY, NAN, 3.4028235e38f, 1.00390625f, 1e-40f, -0.f};
  for (size_t i = 0; i < sizeof specials / sizeof *specials && i < src.size(); i++) src[i * 3 % src.size()] = from_float<S>(specials[i]);
  std::vector<D> got(static_cast<size_t>(n)), want(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i++) want[size_t(i)] = from_float<D>(to_float(src[size_t(i)]));
  const unsigned blocks = unsigned(std::max<int64_t>(1, std::min<int64_t>(3, n / 8 / 32 + 1)));
  ::emu::launch(::emu::Dim{blocks, 1, 1}, 32, 0, [&] { v::convert_kernel<S, D>(src.data(), got.data(), n); });
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; i++) {
    const bool nan = to_float(want[size_t(i)]) != to_float(want[size_t(i)]);
    wrong += nan ? to_float(got[size_t(i)]) == to_float(got[size_t(i)]) : std::memcmp(&got[size_t(i)], &want[size_t(i)], sizeof(D)) != 0;
  }
  std::printf("%s convert %s -> %s n=%lld: %lld differ\n", wrong ? "FAIL" : "PASS", sizeof(S) == 2 ? "bf16" : "f32",
              sizeof(D) == 2 ? "bf16" : "f32", (long long)n, (long long)wrong);
  failures += wrong != 0;
}

template <class T>
void all_ops(int64_t n) {
  check<T, 1, 1>("quickGelu", n, v::QuickGeluFwd{});
  check<T, 2, 1>("quickGeluBackward", n, v::QuickGeluBwd{});
  check<T, 2, 2>("quickGeluBackwardForward", n, v::QuickGeluBwdFwd{});
  check<T, 1, 1>("silu", n, v::SiluFwd{});
  check<T, 2, 1>("siluBackward", n, v::SiluBwd{});
  check<T, 2, 1>("swiglu", n, v::SwigluFwd{});
  check<T, 3, 2>("swigluBackward (both)", n, v::SwigluBwd{});
  check<T, 3, 1>("swigluBackward (gate)", n, v::SwigluBwdGate{});
  check<T, 2, 1>("swigluBackward (up)", n, v::SwigluBwdUp{});
  check<T, 2, 1>("add", n, v::AddScaled{0.75f, -1.5f});
  check<T, 2, 1>("mul", n, v::Mul{});
  check<T, 1, 1>("scale", n, v::Scale{0.3f});
  static const float by[1] = {0.37f};
  check<T, 1, 1>("mulScalarInplace (scale read on the device)", n, v::ScaleByDevice{owlet::cuda::FIn{by, false}}, 0);
  check<T, 2, 1>("axpy (in place)", n, v::Axpy{-0.25f}, 0);
}

}  // namespace

int main() {
  for (int64_t n : {5000, 8, 3, 1037}) {
    all_ops<bf16>(n);
    all_ops<float>(n);
  }
  check_scalar_mixed(301);
  for (int64_t n : {5000, 8, 3, 1037, 16}) {
    check_convert<float, bf16>(n);
    check_convert<bf16, float>(n);
  }
  return failures ? 1 : 0;
}
