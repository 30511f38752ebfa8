// Attention forward and backward: the tensor-core kernels of attention_flash.cuh for bf16 with head dim 64 or 128,
// and a plain fp32-arithmetic path for everything else (f32 inputs — what the checks against the CPU backend use —
// and other head dims). Both read [B, T, H, D] directly and never materialise the score matrix in device memory
// (the plain path keeps one row of scores in shared memory). Packed self-attention (attention_qkv_fwd/bwd, the ViT's
// fused q|k|v): the tensor-core kernels read q, k and v out of the [B, T, H, 3, D] tensor and write their gradients
// into one of that layout (flash::Params' strides; dQ finished by flash::dq_store_kernel), tuned apart from unpacked
// calls; the plain path gets contiguous copies (core/attention_packed.h).
//
// OWLET_ATTENTION=simple forces the plain path (for comparisons on the GPU machine); OWLET_ATTN_FWD picks the
// forward (w4, w8, w8s, m2, w4s: the mma.sync tile shapes of attention_flash.cuh; wgmma, wgmma-overlap: the Hopper
// forward of attention_wgmma.cuh (wgmma1: one warpgroup per block at D = 64), wgmma-ws: its warp-specialised form of
// attention_wgmma_ws.cuh, wgmma-ws-overlap: that with FlashAttention-3's intra-warpgroup overlap (correct on an H200
// but no faster than wgmma-ws, 2026-11-27: asked for by name only — autotuning does not try it), wgmma-ws-tma and
// wgmma-ws-tma-overlap: those two with their copies by TMA (tma.cuh), wgmma-wsp and wgmma-wsp-overlap: those as
// persistent kernels (wgmma-wsp: the D = 128 default since the H200 run of 2026-11-27, session 17), where they apply —
// sm_90a build, compute capability 9.0, no dropout — and w4s elsewhere); OWLET_ATTN_BWD picks the backward (mma,
// br64, wgmma, wgmma1, wgmma-q, wgmma-bulk, wgmma1-keys, wgmma-p, wgmma-ws: see bwd_variant_of and the BwdVariant
// enum). Unset (or auto): the fastest of the variants that apply, timed on the first call of each shape (see
// "autotuning" below; OWLET_ATTN_TUNE=0 turns it off, OWLET_ATTN_TUNE_SKIP keeps backward variants out of it, and the
// backward off Hopper has one kernel); else the static defaults of fwd_variant and bwd_variant_of.
// OWLET_ATTN_BWD_WARPS=4 or 8 the warps per block of the mma.sync backward; OWLET_ATTN_TAIL=1 sends the few rows and
// keys past a sequence's last whole tile to attention_tail.cuh's kernels, =0 keeps whole tiles for them; unset,
// autotuning times both (the static default is whole tiles).
// All are read per call, so that one process can compare the variants.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/attention_packed.h"
#include "../core/dropout_hash.h"
#include "../core/kernels.h"
#include "attention.h"
#include "attention_delta.cuh"
#include "attention_flash.cuh"
#include "attention_tail.cuh"
#include "attention_wgmma.cuh"
#include "attention_wgmma_bwd.cuh"
#include "attention_wgmma_bwd_short.cuh"
#include "attention_wgmma_bwd_ws.cuh"
#include "attention_wgmma_ws.cuh"
#include "common.cuh"
#include "time_candidates.h"

namespace owlet::kern {

using namespace owlet::cuda;

namespace {

constexpr int kSimpleThreads = 128;

struct Dims {
  int B, Tq, Tk, H, D;
};

bool force_simple() {
  static const bool on = env_is("OWLET_ATTENTION", "simple");
  return on;
}

// Warps per block of the tensor-core backward (keys per block = 16 × warps). Default by head dim from the H100 run
// of 2026-11-26: 4 for D = 64 (ViT fwd+bwd 0.92 ms vs 1.05 with 8), 8 for D = 128 (LLaMA 2k 3.35 ms vs 3.39) where
// the device's shared memory per block holds it (115,200 bytes: an A100 or Hopper, not the 99 KB of sm_86/89 cards).
// OWLET_ATTN_BWD_WARPS=4 or 8 overrides, read per call so that a benchmark can compare both in one process.
int bwd_warps(const DeviceContext& c, int D) {
  const char* e = std::getenv("OWLET_ATTN_BWD_WARPS");
  if (e && std::strcmp(e, "4") == 0) return 4;
  if (e && std::strcmp(e, "8") == 0) return 8;
  if (D == 64) return 4;
  return flash::bwd_smem_bytes<128, 8>() <= int(c.prop.sharedMemPerBlockOptin) ? 8 : 4;
}

// The tensor-core forward's variant, from OWLET_ATTN_FWD (read per call, like OWLET_ATTN_BWD_WARPS). A name that is
// not one of them is an argument error rather than a silent fallback, so a typo cannot pass for a measurement.
// Unset (or "auto"): the fastest measured on an H100 (2026-11-26, session 5, bench/results/gpu-2026-11-26-h100-s5):
// at D = 128 the Hopper forward (LLaMA 2k causal 261 TFLOP/s against 171 for w4, 189 for w4s) where it applies, else
// w4s; at D = 64 w4s (ViT 113 against 103 for w4; abstractor 103 against 99). wgmma1: the Hopper forward with one
// warpgroup (64 query rows) per block at D = 64 (session 7, not yet timed; D = 128 takes wgmma's two).
// wgmma-ws-tma, wgmma-ws-tma-overlap: wgmma-ws and wgmma-ws-overlap with the producer's copies by TMA; wgmma-wsp,
// wgmma-wsp-overlap: those as persistent kernels (one block per SM taking work items in turn). Session 15; on an H200
// (2026-11-27, session 17, bench/results/gpu-2026-11-27-h200-s17) every check passed and wgmma-wsp was the fastest
// forward at every D = 128 shape (LLaMA B4 T2048 causal 432 TFLOP/s against 384 for wgmma-ws and 385 for wgmma; B16
// T512 231 against 196 and 198; the trainer's autotuning chose it at all three of its shapes): the static default and
// first candidate at D = 128 since. At D = 64 it loses (ViT 120 against 193 for wgmma1).
enum class FwdVariant {
  Auto, W4, W8, W8s, M2, W4s, Wgmma, WgmmaOverlap, WgmmaWs, Wgmma1, WgmmaWsOverlap, WgmmaWsTma, WgmmaWsTmaOverlap,
  WgmmaWsp, WgmmaWspOverlap
};

// The variant `var` names, from a table whose first entry is the default ("auto": also when unset or empty).
template <class V, size_t N>
V env_variant(const char* var, const std::pair<const char*, V> (&names)[N], const char* op) {
  const char* e = std::getenv(var);
  if (!e || !*e) return names[0].second;
  std::string known;
  for (const auto& [name, v] : names) {
    if (std::strcmp(e, name) == 0) return v;
    known += (known.empty() ? "" : ", ") + std::string(name);
  }
  fail(ErrorKind::Argument, std::string(op) + ": " + var + "=" + e + " is not a variant (" + known + ")");
}

const std::pair<const char*, FwdVariant> kFwdNames[] = {
    {"auto", FwdVariant::Auto}, {"w4", FwdVariant::W4},   {"w8", FwdVariant::W8},
    {"w8s", FwdVariant::W8s},   {"m2", FwdVariant::M2},   {"w4s", FwdVariant::W4s},
    {"wgmma", FwdVariant::Wgmma}, {"wgmma-overlap", FwdVariant::WgmmaOverlap}, {"wgmma-ws", FwdVariant::WgmmaWs},
    {"wgmma1", FwdVariant::Wgmma1}, {"wgmma-ws-overlap", FwdVariant::WgmmaWsOverlap},
    {"wgmma-ws-tma", FwdVariant::WgmmaWsTma}, {"wgmma-ws-tma-overlap", FwdVariant::WgmmaWsTmaOverlap},
    {"wgmma-wsp", FwdVariant::WgmmaWsp}, {"wgmma-wsp-overlap", FwdVariant::WgmmaWspOverlap}};

FwdVariant fwd_variant(const char* op) {
  return env_variant("OWLET_ATTN_FWD", kFwdNames, op);
}

// The backward's variant, from OWLET_ATTN_BWD. Unset (or "auto"): the Hopper backward of attention_wgmma_bwd.cuh where
// it applies (H100, 2026-11-26, session 5: LLaMA 2k causal 1.47 ms against 2.34 for the mma.sync kernel; ViT 0.58 ms
// against 0.62), else the mma.sync kernel; an explicit OWLET_ATTN_BWD_WARPS asks for the mma.sync kernel. mma: the
// mma.sync kernel; br64: it at 64 queries per step at D = 128 (8 warps; default 32), for measurement — ptxas spills 92
// bytes there (see attention_flash.cuh), and it was no faster; wgmma: the Hopper backward; wgmma1: it with one
// warpgroup (64 keys) per block at D = 64 (less work on the ViT's 257 keys; written in session 7, not yet timed);
// wgmma-q: the query-major Hopper backward of attention_wgmma_bwd_short.cuh where Tq ≤ 64 and D = 64 (the
// abstractor; written in session 8, not yet timed), the Hopper backward elsewhere; wgmma-bulk: the Hopper backward
// adding dQ with one bulk reduction per row instead of atomics (session 8, not yet timed).
// wgmma1-keys: wgmma1 with the 1 to attn_tail::kMax keys past the last whole 64 computed by the last key block
// (attention_wgmma_bwd.cuh's tail_keys_*) instead of a block of their own (session 14). Its first GPU run (H200,
// session 17) failed the checks: gq off by 0.1–0.5 — the dispatch ran attention_tail.cuh's backward after it as
// well, which added the tail keys' dQ a second time (flash::bwd_tail_left now says none are left). Fixed, it passed
// every check on the H200 in the same session's second call, and was no faster than what autotuning already picks
// (ViT B64 fwd+bwd 142.8 TFLOP/s against 144.4 for wgmma1; abstractor 101.3 against 119.4 for wgmma-q): by name only.
// wgmma-p: the Hopper backward at D = 128 as a persistent kernel (session 15; on the H200 in session 17 correct, and
// no faster than wgmma: LLaMA B4 T2048 fwd+bwd 330.4 against 330.5 TFLOP/s: by name only; at D = 64 it runs as wgmma).
// wgmma-ws: the warp-specialised Hopper backward at D = 128 (attention_wgmma_bwd_ws.cuh: a TMA producer warp, a dQ
// writer warp with bulk reductions, two consumer warpgroups; session 18, emulated only until a GPU runs it): among the
// D = 128 candidates after wgmma, so that autotuning takes it only where it measures faster; at D = 64 it runs as
// wgmma, and as wgmma too where the driver cannot encode its tensor maps.
enum class BwdVariant { Auto, Mma, Br64, Wgmma, Wgmma1, WgmmaQ, WgmmaBulk, Wgmma1Keys, WgmmaP, WgmmaWs };

const std::pair<const char*, BwdVariant> kBwdNames[] = {{"auto", BwdVariant::Auto},   {"mma", BwdVariant::Mma},
                                                        {"br64", BwdVariant::Br64},   {"wgmma", BwdVariant::Wgmma},
                                                        {"wgmma1", BwdVariant::Wgmma1}, {"wgmma-q", BwdVariant::WgmmaQ},
                                                        {"wgmma-bulk", BwdVariant::WgmmaBulk},
                                                        {"wgmma1-keys", BwdVariant::Wgmma1Keys},
                                                        {"wgmma-p", BwdVariant::WgmmaP},
                                                        {"wgmma-ws", BwdVariant::WgmmaWs}};

BwdVariant bwd_variant_of(const char* op) {
  return env_variant("OWLET_ATTN_BWD", kBwdNames, op);
}

// A variant's name in its table.
template <class V, size_t N>
const char* variant_name(const std::pair<const char*, V> (&names)[N], V v) {
  for (const auto& [name, value] : names)
    if (value == v) return name;
  return "?";
}

int to_i32(int64_t v, const char* op) {
  if (v > int64_t(0x7fffffff)) fail(ErrorKind::Shape, std::string(op) + ": dimension too large");
  return int(v);
}

Dims check_dims(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask, const char* op) {
  if (q.ndim() != 4 || k.ndim() != 4 || v.ndim() != 4)
    fail(ErrorKind::Shape, std::string(op) + ": q, k, v must be [B, T, H, D], got " + q.describe() + ", " +
                               k.describe() + ", " + v.describe());
  Dims d{to_i32(q.dim(0), op), to_i32(q.dim(1), op), to_i32(k.dim(1), op), to_i32(q.dim(2), op), to_i32(q.dim(3), op)};
  if (k.shape != v.shape || k.dim(0) != d.B || k.dim(2) != d.H || k.dim(3) != d.D)
    fail(ErrorKind::Shape, std::string(op) + ": k and v must be [B, Tk, H, D] matching q: " + q.describe() + ", " +
                               k.describe() + ", " + v.describe());
  if (mask) expect_dtype(*mask, DType::I32, op, "key mask");
  return d;
}

// ------------------------------------------------------------------------------------------- the plain path

struct SimpleParams {
  FIn q, k, v, o, dout;
  FOut out, dq, dk, dv;
  float* lse;
  const float* delta;
  const int32_t* mask;
  int B, Tq, Tk, H, D;
  bool causal;
  float scale;
  bool dropout;
  uint64_t key;
  uint32_t threshold;
  float inv_keep;
};

__device__ __forceinline__ int64_t row_index(int b, int t, int T, int H, int h, int D) {
  return ((int64_t(b) * T + t) * H + h) * D;
}
__device__ __forceinline__ bool simple_visible(const SimpleParams& p, int b, int i, int j) {
  return (!p.causal || j <= i + p.Tk - p.Tq) && (!p.mask || p.mask[int64_t(b) * p.Tk + j] != 0);
}
__device__ __forceinline__ float simple_keep(const SimpleParams& p, int b, int h, int i, int j) {
  if (!p.dropout) return 1.f;
  return dropout::keep(p.key, dropout::attention_index(b, h, i, j, p.H, p.Tq, p.Tk), p.threshold) ? p.inv_keep : 0.f;
}
__device__ __forceinline__ float dot_row(FIn a, int64_t ia, FIn b, int64_t ib, int D) {
  float s = 0.f;
  for (int d = 0; d < D; d++) s += a[ia + d] * b[ib + d];
  return s;
}

// One block per (query, head, batch): scores of the row in shared memory, then the weighted sum of V.
__global__ void simple_fwd_kernel(SimpleParams p) {
  extern __shared__ float sm[];  // [Tk] scores, then 32 scratch
  float* sc = sm;
  float* scratch = sm + p.Tk;
  int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  int64_t qi = row_index(b, i, p.Tq, p.H, h, p.D);
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < p.Tk; j += blockDim.x) {
    float s = simple_visible(p, b, i, j) ? p.scale * dot_row(p.q, qi, p.k, row_index(b, j, p.Tk, p.H, h, p.D), p.D)
                                         : -INFINITY;
    sc[j] = s;
    mx = fmaxf(mx, s);
  }
  mx = block_max(mx, scratch);
  float sum = 0.f;
  for (int j = threadIdx.x; j < p.Tk; j += blockDim.x) {
    float e = mx == -INFINITY ? 0.f : expf(sc[j] - mx);
    sum += e;
    sc[j] = e * simple_keep(p, b, h, i, j);
  }
  sum = block_sum(sum, scratch);  // ends with a barrier-protected read, so sc[] is complete below
  float inv = sum > 0.f ? 1.f / sum : 0.f;
  __syncthreads();
  for (int d = threadIdx.x; d < p.D; d += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < p.Tk; j++) acc += sc[j] * p.v[row_index(b, j, p.Tk, p.H, h, p.D) + d];
    p.out.set(qi + d, acc * inv);
  }
  if (threadIdx.x == 0) p.lse[(int64_t(b) * p.H + h) * p.Tq + i] = sum > 0.f ? mx + logf(sum) : -INFINITY;
}

// dQ for one (query, head, batch): dS_j = P_j (dP_j − Δ), dQ = scale Σ_j dS_j K_j.
__global__ void simple_bwd_dq_kernel(SimpleParams p) {
  extern __shared__ float ds[];  // [Tk]
  int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  int64_t qi = row_index(b, i, p.Tq, p.H, h, p.D);
  float lse = p.lse[(int64_t(b) * p.H + h) * p.Tq + i], delta = p.delta[(int64_t(b) * p.H + h) * p.Tq + i];
  for (int j = threadIdx.x; j < p.Tk; j += blockDim.x) {
    float v = 0.f;
    if (lse != -INFINITY && simple_visible(p, b, i, j)) {
      int64_t kj = row_index(b, j, p.Tk, p.H, h, p.D);
      float pr = expf(p.scale * dot_row(p.q, qi, p.k, kj, p.D) - lse);
      float dp = dot_row(p.dout, qi, p.v, kj, p.D) * simple_keep(p, b, h, i, j);
      v = pr * (dp - delta);
    }
    ds[j] = v;
  }
  __syncthreads();
  for (int d = threadIdx.x; d < p.D; d += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < p.Tk; j++) acc += ds[j] * p.k[row_index(b, j, p.Tk, p.H, h, p.D) + d];
    p.dq.set(qi + d, p.scale * acc);
  }
}

// dK and dV for one (key, head, batch): over the queries, dV = Σ_i Z_ij P_ij dO_i and dK = scale Σ_i dS_ij Q_i.
__global__ void simple_bwd_dkv_kernel(SimpleParams p) {
  extern __shared__ float sm[];  // [Tq] dS, then [Tq] dropped P
  float* ds = sm;
  float* pz = sm + p.Tq;
  int j = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  int64_t kj = row_index(b, j, p.Tk, p.H, h, p.D);
  for (int i = threadIdx.x; i < p.Tq; i += blockDim.x) {
    float dsv = 0.f, pzv = 0.f;
    float lse = p.lse[(int64_t(b) * p.H + h) * p.Tq + i];
    if (lse != -INFINITY && simple_visible(p, b, i, j)) {
      int64_t qi = row_index(b, i, p.Tq, p.H, h, p.D);
      float pr = expf(p.scale * dot_row(p.q, qi, p.k, kj, p.D) - lse);
      float z = simple_keep(p, b, h, i, j);
      float dp = dot_row(p.dout, qi, p.v, kj, p.D) * z;
      dsv = pr * (dp - p.delta[(int64_t(b) * p.H + h) * p.Tq + i]);
      pzv = pr * z;
    }
    ds[i] = dsv;
    pz[i] = pzv;
  }
  __syncthreads();
  for (int d = threadIdx.x; d < p.D; d += blockDim.x) {
    float ak = 0.f, av = 0.f;
    for (int i = 0; i < p.Tq; i++) {
      int64_t qi = row_index(b, i, p.Tq, p.H, h, p.D);
      ak += ds[i] * p.q[qi + d];
      av += pz[i] * p.dout[qi + d];
    }
    p.dk.set(kj + d, p.scale * ak);
    p.dv.set(kj + d, av);
  }
}

size_t simple_smem(const DeviceContext& c, int floats, const char* op) {
  // Rounded up and padded by 4 floats: ptxas may merge the unrolled shared-memory reads of the weighted-sum loops
  // into 8/12/16-byte loads whose tail lies past the last score (compute-sanitizer flagged a 12-byte read at
  // Tk = 45); the padding keeps those loads inside the allocation. The extra values are never used.
  size_t bytes = (size_t(floats + 3) / 4 * 4 + 4) * sizeof(float);
  if (bytes > c.prop.sharedMemPerBlockOptin)
    fail(ErrorKind::Shape, std::string(op) + ": sequence too long for the plain attention path (" +
                               std::to_string(floats) + " scores per row); use bf16 with head dim 64 or 128");
  return bytes;
}

// Whether the rows and keys past the last whole tile go to attention_tail.cuh (never with dropout): always with
// OWLET_ATTN_TAIL=1, never with =0, else when this call's candidate asks (fp.whole_tiles false: autotuning timed the
// tail kernels faster for this shape). Whole tiles are the static default: on the H100 (2026-11-27) the backward's
// tail kernel made the ViT's attention backward slower (fwd+bwd 91.8 against 116.8 TFLOP/s with whole tiles).
// (Nor for a batch entry of 2^32 query elements or more: the tail backward's q and dO row offsets are 32-bit.)
bool tail_allowed(const flash::Params& fp) {
  if (fp.dropout || env_is("OWLET_ATTN_TAIL", "0")) return false;
  if (int64_t(fp.Tq) * fp.H * fp.in_hs > int64_t(UINT32_MAX)) return false;
  return env_is("OWLET_ATTN_TAIL", "1") || !fp.whole_tiles;
}
// Whether autotuning should time the tail kernels as well (neither forced nor excluded).
bool tail_tunable(const flash::Params& fp) {
  return !fp.dropout && !env_is("OWLET_ATTN_TAIL", "0") && !env_is("OWLET_ATTN_TAIL", "1");
}

// The query rows a tiled forward with blocks of `rows` covers; the rest (attention_tail.cuh) is launched by
// finish_fwd_rows after it.
int fwd_rows_main(const flash::Params& fp, int rows) {
  return tail_allowed(fp) ? attn_tail::main_extent(fp.Tq, rows) : fp.Tq;
}

void finish_fwd_rows(const flash::Params& fp, const Dims& d, int rows_main, const DeviceContext& c, const char* op) {
  if (rows_main >= d.Tq) return;
  dim3 grid{unsigned(d.Tq - rows_main), unsigned(d.H), unsigned(d.B)};
  constexpr int threads = 32 * attn_tail::kFwdWarps;
  if (d.D == 64)
    attn_tail::fwd_rows_kernel<64><<<grid, threads, attn_tail::fwd_smem_bytes<64>(), c.stream>>>(fp, rows_main);
  else
    attn_tail::fwd_rows_kernel<128><<<grid, threads, attn_tail::fwd_smem_bytes<128>(), c.stream>>>(fp, rows_main);
  check_launch(op);
}

// One tile shape of the tensor-core forward: BR queries per block, its dynamic shared memory allowed per kernel.
template <class Tile>
void launch_fwd(const flash::Params& fp, const Dims& d, const DeviceContext& c, const char* op) {
  const void* fn = reinterpret_cast<const void*>(flash::attention_fwd_kernel<Tile>);
  set_smem_limit(fn, Tile::kSmemBytes, c.index, op);
  const int rows = fwd_rows_main(fp, Tile::BR);
  dim3 grid{unsigned((rows + Tile::BR - 1) / Tile::BR), unsigned(d.H), unsigned(d.B)};
  flash::attention_fwd_kernel<Tile><<<grid, Tile::THREADS, Tile::kSmemBytes, c.stream>>>(fp);
  check_launch(op);
  finish_fwd_rows(fp, d, rows, c, op);
}

// f(Tile{}) with the mma.sync tile shape of `variant` (w4s for auto, and for the Hopper variants where they do not
// apply): the one place that maps OWLET_ATTN_FWD's names to tile shapes.
template <int D, class F>
void with_fwd_tile(FwdVariant variant, F&& f) {
  switch (variant) {
    case FwdVariant::W4: return f(flash::FwdW4<D>{});
    case FwdVariant::W8: return f(flash::FwdW8<D>{});
    case FwdVariant::W8s: return f(flash::FwdW8s<D>{});
    case FwdVariant::M2: return f(flash::FwdM2<D>{});
    default: return f(flash::FwdW4s<D>{});
  }
}

template <int D>
void launch_fwd_variant(FwdVariant variant, const flash::Params& fp, const Dims& d, const DeviceContext& c,
                        const char* op) {
  with_fwd_tile<D>(variant, [&](auto tile) { launch_fwd<decltype(tile)>(fp, d, c, op); });
}

bool use_flash(const Tensor& q, const Tensor& k, const Tensor& v, const Dims& d, float scale) {
  return !force_simple() && q.dtype == DType::BF16 && k.dtype == DType::BF16 && v.dtype == DType::BF16 &&
         (d.D == 64 || d.D == 128) && scale > 0.f;
}

flash::Params flash_params(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask, const Dims& d,
                           bool causal, float scale, float p, uint64_t seed) {
  flash::Params fp{};
  fp.q = q.data<bf16>();
  fp.k = k.data<bf16>();
  fp.v = v.data<bf16>();
  fp.key_mask = mask ? mask->i32() : nullptr;
  fp.B = d.B;
  fp.H = d.H;
  fp.Tq = d.Tq;
  fp.Tk = d.Tk;
  fp.tq_main = d.Tq;
  fp.tk_main = d.Tk;
  fp.whole_tiles = true;  // the static default (tail_allowed)
  // [B, T, H, D] inputs and gradients (attention_qkv_* sets the packed layout's strides)
  fp.in_hs = fp.grad_hs = d.D;
  fp.causal = causal;
  fp.scale = scale;
  fp.scale_log2 = scale * flash::kLog2e;
  fp.dropout = p > 0.f;
  fp.drop_key = dropout::stream_key(seed);
  fp.drop_threshold = dropout::threshold(p);
  fp.inv_keep = p > 0.f && p < 1.f ? 1.f / (1.f - p) : (p >= 1.f ? 0.f : 1.f);
  return fp;
}

SimpleParams simple_params(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask, const Dims& d,
                           bool causal, float scale, float p, uint64_t seed, const char* op) {
  SimpleParams sp{};
  sp.q = fin(q, op, "q");
  sp.k = fin(k, op, "k");
  sp.v = fin(v, op, "v");
  sp.mask = mask ? mask->i32() : nullptr;
  sp.B = d.B;
  sp.Tq = d.Tq;
  sp.Tk = d.Tk;
  sp.H = d.H;
  sp.D = d.D;
  sp.causal = causal;
  sp.scale = scale;
  sp.dropout = p > 0.f;
  sp.key = dropout::stream_key(seed);
  sp.threshold = dropout::threshold(p);
  sp.inv_keep = p > 0.f && p < 1.f ? 1.f / (1.f - p) : (p >= 1.f ? 0.f : 1.f);
  return sp;
}

// Whether the Hopper kernels can run this call: an sm_90a build, a device of compute capability 9.0, no dropout.
bool hopper_applies(const DeviceContext& c, const flash::Params& fp) { return !fp.dropout && sm90a_device(c); }

// The warp-specialised forward's TMA forms (wgmma-ws-tma, wgmma-wsp and their overlapped twins), and whether a form
// of it overlaps the softmax with the previous tile's P·V.
bool ws_tma_form(FwdVariant v) {
  return v == FwdVariant::WgmmaWsTma || v == FwdVariant::WgmmaWsTmaOverlap || v == FwdVariant::WgmmaWsp ||
         v == FwdVariant::WgmmaWspOverlap;
}
bool ws_overlapped(FwdVariant v) {
  return v == FwdVariant::WgmmaWsOverlap || v == FwdVariant::WgmmaWsTmaOverlap || v == FwdVariant::WgmmaWspOverlap;
}

// The Hopper forward to run where one applies and is asked for — by OWLET_ATTN_FWD=wgmma, wgmma-overlap or
// wgmma-ws, or by default (auto) at D = 128 — else none (a tile shape runs).
std::optional<FwdVariant> hopper_fwd(const DeviceContext& c, const flash::Params& fp, const Dims& d,
                                     FwdVariant variant) {
  if (!hopper_applies(c, fp)) return std::nullopt;
  if (variant == FwdVariant::Auto) return d.D == 128 ? std::optional(FwdVariant::WgmmaWsp) : std::nullopt;
  if (variant == FwdVariant::Wgmma || variant == FwdVariant::WgmmaOverlap || variant == FwdVariant::WgmmaWs ||
      variant == FwdVariant::Wgmma1 || variant == FwdVariant::WgmmaWsOverlap || ws_tma_form(variant))
    return variant;
  return std::nullopt;
}

// Query rows per block of a Hopper forward: 64 with one warpgroup (wgmma1 at D = 64), else 128.
int wgmma_fwd_rows(FwdVariant variant, const Dims& d) {
  return variant == FwdVariant::Wgmma1 && d.D == 64 ? 64 : wgmma::kBR;
}

// The persistent kernels' work-item counter on device `c` (wgmma-wsp's forward, wgmma-p's backward): zero before and
// after each launch (the launch's last atomic add resets it; launches on the stream run one after another), so one
// int per device, allocated and zeroed on the stream at first use.
int* item_counter(const DeviceContext& c, const char* op) {
  static std::mutex mu;
  static std::map<int, int*> counters;
  std::lock_guard<std::mutex> lock(mu);
  int*& p = counters[c.index];
  if (!p) {
    check(cudaMalloc(&p, sizeof(int)), op, "the persistent attention's work-item counter");
    check(cudaMemsetAsync(p, 0, sizeof(int), c.stream), op, "the persistent attention's work-item counter");
  }
  return p;
}

// wgmma-ws-tma(-overlap) and wgmma-wsp(-overlap) on the launch grid `grid` of 128-row query tiles; false (and why,
// nothing launched) where the driver cannot encode the tensor maps of q, k and v.
bool launch_ws_tma_fwd(const DeviceContext& c, const flash::Params& fp, const Dims& d, dim3 grid, FwdVariant variant,
                       std::string& why, const char* op) {
  tma::QkvMaps maps;
  if (!wgmma_ws::encode_qkv_maps(fp, d.D, maps, why)) return false;
  const bool persistent = variant == FwdVariant::WgmmaWsp || variant == FwdVariant::WgmmaWspOverlap;
  const bool overlap = ws_overlapped(variant);
  // Persistent: at most one block per SM (one fits: 160 KiB of shared memory or more), each taking items in block
  // order from the counter.
  const int q_tiles = int(grid.x);
  const dim3 pgrid{unsigned(std::min<int64_t>(int64_t(q_tiles) * d.H * d.B, c.prop.multiProcessorCount))};
  auto launch = [&](auto kernel, auto persistent_kernel, size_t smem) {
    if (persistent) {
      set_smem_limit(reinterpret_cast<const void*>(persistent_kernel), smem, c.index, op);
      persistent_kernel<<<pgrid, wgmma_ws::kThreads, smem, c.stream>>>(fp, maps, q_tiles, item_counter(c, op));
    } else {
      set_smem_limit(reinterpret_cast<const void*>(kernel), smem, c.index, op);
      kernel<<<grid, wgmma_ws::kThreads, smem, c.stream>>>(fp, maps);
    }
  };
  using namespace wgmma_ws;
  if (overlap && d.D == 64)
    launch(attention_fwd_ws_tma_kernel<64, true>, attention_fwd_wsp_kernel<64, true>, smem_bytes<64, true>());
  else if (overlap)
    launch(attention_fwd_ws_tma_kernel<128, true>, attention_fwd_wsp_kernel<128, true>, smem_bytes<128, true>());
  else if (d.D == 64)
    launch(attention_fwd_ws_tma_kernel<64>, attention_fwd_wsp_kernel<64>, smem_bytes<64>());
  else
    launch(attention_fwd_ws_tma_kernel<128>, attention_fwd_wsp_kernel<128>, smem_bytes<128>());
  return true;
}

void launch_wgmma_fwd(const DeviceContext& c, const flash::Params& fp, const Dims& d, FwdVariant variant,
                      const char* op) {
  const bool d64 = d.D == 64, one_wg = variant == FwdVariant::Wgmma1 && d64;
  const int block_rows = wgmma_fwd_rows(variant, d), rows = fwd_rows_main(fp, block_rows);
  dim3 grid{unsigned((rows + block_rows - 1) / block_rows), unsigned(d.H), unsigned(d.B)};
  auto launch = [&](auto kernel, int threads, size_t smem) {
    set_smem_limit(reinterpret_cast<const void*>(kernel), smem, c.index, op);
    kernel<<<grid, threads, smem, c.stream>>>(fp);
  };
  if (ws_tma_form(variant)) {
    const bool overlap = ws_overlapped(variant);
    std::string why;
    if (launch_ws_tma_fwd(c, fp, d, grid, variant, why, op)) {
      check_launch(op);
      finish_fwd_rows(fp, d, rows, c, op);
      return;
    }
    // the cp.async producer instead: the same numerics
    static std::once_flag warned;
    std::call_once(warned, [&] {
      std::fprintf(stderr, "owlet: attention forward %s (the D = 128 default, or OWLET_ATTN_FWD): %s; running "
                   "wgmma-ws%s with cp.async copies instead\n",
                   variant_name(kFwdNames, variant), why.c_str(), overlap ? "-overlap" : "");
    });
    variant = overlap ? FwdVariant::WgmmaWsOverlap : FwdVariant::WgmmaWs;
  }
  if (one_wg) {
    launch(wgmma::attention_fwd_kernel<64, false, 1>, 128, wgmma::fwd_smem_bytes<64, false, 1>());
  } else if (variant == FwdVariant::WgmmaWs) {
    if (d64) launch(wgmma_ws::attention_fwd_ws_kernel<64>, wgmma_ws::kThreads, wgmma_ws::smem_bytes<64>());
    else launch(wgmma_ws::attention_fwd_ws_kernel<128>, wgmma_ws::kThreads, wgmma_ws::smem_bytes<128>());
  } else if (variant == FwdVariant::WgmmaWsOverlap) {
    if (d64) launch(wgmma_ws::attention_fwd_ws_kernel<64, true>, wgmma_ws::kThreads, wgmma_ws::smem_bytes<64, true>());
    else launch(wgmma_ws::attention_fwd_ws_kernel<128, true>, wgmma_ws::kThreads, wgmma_ws::smem_bytes<128, true>());
  } else if (variant == FwdVariant::WgmmaOverlap) {
    if (d64) launch(wgmma::attention_fwd_kernel<64, true>, wgmma::kThreads, wgmma::fwd_smem_bytes<64, true>());
    else launch(wgmma::attention_fwd_kernel<128, true>, wgmma::kThreads, wgmma::fwd_smem_bytes<128, true>());
  } else {
    if (d64) launch(wgmma::attention_fwd_kernel<64, false>, wgmma::kThreads, wgmma::fwd_smem_bytes<64, false>());
    else launch(wgmma::attention_fwd_kernel<128, false>, wgmma::kThreads, wgmma::fwd_smem_bytes<128, false>());
  }
  check_launch(op);
  finish_fwd_rows(fp, d, rows, c, op);
}

// The Hopper backward where it applies (hopper_applies) and is asked for: OWLET_ATTN_BWD=wgmma, or auto without
// OWLET_ATTN_BWD_WARPS (which names the mma.sync kernel).
bool use_wgmma_bwd(const DeviceContext& c, const flash::Params& fp, BwdVariant variant) {
  const bool asked = variant == BwdVariant::Wgmma || variant == BwdVariant::Wgmma1 || variant == BwdVariant::WgmmaQ ||
                     variant == BwdVariant::WgmmaBulk || variant == BwdVariant::Wgmma1Keys ||
                     variant == BwdVariant::WgmmaP || variant == BwdVariant::WgmmaWs ||
                     (variant == BwdVariant::Auto && !std::getenv("OWLET_ATTN_BWD_WARPS"));
  return asked && hopper_applies(c, fp);
}

// The query-major backward (OWLET_ATTN_BWD=wgmma-q) over the keys [0, tk_main): its key ranges are split only so
// far as to give the GPU about two blocks per SM (a block per (head, batch) is enough for the abstractor at batch 64;
// at batch 2 its 32 heads take 5 ranges of one 64-key tile).
void launch_wgmma_bwd_short(const DeviceContext& c, const flash::Params& fp, const Dims& d, const char* op) {
  const int tiles = (fp.tk_main + wgmma::kShortKeys - 1) / wgmma::kShortKeys;
  const int64_t heads = int64_t(d.B) * d.H, want = 2 * int64_t(c.prop.multiProcessorCount);
  const int ranges = int(std::min<int64_t>(tiles, std::max<int64_t>(1, (want + heads - 1) / heads)));
  const int per = (tiles + ranges - 1) / ranges;
  dim3 grid{unsigned((tiles + per - 1) / per), unsigned(d.H), unsigned(d.B)};
  const size_t smem = wgmma::bwd_short_smem_bytes<64>();
  set_smem_limit(reinterpret_cast<const void*>(wgmma::attention_bwd_short_kernel<64>), smem, c.index, op);
  wgmma::attention_bwd_short_kernel<64><<<grid, 128, smem, c.stream>>>(fp, per);
}

static_assert(wgmma::kTailKeys >= attn_tail::kMax, "wgmma1-keys takes every key tail attn_tail::main_extent leaves");

// wgmma-ws at D = 128 on a grid of 128-key blocks; false (and why, nothing launched) where the driver cannot encode the
// tensor maps of q, k, v and dO.
bool launch_ws_bwd(const DeviceContext& c, const flash::Params& fp, const Dims& d, std::string& why, const char* op) {
  wgmma_bwd_ws::Maps maps;
  if (!wgmma_bwd_ws::encode_maps(fp, maps, why)) return false;
  const dim3 grid{unsigned((fp.tk_main + wgmma_bwd_ws::kKeys - 1) / wgmma_bwd_ws::kKeys), unsigned(d.H), unsigned(d.B)};
  const size_t smem = wgmma_bwd_ws::smem_bytes();
  set_smem_limit(reinterpret_cast<const void*>(wgmma_bwd_ws::attention_bwd_ws_kernel), smem, c.index, op);
  wgmma_bwd_ws::attention_bwd_ws_kernel<<<grid, wgmma_bwd_ws::kThreads, smem, c.stream>>>(fp, maps);
  return true;
}

// one_wg: one warpgroup (64 keys) per block, at D = 64 only (OWLET_ATTN_BWD=wgmma1 and wgmma1-keys); short: the
// query-major kernel (OWLET_ATTN_BWD=wgmma-q, D = 64 and Tq ≤ 64). At D = 64 the rows and keys past the last whole 64
// (1 to attn_tail::kMax of each) go to attention_tail.cuh's backward, after the tiles, where the tail kernels are
// allowed; else with wgmma1-keys the keys go to the last key block (Params::block_tail_keys).
void launch_wgmma_bwd(const DeviceContext& c, flash::Params fp, const Dims& d, BwdVariant variant, const char* op) {
  const bool one_wg = variant == BwdVariant::Wgmma1 || variant == BwdVariant::Wgmma1Keys,
             short_q = variant == BwdVariant::WgmmaQ && d.D == 64 && d.Tq <= wgmma::kShortQueries;
  if (d.D == 64 && tail_allowed(fp)) {
    fp.tq_main = attn_tail::main_extent(d.Tq, wgmma::kBwdQueries);
    fp.tk_main = attn_tail::main_extent(d.Tk, 64);
  } else if (d.D == 64 && variant == BwdVariant::Wgmma1Keys) {  // whole query tiles, the key tail in the last block
    fp.tk_main = attn_tail::main_extent(d.Tk, 64);
    fp.block_tail_keys = d.Tk - fp.tk_main;
  }
  auto launch = [&](auto kernel, size_t smem, int keys, int threads) {
    dim3 grid{unsigned((fp.tk_main + keys - 1) / keys), unsigned(d.H), unsigned(d.B)};
    set_smem_limit(reinterpret_cast<const void*>(kernel), smem, c.index, op);
    kernel<<<grid, threads, smem, c.stream>>>(fp);
  };
  std::string why;
  if (short_q) {
    launch_wgmma_bwd_short(c, fp, d, op);
  } else if (variant == BwdVariant::WgmmaWs && d.D == 128 && launch_ws_bwd(c, fp, d, why, op)) {
    // (launched; where the maps could not be encoded, the two-warpgroup kernel below instead)
  } else if (variant == BwdVariant::WgmmaP && d.D == 128) {
    // persistent: at most one block per SM (149.5 KiB of shared memory each), items from the counter
    const int k_tiles = (fp.tk_main + 127) / 128;
    const dim3 grid{unsigned(std::min<int64_t>(int64_t(k_tiles) * d.H * d.B, c.prop.multiProcessorCount))};
    const size_t smem = wgmma::bwd_smem_bytes<128, 2, false, true>();
    set_smem_limit(reinterpret_cast<const void*>(wgmma::attention_bwd_persistent_kernel), smem, c.index, op);
    wgmma::attention_bwd_persistent_kernel<<<grid, 256, smem, c.stream>>>(fp, k_tiles, item_counter(c, op));
  } else if (variant == BwdVariant::WgmmaBulk && d.D == 64)
    launch(wgmma::attention_bwd_kernel<64, 2, true>, wgmma::bwd_smem_bytes<64, 2, true>(), 128, 256);
  else if (variant == BwdVariant::WgmmaBulk)
    launch(wgmma::attention_bwd_kernel<128, 2, true>, wgmma::bwd_smem_bytes<128, 2, true>(), 128, 256);
  else if (d.D == 64 && one_wg) launch(wgmma::attention_bwd_kernel<64, 1>, wgmma::bwd_smem_bytes<64, 1>(), 64, 128);
  else if (d.D == 64) launch(wgmma::attention_bwd_kernel<64, 2>, wgmma::bwd_smem_bytes<64, 2>(), 128, 256);
  else launch(wgmma::attention_bwd_kernel<128, 2>, wgmma::bwd_smem_bytes<128, 2>(), 128, 256);
  check_launch(op);
  if (!flash::bwd_tail_left(fp)) return;
  dim3 grid{unsigned(d.H), unsigned(d.B)};
  attn_tail::bwd_kernel<64><<<grid, attn_tail::kBwdThreads, attn_tail::bwd_smem_bytes<64>(), c.stream>>>(fp);
  check_launch(op);
}

// Query rows per block of the forward that `variant` runs as (launch_flash_fwd's choice).
int fwd_block_rows(const DeviceContext& c, const flash::Params& fp, const Dims& d, FwdVariant variant) {
  if (const auto hopper = hopper_fwd(c, fp, d, variant)) return wgmma_fwd_rows(*hopper, d);
  int rows = 0;
  auto tile_rows = [&](auto tile) { rows = decltype(tile)::BR; };
  if (d.D == 64) with_fwd_tile<64>(variant, tile_rows);
  else with_fwd_tile<128>(variant, tile_rows);
  return rows;
}

// The tensor-core forward `variant` (auto: the static default) into fp.out and fp.lse.
void launch_flash_fwd(const DeviceContext& c, const flash::Params& fp, const Dims& d, FwdVariant variant,
                      const char* op) {
  if (const auto hopper = hopper_fwd(c, fp, d, variant)) {
    launch_wgmma_fwd(c, fp, d, *hopper, op);
    return;
  }
  if (d.D == 64) launch_fwd_variant<64>(variant, fp, d, c, op);
  else launch_fwd_variant<128>(variant, fp, d, c, op);
}

// The tensor-core backward `variant` (auto: the static default): dK and dV into fp.dk and fp.dv, dQ into the fp32
// accumulator fp.dq_acc (zeroed here first).
void launch_flash_bwd(const DeviceContext& c, const flash::Params& fp, const Dims& d, BwdVariant variant,
                      size_t dq_bytes, const char* op) {
  check(cudaMemsetAsync(fp.dq_acc, 0, dq_bytes, c.stream), op, "cudaMemsetAsync");
  if (use_wgmma_bwd(c, fp, variant)) {
    launch_wgmma_bwd(c, fp, d, variant, op);
    return;
  }
  auto launch = [&](auto dtag, auto wtag, auto brtag) {
    constexpr int D = decltype(dtag)::value, NW = decltype(wtag)::value, BR = decltype(brtag)::value;
    dim3 grid{unsigned((d.Tk + 16 * NW - 1) / (16 * NW)), unsigned(d.H), unsigned(d.B)};
    size_t smem = flash::bwd_smem_bytes<D, NW, BR>();
    set_smem_limit(reinterpret_cast<const void*>(flash::attention_bwd_kernel<D, NW, BR>), smem, c.index, op);
    flash::attention_bwd_kernel<D, NW, BR><<<grid, NW * 32, smem, c.stream>>>(fp);
  };
  using I64 = std::integral_constant<int, 64>;
  using I128 = std::integral_constant<int, 128>;
  using I4 = std::integral_constant<int, 4>;
  using I8 = std::integral_constant<int, 8>;
  using BR32 = std::integral_constant<int, 32>;
  const bool four = bwd_warps(c, d.D) == 4;
  if (d.D == 64) {
    if (four) launch(I64{}, I4{}, I64{});
    else launch(I64{}, I8{}, I64{});
  } else if (variant == BwdVariant::Br64) {
    launch(I128{}, I8{}, I64{});
  } else {
    if (four) launch(I128{}, I4{}, BR32{});
    else launch(I128{}, I8{}, BR32{});
  }
  check_launch(op);
}

// ---------------------------------------------------------------------------------------------- autotuning
// With OWLET_ATTN_FWD / OWLET_ATTN_BWD unset (auto) — the forward on any GPU, the backward where the Hopper kernels
// apply (elsewhere it has one kernel) — the first call of each (device, shape, causal, key mask, dropout) times the
// variants that apply (time_candidates.h: a warm-up, then 2 runs each in each of two rounds, on the call's own
// operands) and every later call runs the fastest (the first candidate unless another beats it by 2%). Where a sequence has a tail (attention_tail.cuh: 1 to 4 rows or keys
// past the last whole tile), each variant that can hand it to the tail kernels is tried both ways: whole tiles, then
// the tail kernels (the forward's tail saves a block of mostly idle rows but costs a launch; the backward's removed
// tiles yet measured slower at the ViT's shape). The static default is the first candidate, so what tuning changed can be reported (attention_tune_report, in the backend's info()).
// OWLET_ATTN_TUNE=0 (read per call) keeps the static defaults. The choice depends on timing: two processes may pick
// differently (the backward's dQ atomics already make GPU runs non-reproducible bit for bit).
bool attn_tune_enabled() { return !env_is("OWLET_ATTN_TUNE", "0"); }

// packed: q, k, v read from (their gradients written into) one [B, T, H, 3, D] tensor (attention_qkv_fwd/bwd): rows
// three times as far apart, so tuned on their own (the unpacked call of the same shape may prefer another variant).
struct TuneKey {
  int dev, B, H, Tq, Tk, D;
  bool causal, mask, dropout, bwd, packed;
  bool operator<(const TuneKey& o) const {
    return std::tie(dev, B, H, Tq, Tk, D, causal, mask, dropout, bwd, packed) <
           std::tie(o.dev, o.B, o.H, o.Tq, o.Tk, o.D, o.causal, o.mask, o.dropout, o.bwd, o.packed);
  }
};
struct TuneChoice {
  int code;             // a tune_code: FwdVariant or BwdVariant, and the tail kernels or not
  float ms, default_ms;  // the chosen one's time and the static default's
};
// A candidate: a variant, and whether the rows and keys past the last whole tile go to the tail kernels.
constexpr int kTail = 256;
template <class V>
int tune_code(V v, bool tail = false) {
  return int(v) | (tail ? kTail : 0);
}
std::mutex tune_mu;
std::map<TuneKey, TuneChoice> tune_table;

TuneKey tune_key(const DeviceContext& c, const Dims& d, const flash::Params& fp, bool bwd) {
  const bool packed = fp.in_hs != d.D;
  return {c.index, d.B, d.H, d.Tq, d.Tk, d.D, fp.causal, fp.key_mask != nullptr, fp.dropout, bwd, packed};
}

// The forward's candidates: where the Hopper kernels apply, them (and w4s at D = 64); elsewhere (other GPUs, dropout)
// the mma.sync tile shapes; each with whole tiles, and with the tail kernel too where the rows have a tail.
std::vector<int> fwd_candidates(const DeviceContext& c, const flash::Params& fp, const Dims& d) {
  using F = FwdVariant;
  const bool hopper = hopper_applies(c, fp);
  std::vector<F> vs = !hopper        ? std::vector<F>{F::W4s, F::W4, F::W8s, F::M2}
                      : d.D == 128 ? std::vector<F>{F::WgmmaWsp, F::Wgmma, F::WgmmaWs}
                                   : std::vector<F>{F::W4s, F::Wgmma1, F::Wgmma};
  std::vector<int> codes;
  for (F v : vs) {
    codes.push_back(tune_code(v));
    if (tail_tunable(fp) && attn_tail::main_extent(d.Tq, fwd_block_rows(c, fp, d, v)) < d.Tq)
      codes.push_back(tune_code(v, true));
  }
  return codes;
}

// Whether OWLET_ATTN_TUNE_SKIP (variant names, comma-separated; read per call) keeps backward variant v out of
// autotuning: a GPU run whose first check of a new kernel failed or hung (scripts/gpu/run.sh's smoke stage) keeps it
// out of the later stages' tuning this way.
bool tune_skipped(BwdVariant v) {
  const char* e = std::getenv("OWLET_ATTN_TUNE_SKIP");
  if (!e) return false;
  const std::string list = std::string(",") + e + ",", name = std::string(",") + variant_name(kBwdNames, v) + ",";
  return list.find(name) != std::string::npos;
}

std::vector<int> bwd_candidates(const DeviceContext& c, const flash::Params& fp, const Dims& d) {
  if (!hopper_applies(c, fp) || std::getenv("OWLET_ATTN_BWD_WARPS")) return {};
  if (d.D == 128) {
    std::vector<int> codes;
    for (BwdVariant v : {BwdVariant::Wgmma, BwdVariant::WgmmaWs, BwdVariant::Mma, BwdVariant::WgmmaBulk})
      if (!tune_skipped(v)) codes.push_back(tune_code(v));
    return codes;
  }
  std::vector<BwdVariant> vs{BwdVariant::Wgmma, BwdVariant::Wgmma1, BwdVariant::Mma, BwdVariant::WgmmaBulk};
  if (d.Tq <= wgmma::kShortQueries) vs.push_back(BwdVariant::WgmmaQ);
  // (at D = 64 the Hopper kernels, not mma.sync's, can leave the tail to attention_tail.cuh: launch_wgmma_bwd)
  const bool tail = tail_tunable(fp) && (attn_tail::main_extent(d.Tq, wgmma::kBwdQueries) < d.Tq ||
                                         attn_tail::main_extent(d.Tk, 64) < d.Tk);
  std::vector<int> codes;
  for (BwdVariant v : vs) {
    if (tune_skipped(v)) continue;
    codes.push_back(tune_code(v));
    if (tail && v != BwdVariant::Mma) codes.push_back(tune_code(v, true));
  }
  return codes;
}

// The candidate (a tune_code) to run for this call: the table's choice for its key; when there is none, the
// candidates (made only then) are timed first (each trial writes this call's own outputs; the caller then runs the
// choice for the real result). -1 for the static default.
int tuned(const DeviceContext& c, const TuneKey& key, const std::function<std::vector<int>()>& candidates,
          const std::function<void(int)>& run) {
  {
    std::lock_guard<std::mutex> lock(tune_mu);
    auto it = tune_table.find(key);
    if (it != tune_table.end()) return it->second.code;
  }
  const std::vector<int> cands = candidates();
  if (cands.size() < 2) return cands.empty() ? -1 : cands[0];
  const std::vector<float> ms = time_candidates(c.stream, int(cands.size()), [&](int i) {
    run(cands[size_t(i)]);
    return true;
  }, 2);
  const int best = fastest(ms);
  if (best < 0) return -1;  // nothing could be timed: the static default, tried again next call
  std::lock_guard<std::mutex> lock(tune_mu);
  tune_table[key] = {cands[size_t(best)], ms[size_t(best)], ms[0]};
  return cands[size_t(best)];
}

// fp for candidate `code`'s run (the tail kernels or whole tiles), and its variant.
template <class V>
V apply_code(int code, flash::Params& fp) {
  fp.whole_tiles = (code & kTail) == 0;
  return V(code & ~kTail);
}

// ------------------------------------------------------------------- the tensor-core calls, packed or not

// The number of sections the tiled kernels' block order (block_order.h) takes a causal call's heads in: as few as
// keep what a section's blocks share — per head, the keys and values (forward: 4·Tk·D bytes) or the queries, output
// gradients and dQ accumulators (backward: 4·Tq·D + 4·Tq·D) — within half of the L2 cache. 0 (launch order) for
// calls without a causal mask (every block does the same work), at D = 64 (those kernels keep launch order:
// block_order.h), for heads of fewer than kOrderedTiles tiles, and with OWLET_ATTN_ORDER=0. OWLET_ATTN_ORDER=N
// (N > 0): N sections (at most one per head), for the GPU checks (the order never changes a result) and for timing
// other widths. Read per call.
// Short heads keep launch order: on the H200 (2026-11-27, session 17, the `_launchorder` lines of
// bench/results/gpu-2026-11-27-h200-s17) the longest-first order gained at 16 tiles per head (B2 T2048 fwd +7%,
// fwd+bwd +9%; B4 T2048 +2% / +3%) and at 32 (T4096 +1% / +3%), but lost at 4 (B16 T512: fwd −12%, fwd+bwd −4%):
// with a head's few tiles spread over the section, the blocks that ran together no longer shared its keys in L2.
constexpr int kOrderedTiles = 8;
int block_sections(const DeviceContext& c, const flash::Params& fp, const Dims& d, bool backward) {
  if (!fp.causal || d.D != 128) return 0;
  const int64_t heads = int64_t(d.B) * d.H;
  if (const char* e = std::getenv("OWLET_ATTN_ORDER"); e && *e) {
    char* end = nullptr;
    const long n = std::strtol(e, &end, 10);
    if (*end == 0 && n >= 0) return int(std::min<int64_t>(n, heads));
  }
  if ((backward ? d.Tk : d.Tq) < kOrderedTiles * 128) return 0;  // (128-row query tiles, 128-key key tiles at D = 128)
  const int64_t per_head = std::max<int64_t>(1, backward ? 8 * int64_t(d.Tq) * d.D : 4 * int64_t(d.Tk) * d.D);
  const int64_t l2 = c.prop.l2CacheSize > 0 ? c.prop.l2CacheSize : (int64_t(40) << 20);
  const int64_t most = std::max<int64_t>(1, l2 / 2 / per_head);
  return int(std::max<int64_t>(1, (heads + most - 1) / most));
}

// The forward through the tensor-core kernels into fp.out and fp.lse: the variant OWLET_ATTN_FWD names, or (auto)
// the tuned one for this call's key.
void flash_forward(const DeviceContext& c, flash::Params fp, const Dims& d, const char* op) {
  fp.sections = block_sections(c, fp, d, false);
  FwdVariant variant = fwd_variant(op);
  if (variant == FwdVariant::Auto && attn_tune_enabled()) {
    const int code = tuned(c, tune_key(c, d, fp, false), [&] { return fwd_candidates(c, fp, d); }, [&](int cand) {
      flash::Params trial = fp;
      launch_flash_fwd(c, trial, d, apply_code<FwdVariant>(cand, trial), op);
    });
    if (code >= 0) variant = apply_code<FwdVariant>(code, fp);
  }
  launch_flash_fwd(c, fp, d, variant, op);
}

// Δ = rowsum(dO ⊙ O) per (b, h, i) [B, H, Tq], shared by every backward path.
Tensor delta_of(const DeviceContext& c, const Tensor& out, const Tensor& gout, const Dims& d, const char* op) {
  Tensor delta(DType::F32, {d.B, d.H, d.Tq}, out.device());
  const int64_t rows = int64_t(d.B) * d.Tq * d.H;
  const bool rows16 = out.dtype == DType::BF16 && gout.dtype == DType::BF16 && (d.D == 64 || d.D == 128) &&
                      vec_enabled() && aligned16(out) && aligned16(gout);
  if (rows16) {  // D / 8 lanes per row, 16-byte loads (attention_delta.cuh)
    const unsigned blocks = unsigned((rows * (d.D / 8) + attn_delta::kThreads - 1) / attn_delta::kThreads);
    if (d.D == 64)
      attn_delta::delta_rows_kernel<64><<<blocks, attn_delta::kThreads, 0, c.stream>>>(
          gout.data<bf16>(), out.data<bf16>(), delta.f32(), d.B, d.Tq, d.H);
    else
      attn_delta::delta_rows_kernel<128><<<blocks, attn_delta::kThreads, 0, c.stream>>>(
          gout.data<bf16>(), out.data<bf16>(), delta.f32(), d.B, d.Tq, d.H);
  } else {
    attn_delta::delta_kernel<<<unsigned((rows * 32 + 255) / 256), 256, 0, c.stream>>>(
        fin(gout, op, "gout"), fin(out, op, "out"), delta.f32(), d.B, d.Tq, d.H, d.D);
  }
  check_launch(op);
  return delta;
}

// The backward through the tensor-core kernels (fp: inputs, Δ and dk/dv set): dK and dV into fp.dk and fp.dv, dQ
// through an fp32 accumulator into gq (contiguous gradients: the plain conversion) or, gq null, into fp.dq with
// Params' gradient strides (flash::dq_store_kernel).
void flash_backward(const DeviceContext& c, flash::Params fp, const Dims& d, Device device, Tensor* gq,
                    const char* op) {
  fp.sections = block_sections(c, fp, d, true);
  BwdVariant variant = bwd_variant_of(op);
  Tensor dq_acc(DType::F32, {d.B, d.Tq, d.H, d.D}, device);
  fp.dq_acc = dq_acc.f32();
  if (variant == BwdVariant::Auto && attn_tune_enabled()) {
    const int code = tuned(c, tune_key(c, d, fp, true), [&] { return bwd_candidates(c, fp, d); }, [&](int cand) {
      flash::Params trial = fp;
      launch_flash_bwd(c, trial, d, apply_code<BwdVariant>(cand, trial), dq_acc.nbytes(), op);
    });
    if (code >= 0) variant = apply_code<BwdVariant>(code, fp);
  }
  launch_flash_bwd(c, fp, d, variant, dq_acc.nbytes(), op);
  if (gq) {
    copy_convert(dq_acc, *gq);  // fp32 accumulator -> gq's dtype
    return;
  }
  const int64_t threads = int64_t(d.B) * d.Tq * d.H * (d.D / 8);
  const unsigned blocks = unsigned((threads + flash::kDqStoreThreads - 1) / flash::kDqStoreThreads);
  if (d.D == 64) flash::dq_store_kernel<64><<<blocks, flash::kDqStoreThreads, 0, c.stream>>>(fp);
  else flash::dq_store_kernel<128><<<blocks, flash::kDqStoreThreads, 0, c.stream>>>(fp);
  check_launch(op);
}

// qkv [B, T, H, 3, D] as self-attention's Dims (Tq = Tk = T); the binding checked the shapes.
Dims packed_dims(const Tensor& qkv, const Tensor* mask, const char* op) {
  if (qkv.ndim() != 5 || qkv.dim(3) != 3)
    fail(ErrorKind::Shape, std::string(op) + ": qkv must be [B, T, H, 3, D], got " + qkv.describe());
  if (mask) expect_dtype(*mask, DType::I32, op, "key mask");
  const int T = to_i32(qkv.dim(1), op);
  return {to_i32(qkv.dim(0), op), T, T, to_i32(qkv.dim(2), op), to_i32(qkv.dim(4), op)};
}

// Whether the tensor-core kernels take this packed call (as use_flash; a call with nothing to compute goes through
// the copies, whose unpacked entry points handle the empty cases).
bool packed_flash(const Tensor& qkv, const Dims& d, float scale) {
  return !force_simple() && qkv.dtype == DType::BF16 && (d.D == 64 || d.D == 128) && scale > 0.f &&
         int64_t(d.B) * d.H * d.Tq > 0;
}

// Params reading q, k, v out of qkv (at element offsets 0, D, 2·D of each token's head, rows 3·H·D apart) and,
// when given, writing their gradients into gqkv the same way.
flash::Params packed_params(const Tensor& qkv, Tensor* gqkv, const Tensor* mask, const Dims& d, bool causal,
                            float scale, float p, uint64_t seed) {
  flash::Params fp = flash_params(qkv, qkv, qkv, mask, d, causal, scale, p, seed);
  const bf16* in = qkv.data<bf16>();
  fp.q = in;
  fp.k = in + d.D;
  fp.v = in + 2 * d.D;
  fp.in_hs = fp.grad_hs = 3 * d.D;
  if (gqkv) {
    bf16* g = gqkv->data<bf16>();
    fp.dq = g;
    fp.dk = g + d.D;
    fp.dv = g + 2 * d.D;
  }
  return fp;
}

}  // namespace

std::string attention_tune_report() {
  std::lock_guard<std::mutex> lock(tune_mu);
  std::string out;
  for (const auto& [k, ch] : tune_table) {
    const int v = ch.code & ~kTail;
    const char* name = k.bwd ? variant_name(kBwdNames, BwdVariant(v)) : variant_name(kFwdNames, FwdVariant(v));
    char buf[220];
    std::snprintf(buf, sizeof buf, "%s%s B%d H%d Tq%d Tk%d D%d%s%s%s%s: %s%s %.3f ms (default %.3f)",
                  out.empty() ? "" : "; ", k.bwd ? "bwd" : "fwd", k.B, k.H, k.Tq, k.Tk, k.D, k.causal ? " causal" : "",
                  k.mask ? " mask" : "", k.dropout ? " dropout" : "", k.packed ? " packed" : "", name,
                  (ch.code & kTail) ? " (tail kernels)" : "", double(ch.ms), double(ch.default_ms));
    out += buf;
  }
  return out;
}

void attention_fwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_mask, bool causal, float scale,
                   float dropout_p, uint64_t seed, Tensor& out, Tensor& lse) {
  const char* op = "attentionForward";
  DeviceContext& c = context_of(q, op);
  Dims d = check_dims(q, k, v, key_mask, op);
  expect_dtype(lse, DType::F32, op, "lse");
  if (int64_t(d.B) * d.Tq * d.H == 0) return;
  if (d.Tk == 0 || d.D == 0) {  // nothing to attend to: zero output, lse = -inf
    fill(out, 0.0);
    fill(lse, -INFINITY);
    return;
  }
  if (use_flash(q, k, v, d, scale) && out.dtype == DType::BF16) {
    flash::Params fp = flash_params(q, k, v, key_mask, d, causal, scale, dropout_p, seed);
    fp.out = out.data<bf16>();
    fp.lse = lse.f32();
    flash_forward(c, fp, d, op);
    return;
  }
  SimpleParams sp = simple_params(q, k, v, key_mask, d, causal, scale, dropout_p, seed, op);
  sp.out = fout(out, op, "out");
  sp.lse = lse.f32();
  size_t smem = simple_smem(c, d.Tk + 32, op);
  set_smem_limit(reinterpret_cast<const void*>(simple_fwd_kernel), smem, c.index, op);
  simple_fwd_kernel<<<dim3{unsigned(d.Tq), unsigned(d.H), unsigned(d.B)}, kSimpleThreads, smem, c.stream>>>(sp);
  check_launch(op);
}

void attention_bwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                   const Tensor& gout, const Tensor* key_mask, bool causal, float scale, float dropout_p, uint64_t seed,
                   Tensor& gq, Tensor& gk, Tensor& gv) {
  const char* op = "attentionBackward";
  DeviceContext& c = context_of(q, op);
  Dims d = check_dims(q, k, v, key_mask, op);
  expect_dtype(lse, DType::F32, op, "lse");
  if (int64_t(d.B) * d.H * d.D == 0) return;
  if (d.Tq == 0 || d.Tk == 0) {
    fill(gq, 0.0);
    fill(gk, 0.0);
    fill(gv, 0.0);
    return;
  }
  const Tensor delta = delta_of(c, out, gout, d, op);  // shared by both paths

  if (use_flash(q, k, v, d, scale) && out.dtype == DType::BF16 && gout.dtype == DType::BF16 &&
      gk.dtype == DType::BF16 && gv.dtype == DType::BF16) {
    flash::Params fp = flash_params(q, k, v, key_mask, d, causal, scale, dropout_p, seed);
    fp.o = out.data<bf16>();
    fp.dout = gout.data<bf16>();
    fp.lse = lse.f32();
    fp.delta = delta.f32();
    fp.dk = gk.data<bf16>();
    fp.dv = gv.data<bf16>();
    flash_backward(c, fp, d, q.device(), &gq, op);
    return;
  }
  SimpleParams sp = simple_params(q, k, v, key_mask, d, causal, scale, dropout_p, seed, op);
  sp.dout = fin(gout, op, "gout");
  sp.lse = const_cast<float*>(lse.f32());
  sp.delta = delta.f32();
  sp.dq = fout(gq, op, "gq");
  sp.dk = fout(gk, op, "gk");
  sp.dv = fout(gv, op, "gv");
  size_t smem_q = simple_smem(c, d.Tk, op), smem_k = simple_smem(c, 2 * d.Tq, op);
  set_smem_limit(reinterpret_cast<const void*>(simple_bwd_dq_kernel), smem_q, c.index, op);
  set_smem_limit(reinterpret_cast<const void*>(simple_bwd_dkv_kernel), smem_k, c.index, op);
  simple_bwd_dq_kernel<<<dim3{unsigned(d.Tq), unsigned(d.H), unsigned(d.B)}, kSimpleThreads, smem_q, c.stream>>>(sp);
  check_launch(op);
  simple_bwd_dkv_kernel<<<dim3{unsigned(d.Tk), unsigned(d.H), unsigned(d.B)}, kSimpleThreads, smem_k, c.stream>>>(sp);
  check_launch(op);
}

// Packed self-attention (kernels.h): the tensor-core kernels read q, k and v in place and write their gradients in
// place (Params' strides), tuned apart from unpacked calls (TuneKey::packed); every other call (f32, other head dims,
// OWLET_ATTENTION=simple, empty shapes) goes through contiguous copies and the unpacked entry points above.
void attention_qkv_fwd(const Tensor& qkv, const Tensor* key_mask, bool causal, float scale, float dropout_p,
                       uint64_t seed, Tensor& out, Tensor& lse) {
  const char* op = "attentionQkvForward";
  const DeviceContext& c = context_of(qkv, op);
  const Dims d = packed_dims(qkv, key_mask, op);
  expect_dtype(lse, DType::F32, op, "lse");
  if (!packed_flash(qkv, d, scale) || out.dtype != DType::BF16) {
    packed::forward_via_copies(qkv, key_mask, causal, scale, dropout_p, seed, out, lse);
    return;
  }
  flash::Params fp = packed_params(qkv, nullptr, key_mask, d, causal, scale, dropout_p, seed);
  fp.out = out.data<bf16>();
  fp.lse = lse.f32();
  flash_forward(c, fp, d, op);
}

void attention_qkv_bwd(const Tensor& qkv, const Tensor& out, const Tensor& lse, const Tensor& gout,
                       const Tensor* key_mask, bool causal, float scale, float dropout_p, uint64_t seed, Tensor& gqkv) {
  const char* op = "attentionQkvBackward";
  const DeviceContext& c = context_of(qkv, op);
  const Dims d = packed_dims(qkv, key_mask, op);
  expect_dtype(lse, DType::F32, op, "lse");
  if (!packed_flash(qkv, d, scale) || out.dtype != DType::BF16 || gout.dtype != DType::BF16 ||
      gqkv.dtype != DType::BF16) {
    packed::backward_via_copies(qkv, out, lse, gout, key_mask, causal, scale, dropout_p, seed, gqkv);
    return;
  }
  const Tensor delta = delta_of(c, out, gout, d, op);
  flash::Params fp = packed_params(qkv, &gqkv, key_mask, d, causal, scale, dropout_p, seed);
  fp.o = out.data<bf16>();
  fp.dout = gout.data<bf16>();
  fp.lse = lse.f32();
  fp.delta = delta.f32();
  flash_backward(c, fp, d, qkv.device(), nullptr, op);
}

}  // namespace owlet::kern
