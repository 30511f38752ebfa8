// Runs the tensor-core attention kernels (native/src/cuda/attention_flash.cuh) on the host through the warp
// emulator of cuda_emu.h, on small odd shapes, and compares them with a float64 reference: output, log-sum-exp and
// the three gradients, for full, cross-length, causal (both alignments), key-padded and dropout cases; the forward
// in every tile shape of OWLET_ATTN_FWD (default, w8, w8s, m2, w4s), the Hopper forward of attention_wgmma.cuh (wgmma,
// wgmma-overlap, wgmma-ws and wgmma-ws-overlap, both with TMA copies (wgmma-ws-tma, wgmma-ws-tma-overlap) and those persistent (wgmma-wsp, wgmma-wsp-overlap, 2 blocks), on every case without dropout; wgmma emulated from the emulator's reading of the PTX ISA's
// descriptor, swizzle and fragment rules) and the backward in OWLET_ATTN_BWD=br64, =wgmma, =wgmma-p (persistent, D = 128) and =wgmma1 (the Hopper
// backward of attention_wgmma_bwd.cuh with two or, at D = 64, one warpgroup per block; every case without dropout) too,
// each compared with the reference. Packed cases run every variant twice, on contiguous [B, T, H, D] q, k, v and on
// views into packed [B, T, H, 3, D] buffers (flash::Params::in_hs / grad_hs = 3·D, the gradients into a packed
// buffer, dQ through flash::dq_store_kernel), and require the second run's results to equal the first's bit for bit.
// `flash_emu --random N SEED` runs N random shapes instead.
// This checks the kernels' tiling, fragment and mask arithmetic without a GPU; it cannot check timing, races
// between real warps, or the hardware's own rounding. Build and run: scripts/flash-emu.sh.
#include "emu_kernel.h"

#include "../../native/src/cuda/attention_flash.cuh"
#include "../../native/src/cuda/attention_tail.cuh"
#include "../../native/src/cuda/attention_wgmma.cuh"
#include "../../native/src/cuda/attention_wgmma_bwd.cuh"
#include "../../native/src/cuda/attention_wgmma_bwd_short.cuh"
#include "../../native/src/cuda/attention_wgmma_bwd_ws.cuh"
#include "../../native/src/cuda/attention_wgmma_ws.cuh"
#include "emu_values.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <random>
#include <type_traits>
#include <string>
#include <vector>

using owlet::cuda::bf16;
namespace flash = owlet::cuda::flash;
namespace wgmma = owlet::cuda::wgmma;

namespace {

struct Case {
  const char* name;
  int B, H, Tq, Tk, D;
  bool causal, mask;
  float p;
  int warps = 8;  // backward variant
  bool all_fwd = true;  // every forward tile shape (else the default only)
  bool packed = false;  // and again with q, k, v (and their gradients) in packed [B, T, H, 3, D] buffers
  bool mixed = false;   // and again with packed q, k, v but contiguous gradients (each stride where it belongs)
};

float bf(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

// A persistent kernel's work-item counter must be back at zero after its launch (its last take resets it).
void expect_counter_zero(int taken, const char* variant) {
  if (taken == 0) return;
  std::fprintf(stderr, "%s: the item counter is %d after the launch, not 0\n", variant, taken);
  std::abort();
}

struct Seq {  // a [B, T, H, D] tensor in bf16 and its values as double
  std::vector<bf16> h;
  std::vector<double> d;
};
Seq random_seq(std::mt19937& rng, size_t n, float std) {
  std::normal_distribution<float> nd(0.f, std);
  Seq s;
  s.h.resize(n);
  s.d.resize(n);
  for (size_t i = 0; i < n; i++) {
    s.h[i] = __float2bfloat16_rn(nd(rng));
    s.d[i] = __bfloat162float(s.h[i]);
  }
  return s;
}

double rel_err(const std::vector<double>& got, const std::vector<double>& want) { return emu_values::rel_err(got, want, 1e-3); }

bool run(const Case& c, std::mt19937& rng) {
  const int B = c.B, H = c.H, Tq = c.Tq, Tk = c.Tk, D = c.D;
  size_t nq = size_t(B) * Tq * H * D, nk = size_t(B) * Tk * H * D;
  Seq q = random_seq(rng, nq, 1.f), k = random_seq(rng, nk, 1.f), v = random_seq(rng, nk, 1.f),
      dout = random_seq(rng, nq, 1.f);
  std::vector<int32_t> mask(size_t(B) * Tk, 1);
  if (c.mask) {
    std::uniform_real_distribution<float> u(0.f, 1.f);
    for (auto& m : mask) m = u(rng) < 0.3f ? 0 : 1;
    for (int j = 0; j < Tk; j++) mask[size_t(j)] = 0;  // batch 0: every key masked (rows with nothing to see)
  }
  float scale = 1.f / std::sqrt(float(D));
  auto qi = [&](int b, int t, int h) { return ((size_t(b) * Tq + t) * H + h) * D; };
  auto ki = [&](int b, int t, int h) { return ((size_t(b) * Tk + t) * H + h) * D; };

  flash::Params fp{};
  fp.q = q.h.data();
  fp.k = k.h.data();
  fp.v = v.h.data();
  fp.in_hs = fp.grad_hs = D;  // [B, T, H, D]; run_layout sets the packed layout's
  fp.key_mask = c.mask ? mask.data() : nullptr;
  fp.B = B;
  fp.H = H;
  fp.Tq = Tq;
  fp.Tk = Tk;
  fp.tq_main = Tq;
  fp.tk_main = Tk;
  fp.causal = c.causal;
  // Causal calls in the block order the dispatch gives them (block_order.h; the kernels at D = 128 follow it), their
  // heads in 2 sections: with 3 heads a wide and a narrow one.
  fp.sections = c.causal ? 2 : 0;
  fp.scale = scale;
  fp.scale_log2 = scale * flash::kLog2e;
  fp.dropout = c.p > 0.f;
  fp.drop_key = owlet::dropout::stream_key(1234);
  fp.drop_threshold = owlet::dropout::threshold(c.p);
  fp.inv_keep = c.p > 0.f ? 1.f / (1.f - c.p) : 1.f;

  // ---- reference (float64) ----
  std::vector<double> ro(nq, 0.0), rlse(size_t(B) * H * Tq), rdq(nq, 0.0), rdk(nk, 0.0), rdv(nk, 0.0);
  std::vector<double> P(static_cast<size_t>(Tk)), Z(static_cast<size_t>(Tk)), dP(static_cast<size_t>(Tk));
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++)
      for (int i = 0; i < Tq; i++) {
        double m = -INFINITY;
        for (int j = 0; j < Tk; j++) {
          bool vis = (!c.causal || j <= i + Tk - Tq) && mask[size_t(b) * Tk + j];
          double s = 0;
          for (int d = 0; d < D; d++) s += q.d[qi(b, i, h) + d] * k.d[ki(b, j, h) + d];
          P[size_t(j)] = vis ? s * scale : -INFINITY;
          m = std::max(m, P[size_t(j)]);
          // The attention family's stream (core/dropout_hash.h), element ((b·H + h)·Tq + i)·Tk + j, written out here.
          uint64_t idx = ((uint64_t(b) * H + h) * uint64_t(Tq) + i) * uint64_t(Tk) + j;
          Z[size_t(j)] = c.p > 0 ? (owlet::dropout::keep(fp.drop_key, idx, fp.drop_threshold) ? 1.0 / (1.0 - c.p) : 0.0) : 1.0;
        }
        double l = 0;
        for (int j = 0; j < Tk; j++) {
          P[size_t(j)] = m == -INFINITY ? 0.0 : std::exp(P[size_t(j)] - m);
          l += P[size_t(j)];
        }
        rlse[(size_t(b) * H + h) * Tq + i] = l > 0 ? m + std::log(l) : -INFINITY;
        for (int j = 0; j < Tk; j++) P[size_t(j)] = l > 0 ? P[size_t(j)] / l : 0.0;
        for (int j = 0; j < Tk; j++)
          for (int d = 0; d < D; d++) ro[qi(b, i, h) + d] += P[size_t(j)] * Z[size_t(j)] * v.d[ki(b, j, h) + d];
        // backward of this row
        double delta = 0;
        for (int j = 0; j < Tk; j++) {
          double dp = 0;
          for (int d = 0; d < D; d++) dp += dout.d[qi(b, i, h) + d] * v.d[ki(b, j, h) + d];
          dP[size_t(j)] = dp * Z[size_t(j)];
          delta += P[size_t(j)] * dP[size_t(j)];
        }
        for (int j = 0; j < Tk; j++) {
          double ds = P[size_t(j)] * (dP[size_t(j)] - delta);
          for (int d = 0; d < D; d++) {
            rdq[qi(b, i, h) + d] += scale * ds * k.d[ki(b, j, h) + d];
            rdk[ki(b, j, h) + d] += scale * ds * q.d[qi(b, i, h) + d];
            rdv[ki(b, j, h) + d] += P[size_t(j)] * Z[size_t(j)] * dout.d[qi(b, i, h) + d];
          }
        }
      }

  // ---- the layouts ----
  // Contiguous [B, T, H, D] q, k, v first; then (c.packed) the same values as views into packed buffers: q in slot 0
  // of a [B, Tq, H, 3, D] buffer, k and v in slots 1 and 2 of a [B, Tk, H, 3, D] one — one buffer when Tq = Tk, the
  // self-attention of attention_qkv_fwd — read through Params::in_hs = 3·D, and the gradients into buffers of the
  // same shapes (grad_hs = 3·D; dQ by flash::dq_store_kernel). The packed run must reproduce the contiguous one bit
  // for bit, variant by variant (same_as_first). Slots no tensor belongs to (Tq ≠ Tk) hold NaN in the inputs (a read
  // would show) and must keep their poison in the gradients.
  const bf16 poison = __float2bfloat16_rn(12345.f);
  const bool self = Tq == Tk;
  std::vector<bf16> q_pk, kv_pk, gq_pk, gkv_pk;
  // x ([B, T, H, D]) into / out of slot `slot` of the packed buffer at `buf`: row r = (b·T + t)·H + h at (3r + slot)·D
  auto put = [&](bf16* buf, const std::vector<bf16>& x, int slot) {
    for (size_t r = 0; r < x.size() / size_t(D); r++)
      std::copy(x.begin() + long(r * D), x.begin() + long((r + 1) * D), buf + (3 * r + slot) * size_t(D));
  };
  auto take = [&](const bf16* buf, std::vector<bf16>& x, int slot) {
    for (size_t r = 0; r < x.size() / size_t(D); r++)
      std::copy(buf + (3 * r + slot) * size_t(D), buf + (3 * r + slot + 1) * size_t(D), x.begin() + long(r * D));
  };
  auto gkv_base = [&] { return self ? gq_pk.data() : gkv_pk.data(); };
  if (c.packed || c.mixed) {
    const bf16 nan = __float2bfloat16_rn(NAN);
    q_pk.assign(3 * nq, nan);
    if (!self) kv_pk.assign(3 * nk, nan);
    put(q_pk.data(), q.h, 0);
    put(self ? q_pk.data() : kv_pk.data(), k.h, 1);
    put(self ? q_pk.data() : kv_pk.data(), v.h, 2);
    gq_pk.assign(3 * nq, poison);
    if (!self) gkv_pk.assign(3 * nk, poison);
  }
  std::map<std::string, std::vector<unsigned char>> first;  // the contiguous run's results, by output and variant
  std::string differ;                                        // the packed run's outputs that are not those
  const unsigned schedules = unsigned(emu::schedule_rng()());
  // layout 0: contiguous; 1: packed q, k, v and gradients; 2: packed q, k, v, contiguous gradients (in_hs ≠ grad_hs:
  // a kernel that wrote a gradient with the inputs' stride, or read an input with the gradients', shows).
  auto run_layout = [&](int layout) -> bool {
    const bool packed = layout != 0, packed_grads = layout == 1;
    // both runs the same schedules, so that even the order of the atomic additions repeats
    if (c.packed || c.mixed) emu::schedule_rng().seed(schedules);
    fp.q = packed ? q_pk.data() : q.h.data();
    const bf16* kvb = packed ? (self ? q_pk.data() : kv_pk.data()) : nullptr;
    fp.k = packed ? kvb + D : k.h.data();
    fp.v = packed ? kvb + 2 * D : v.h.data();
    fp.in_hs = packed ? 3 * D : D;
    fp.grad_hs = packed_grads ? 3 * D : D;
    // The contiguous run records each output; the packed run must reproduce it byte for byte.
    auto same_as_first = [&](const std::string& key, const void* data, size_t bytes) {
      const auto* p8 = static_cast<const unsigned char*>(data);
      std::vector<unsigned char> got(p8, p8 + bytes);
      if (!packed) {
        first[key] = std::move(got);
        return true;
      }
      const auto it = first.find(key);
      if (it != first.end() && it->second == got) return true;
      differ += " " + key;
      return false;
    };

    // ---- forward through the emulator: every tile shape (OWLET_ATTN_FWD) from the same inputs; the backward below
    // uses the default's output ----
    std::vector<bf16> out(nq);
    std::vector<float> lse(size_t(B) * H * Tq);
    fp.out = out.data();
    fp.lse = lse.data();
    // A tiled forward `kernel` (block_rows query rows per block) into poisoned out and lse (every element must be
    // written): over all rows, or with `tail` only to the last whole block and the rows after it on CUDA cores
    // (attention_tail.cuh), as attention.cu launches them when the tail kernels are chosen (OWLET_ATTN_TAIL=1 or tuned).
    auto run_tiled_fwd = [&](auto dtag, int block_rows, int threads, size_t smem, bool tail,
                             const std::function<void()>& kernel) {
      constexpr int DD = decltype(dtag)::value;
      std::fill(out.begin(), out.end(), __float2bfloat16_rn(12345.f));
      std::fill(lse.begin(), lse.end(), 12345.f);
      const int rows = tail ? owlet::cuda::attn_tail::main_extent(Tq, block_rows) : Tq;
      emu::launch({unsigned((rows + block_rows - 1) / block_rows), unsigned(H), unsigned(B)}, threads, smem, kernel);
      if (rows < Tq)
        emu::launch({unsigned(Tq - rows), unsigned(H), unsigned(B)}, 32 * owlet::cuda::attn_tail::kFwdWarps,
                    owlet::cuda::attn_tail::fwd_smem_bytes<DD>(),
                    [&] { owlet::cuda::attn_tail::fwd_rows_kernel<DD>(fp, rows); });
    };
    auto run_fwd = [&](auto tile, bool tail = false) {
      using T = decltype(tile);
      run_tiled_fwd(std::integral_constant<int, T::D>{}, T::BR, T::THREADS, T::kSmemBytes, tail,
                    [&] { flash::attention_fwd_kernel<T>(fp); });
    };
    // Whether the tail kernels change anything here (a rest of 1..kMax past a whole tile of `tile`).
    auto has_tail = [](int n, int tile) { return owlet::cuda::attn_tail::main_extent(n, tile) != n; };
    bool lse_ok = true;
    double e_out = 0, e_lse = 0;
    std::string fwd_errs;
    auto check_fwd = [&](const char* variant) {
      std::vector<double> go(nq), glse(lse.size()), rlse_f(lse.size());
      for (size_t i = 0; i < nq; i++) go[i] = __bfloat162float(out[i]);
      bool ok = true;
      for (size_t i = 0; i < lse.size(); i++) {
        if (std::isinf(rlse[i]) || std::isinf(lse[i])) {
          ok &= std::isinf(rlse[i]) && std::isinf(lse[i]) && (rlse[i] < 0) == (lse[i] < 0);
          glse[i] = rlse_f[i] = 0;
        } else {
          glse[i] = lse[i];
          rlse_f[i] = rlse[i];
        }
      }
      double eo = rel_err(go, ro), el = rel_err(glse, rlse_f);
      const bool same = same_as_first(std::string("fwd out ") + variant, out.data(), out.size() * sizeof(bf16)) &
                        same_as_first(std::string("fwd lse ") + variant, lse.data(), lse.size() * sizeof(float));
      char buf[128];
      std::snprintf(buf, sizeof buf, " %s %.1e/%.1e%s%s", variant, eo, el, ok ? "" : "(-inf rows differ)",
                    same ? "" : "(differs from contiguous)");
      ok &= same;
      fwd_errs += buf;
      lse_ok &= ok;
      e_out = std::max(e_out, eo);
      e_lse = std::max(e_lse, el);
    };
    auto all_fwd = [&](auto dtag) {
      constexpr int DD = decltype(dtag)::value;
      if (c.all_fwd) {
        run_fwd(flash::FwdW8<DD>{});
        check_fwd("w8");
        run_fwd(flash::FwdW8s<DD>{});
        check_fwd("w8s");
        run_fwd(flash::FwdM2<DD>{});
        check_fwd("m2");
        run_fwd(flash::FwdW4s<DD>{});
        check_fwd("w4s");
      }
      if (c.p == 0.f && has_tail(Tq, 64)) {  // the default D = 64 forward with its tail rows on CUDA cores
        run_fwd(flash::FwdW4s<DD>{}, true);
        check_fwd("w4s+tail");
      }
      if (c.p == 0.f) {  // the Hopper forward (no dropout)
        // OVERLAP (otag) and NWG warpgroups of 64 query rows per block (ntag)
        auto run_wgmma = [&](auto otag, auto ntag, bool tail = false) {
          constexpr bool OV = decltype(otag)::value;
          constexpr int NWG = decltype(ntag)::value;
          run_tiled_fwd(dtag, 64 * NWG, 128 * NWG, wgmma::fwd_smem_bytes<DD, OV, NWG>(), tail,
                        [&] { wgmma::attention_fwd_kernel<DD, OV, NWG>(fp); });
        };
        using Two = std::integral_constant<int, 2>;
        run_wgmma(std::false_type{}, Two{});
        check_fwd("wgmma");
        if (has_tail(Tq, 128)) {
          run_wgmma(std::false_type{}, Two{}, true);
          check_fwd("wgmma+tail");
        }
        run_wgmma(std::true_type{}, Two{});
        check_fwd("wgmma-overlap");
        if constexpr (DD == 64) {  // OWLET_ATTN_FWD=wgmma1: one warpgroup (64 query rows) per block
          run_wgmma(std::false_type{}, std::integral_constant<int, 1>{});
          check_fwd("wgmma1");
          if (has_tail(Tq, 64)) {
            run_wgmma(std::false_type{}, std::integral_constant<int, 1>{}, true);
            check_fwd("wgmma1+tail");
          }
        }
        // OWLET_ATTN_FWD=wgmma-ws: producer warpgroup, mbarrier ring, ping-pong consumers (attention_wgmma_ws.cuh);
        // and with its grid stopping at the last whole block, the tail rows on CUDA cores
        for (bool tail : {false, true}) {
          if (tail && !has_tail(Tq, wgmma::kBR)) continue;
          run_tiled_fwd(dtag, wgmma::kBR, owlet::cuda::wgmma_ws::kThreads, owlet::cuda::wgmma_ws::smem_bytes<DD>(), tail,
                        [&] { owlet::cuda::wgmma_ws::attention_fwd_ws_kernel<DD>(fp); });
          check_fwd(tail ? "wgmma-ws+tail" : "wgmma-ws");
        }
        // OWLET_ATTN_FWD=wgmma-ws-overlap: the same with the softmax of tile t overlapping P(t−1)·V(t−1), a stage
        // held one tile longer (3-stage ring)
        run_tiled_fwd(dtag, wgmma::kBR, owlet::cuda::wgmma_ws::kThreads, owlet::cuda::wgmma_ws::smem_bytes<DD, true>(),
                      false, [&] { owlet::cuda::wgmma_ws::attention_fwd_ws_kernel<DD, true>(fp); });
        check_fwd("wgmma-ws-overlap");
        // OWLET_ATTN_FWD=wgmma-ws-tma, wgmma-ws-tma-overlap: the producer's copies by TMA boxes from tensor maps
        // (tma.cuh; emulated with the 128-byte swizzle by address and zeros past each sequence's end)
        owlet::cuda::tma::QkvMaps maps;
        std::string why;
        if (!owlet::cuda::wgmma_ws::encode_qkv_maps(fp, DD, maps, why)) {
          std::fprintf(stderr, "tensor maps: %s\n", why.c_str());
          std::abort();
        }
        for (bool tail : {false, true}) {
          if (tail && !has_tail(Tq, wgmma::kBR)) continue;
          run_tiled_fwd(dtag, wgmma::kBR, owlet::cuda::wgmma_ws::kThreads, owlet::cuda::wgmma_ws::smem_bytes<DD>(), tail,
                        [&] { owlet::cuda::wgmma_ws::attention_fwd_ws_tma_kernel<DD>(fp, maps); });
          check_fwd(tail ? "wgmma-ws-tma+tail" : "wgmma-ws-tma");
        }
        run_tiled_fwd(dtag, wgmma::kBR, owlet::cuda::wgmma_ws::kThreads, owlet::cuda::wgmma_ws::smem_bytes<DD, true>(),
                      false, [&] { owlet::cuda::wgmma_ws::attention_fwd_ws_tma_kernel<DD, true>(fp, maps); });
        check_fwd("wgmma-ws-tma-overlap");
        // OWLET_ATTN_FWD=wgmma-wsp, wgmma-wsp-overlap: the persistent form, on a grid of 2 blocks (or fewer items).
        // The emulator runs one block after the other, so the first takes every item through one ring, one Q buffer
        // and one set of turns, and the second finds none left; the counter must be zero again after the launch.
        for (bool overlap : {false, true}) {
          const int q_tiles = (Tq + wgmma::kBR - 1) / wgmma::kBR, items = q_tiles * H * B;
          std::fill(out.begin(), out.end(), __float2bfloat16_rn(12345.f));
          std::fill(lse.begin(), lse.end(), 12345.f);
          const size_t smem = overlap ? owlet::cuda::wgmma_ws::smem_bytes<DD, true>()
                                      : owlet::cuda::wgmma_ws::smem_bytes<DD>();
          int taken = 0;
          emu::launch({unsigned(std::min(2, items)), 1, 1}, owlet::cuda::wgmma_ws::kThreads, smem, [&] {
            if (overlap) owlet::cuda::wgmma_ws::attention_fwd_wsp_kernel<DD, true>(fp, maps, q_tiles, &taken);
            else owlet::cuda::wgmma_ws::attention_fwd_wsp_kernel<DD>(fp, maps, q_tiles, &taken);
          });
          expect_counter_zero(taken, "wgmma-wsp");
          check_fwd(overlap ? "wgmma-wsp-overlap" : "wgmma-wsp");
        }
      }
      run_fwd(flash::FwdW4<DD>{});  // last: the backward below reads its output
      check_fwd("w4");
    };
    if (D == 64) all_fwd(std::integral_constant<int, 64>{});
    else all_fwd(std::integral_constant<int, 128>{});

    // ---- backward: Δ from the kernel's own bf16 output, as attention_bwd computes it ----
    std::vector<float> delta(size_t(B) * H * Tq), dq_acc(nq, 0.f);
    for (int b = 0; b < B; b++)
      for (int i = 0; i < Tq; i++)
        for (int h = 0; h < H; h++) {
          float s = 0;
          for (int d = 0; d < D; d++) s += __bfloat162float(dout.h[qi(b, i, h) + d]) * __bfloat162float(out[qi(b, i, h) + d]);
          delta[(size_t(b) * H + h) * Tq + i] = s;
        }
    std::vector<bf16> dk(nk, poison), dv(nk, poison), dq(nq);
    fp.o = out.data();
    fp.dout = dout.h.data();
    fp.delta = delta.data();
    fp.dq_acc = dq_acc.data();
    // layout 2: the contiguous gradients at the start of buffers three times their size, the rest poison (where a
    // write with the packed stride lands, to be seen rather than to corrupt the heap)
    std::vector<bf16> dq3(layout == 2 ? 3 * nq : 0), dk3(layout == 2 ? 3 * nk : 0), dv3(layout == 2 ? 3 * nk : 0);
    fp.dq = packed_grads ? gq_pk.data() : layout == 2 ? dq3.data() : dq.data();
    fp.dk = packed_grads ? gkv_base() + D : layout == 2 ? dk3.data() : dk.data();
    fp.dv = packed_grads ? gkv_base() + 2 * D : layout == 2 ? dv3.data() : dv.data();
    // Every backward run starts from a zero dQ accumulator and poisoned gradients (every element must be written).
    auto poison_grads = [&] {
      std::fill(dq_acc.begin(), dq_acc.end(), 0.f);
      std::fill(dk.begin(), dk.end(), poison);
      std::fill(dv.begin(), dv.end(), poison);
      std::fill(gq_pk.begin(), gq_pk.end(), poison);
      std::fill(gkv_pk.begin(), gkv_pk.end(), poison);
      for (auto* g : {&dq3, &dk3, &dv3}) std::fill(g->begin(), g->end(), poison);
    };
    // Both backward variants (4 and 8 warps per block), from the same inputs.
    auto run_bwd = [&](auto dtag, auto wtag, auto brtag) {
      constexpr int DD = decltype(dtag)::value, NW = decltype(wtag)::value, BR = decltype(brtag)::value;
      poison_grads();
      emu::launch({unsigned((Tk + 16 * NW - 1) / (16 * NW)), unsigned(H), unsigned(B)}, NW * 32,
                  flash::bwd_smem_bytes<DD, NW, BR>(), [&] { flash::attention_bwd_kernel<DD, NW, BR>(fp); });
    };
    // bf16 operands (P and dS rounded to bf16 before their products), fp32 accumulation: ~1e-2 relative at most.
    const double tol = 2e-2;
    bool ok = lse_ok && e_out < tol && e_lse < 1e-3;
    std::string bwd_errs;
    auto check_bwd = [&](const char* variant) {
      // dQ through dq_store_kernel, as attention_qkv_bwd finishes it (contiguous: into dq, where the dispatch converts
      // dq_acc as a whole instead, which the kernel must then equal)
      std::fill(dq.begin(), dq.end(), poison);
      std::fill(dq3.begin(), dq3.end(), poison);
      const unsigned blocks =
          unsigned((size_t(B) * Tq * H * (D / 8) + flash::kDqStoreThreads - 1) / flash::kDqStoreThreads);
      emu::launch({blocks, 1, 1}, flash::kDqStoreThreads, 0, [&] {
        if (D == 64) flash::dq_store_kernel<64>(fp);
        else flash::dq_store_kernel<128>(fp);
      });
      bool placed = true;  // packed: what belongs to no gradient kept its poison; contiguous: dq is dq_acc rounded
      if (packed_grads) {  // every gradient read back out of the packed buffers
        take(gq_pk.data(), dq, 0);
        take(gkv_base(), dk, 1);
        take(gkv_base(), dv, 2);
        if (!self)
          for (size_t r = 0; r < nq / size_t(D); r++)
            for (int slot = 1; slot < 3; slot++)
              for (int d = 0; d < D; d++) placed &= __bfloat162float(gq_pk[(3 * r + slot) * D + d]) == bf(12345.f);
        if (!self)
          for (size_t r = 0; r < nk / size_t(D); r++)
            for (int d = 0; d < D; d++) placed &= __bfloat162float(gkv_pk[3 * r * D + d]) == bf(12345.f);
      } else if (layout == 2) {  // the contiguous gradients out of their guarded buffers, whose rest kept its poison
        for (auto [g3, g] : {std::pair{&dq3, &dq}, std::pair{&dk3, &dk}, std::pair{&dv3, &dv}}) {
          std::copy(g3->begin(), g3->begin() + long(g->size()), g->begin());
          for (size_t i = g->size(); i < g3->size(); i++) placed &= __bfloat162float((*g3)[i]) == bf(12345.f);
        }
      } else {
        for (size_t i = 0; i < nq; i++) placed &= __bfloat162float(dq[i]) == bf(dq_acc[i]);
      }
      const bool same = same_as_first(std::string("dq_acc ") + variant, dq_acc.data(), nq * sizeof(float)) &
                        same_as_first(std::string("dq ") + variant, dq.data(), nq * sizeof(bf16)) &
                        same_as_first(std::string("dk ") + variant, dk.data(), nk * sizeof(bf16)) &
                        same_as_first(std::string("dv ") + variant, dv.data(), nk * sizeof(bf16));
      ok &= same && placed;
      std::vector<double> gdq(nq), gdk(nk), gdv(nk);
      for (size_t i = 0; i < nq; i++) gdq[i] = __bfloat162float(dq[i]);
      for (size_t i = 0; i < nk; i++) {
        gdk[i] = __bfloat162float(dk[i]);
        gdv[i] = __bfloat162float(dv[i]);
      }
      double e_dq = rel_err(gdq, rdq), e_dk = rel_err(gdk, rdk), e_dv = rel_err(gdv, rdv);
      ok &= e_dq < tol && e_dk < tol && e_dv < tol;
      char buf[160];
      std::snprintf(buf, sizeof buf, " %s dq %.1e dk %.1e dv %.1e%s%s", variant, e_dq, e_dk, e_dv,
                    same ? "" : "(differs from contiguous)",
                    placed ? "" : packed ? "(wrote outside its slots)" : "(dq is not dq_acc rounded)");
      bwd_errs += buf;
    };
    using I64 = std::integral_constant<int, 64>;
    using I128 = std::integral_constant<int, 128>;
    using W4 = std::integral_constant<int, 4>;
    using W8 = std::integral_constant<int, 8>;
    using BR32 = std::integral_constant<int, 32>;
    if (D == 64) {
      if (c.warps == 4) run_bwd(I64{}, W4{}, I64{});
      else run_bwd(I64{}, W8{}, I64{});
      check_bwd(c.warps == 4 ? "bwd4w" : "bwd8w");
    } else {
      if (c.warps == 4) run_bwd(I128{}, W4{}, BR32{});
      else run_bwd(I128{}, W8{}, BR32{});
      check_bwd(c.warps == 4 ? "bwd4w" : "bwd8w");
      if (c.all_fwd) {  // OWLET_ATTN_BWD=br64: 64 queries per step, 8 warps
        run_bwd(I128{}, W8{}, I64{});
        check_bwd("br64");
      }
    }
    if (c.p == 0.f) {  // OWLET_ATTN_BWD=wgmma: the Hopper backward (no dropout), from the same inputs
      // NWG warpgroups of 64 keys per block
      // tail (D = 64): the tiles stop at the last whole 64 rows and keys, attention_tail.cuh's backward does the rest
      // (launch_wgmma_bwd in attention.cu)
      // block_keys (one warpgroup, D = 64): the keys past the last whole 64 in the last key block instead
      // (Params::block_tail_keys, OWLET_ATTN_BWD=wgmma1-keys), whole query tiles.
      auto run_bwd = [&](auto dtag, auto ntag, bool tail = false, bool bulk = false, bool block_keys = false) {
        constexpr int DDB = decltype(dtag)::value, NWG = decltype(ntag)::value;
        poison_grads();
        fp.tq_main = tail ? owlet::cuda::attn_tail::main_extent(Tq, 64) : Tq;
        fp.tk_main = tail || block_keys ? owlet::cuda::attn_tail::main_extent(Tk, 64) : Tk;
        fp.block_tail_keys = block_keys ? Tk - fp.tk_main : 0;
        emu::Dim g{unsigned((fp.tk_main + 64 * NWG - 1) / (64 * NWG)), unsigned(H), unsigned(B)};
        auto go = [&](auto btag) {
          constexpr bool BULK = decltype(btag)::value;
          emu::launch(g, 128 * NWG, wgmma::bwd_smem_bytes<DDB, NWG, BULK>(),
                      [&] { wgmma::attention_bwd_kernel<DDB, NWG, BULK>(fp); });
        };
        if (bulk) go(std::true_type{});
        else go(std::false_type{});
        if (owlet::cuda::flash::bwd_tail_left(fp))  // (attention.cu's rule: with block_keys, none left)
          emu::launch({unsigned(H), unsigned(B)}, owlet::cuda::attn_tail::kBwdThreads,
                      owlet::cuda::attn_tail::bwd_smem_bytes<DDB>(), [&] { owlet::cuda::attn_tail::bwd_kernel<DDB>(fp); });
        fp.tq_main = Tq;
        fp.tk_main = Tk;
        fp.block_tail_keys = 0;
      };
      using Two = std::integral_constant<int, 2>;
      if (D == 64) run_bwd(std::integral_constant<int, 64>{}, Two{});
      else run_bwd(std::integral_constant<int, 128>{}, Two{});
      check_bwd("wgmma");
      // OWLET_ATTN_BWD=wgmma-bulk: dQ through shared memory and bulk reductions, with the tail kernels (as attention.cu)
      if (D == 64) run_bwd(std::integral_constant<int, 64>{}, Two{}, true, true);
      else run_bwd(std::integral_constant<int, 128>{}, Two{}, false, true);
      check_bwd("wgmma-bulk");
      if (D == 128) {
        // OWLET_ATTN_BWD=wgmma-p: the persistent form on a grid of 2 blocks (or fewer items). The emulator runs one
        // block after the other, so the first takes every item (each next item's first loads issued before the last
        // one's dK and dV are written), the second none; the counter must be zero again after the launch.
        poison_grads();
        const int k_tiles = (Tk + 127) / 128, items = k_tiles * H * B;
        int taken = 0;
        emu::launch({unsigned(std::min(2, items)), 1, 1}, 256, wgmma::bwd_smem_bytes<128, 2, false, true>(),
                    [&] { wgmma::attention_bwd_persistent_kernel(fp, k_tiles, &taken); });
        expect_counter_zero(taken, "wgmma-p");
        check_bwd("wgmma-p");
        // OWLET_ATTN_BWD=wgmma-ws: the warp-specialised backward (attention_wgmma_bwd_ws.cuh: Q, dO, K, V by TMA from
        // a producer warp, dQ by bulk reductions from a writer warp, two consumer warpgroups)
        poison_grads();
        owlet::cuda::wgmma_bwd_ws::Maps ws_maps;
        std::string why;
        if (!owlet::cuda::wgmma_bwd_ws::encode_maps(fp, ws_maps, why)) {
          std::fprintf(stderr, "tensor maps: %s\n", why.c_str());
          std::abort();
        }
        emu::launch({unsigned((Tk + owlet::cuda::wgmma_bwd_ws::kKeys - 1) / owlet::cuda::wgmma_bwd_ws::kKeys), unsigned(H),
                     unsigned(B)},
                    owlet::cuda::wgmma_bwd_ws::kThreads, owlet::cuda::wgmma_bwd_ws::smem_bytes(),
                    [&] { owlet::cuda::wgmma_bwd_ws::attention_bwd_ws_kernel(fp, ws_maps); });
        check_bwd("wgmma-ws");
      }
      if (D == 64) {  // OWLET_ATTN_BWD=wgmma1: one warpgroup of 64 keys per block
        run_bwd(std::integral_constant<int, 64>{}, std::integral_constant<int, 1>{});
        check_bwd("wgmma1");
        if (has_tail(Tk, 64)) {
          run_bwd(std::integral_constant<int, 64>{}, std::integral_constant<int, 1>{}, false, false, true);
          check_bwd("wgmma1-keys");
        }
        if (has_tail(Tq, 64) || has_tail(Tk, 64)) {
          run_bwd(std::integral_constant<int, 64>{}, Two{}, true);
          check_bwd("wgmma+tail");
          run_bwd(std::integral_constant<int, 64>{}, std::integral_constant<int, 1>{}, true);
          check_bwd("wgmma1+tail");
        }
        // OWLET_ATTN_BWD=wgmma-q: the query-major kernel for Tq <= 64 (attention_wgmma_bwd_short.cuh), all key tiles
        // in one block and one tile per block, with and without the key tail on CUDA cores (launch_wgmma_bwd).
        if (Tq <= wgmma::kShortQueries) {
          for (bool tail : {false, true}) {
            if (tail && !has_tail(Tk, 64)) continue;
            fp.tk_main = tail ? owlet::cuda::attn_tail::main_extent(Tk, 64) : Tk;
            const int tiles = (fp.tk_main + 63) / 64;
            for (int per : {tiles, 1}) {
              poison_grads();
              emu::launch({unsigned((tiles + per - 1) / per), unsigned(H), unsigned(B)}, 128, wgmma::bwd_short_smem_bytes<64>(),
                          [&] { wgmma::attention_bwd_short_kernel<64>(fp, per); });
              if (fp.tk_main < Tk)
                emu::launch({unsigned(H), unsigned(B)}, owlet::cuda::attn_tail::kBwdThreads,
                            owlet::cuda::attn_tail::bwd_smem_bytes<64>(), [&] { owlet::cuda::attn_tail::bwd_kernel<64>(fp); });
              check_bwd(tail ? (per == 1 ? "wgmma-q split+tail" : "wgmma-q+tail") : (per == 1 ? "wgmma-q split" : "wgmma-q"));
            }
          }
          fp.tk_main = Tk;
        }
      }
    }
    const std::string name =
        std::string(c.name) + (layout == 1 ? " [packed q|k|v]" : layout == 2 ? " [packed q|k|v, contiguous grads]" : "");
    std::printf("%-4s %-42s out/lse%s\n     %s\n", ok ? "PASS" : "FAIL", name.c_str(), fwd_errs.c_str(), bwd_errs.c_str());
    if (!differ.empty()) std::printf("     not as contiguous:%s\n", differ.c_str());
    return ok;
  };
  bool ok = run_layout(0);
  if (c.packed) ok = run_layout(1) && ok;
  if (c.mixed) ok = run_layout(2) && ok;
  return ok;
}

}  // namespace

// `--random N SEED`: N random shapes instead of the list below (head dim 64 or 128; Tq and Tk one below to four
// past a multiple of 64 — the tail kernels' range and its edges —, or a short query sequence; causal, key masks).
int random_cases(int n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> u(0, 1 << 20);
  std::vector<std::string> names;
  names.reserve(size_t(n));
  int failed = 0;
  for (int k = 0; k < n; k++) {
    const int D = u(rng) % 2 ? 64 : 128, H = 1 + u(rng) % 2;
    const bool causal = u(rng) % 2, mask = u(rng) % 3 == 0;
    const int B = mask ? 2 : 1 + u(rng) % 2;  // (a key mask hides all of batch 0's keys: batch 1 has the real mask)
    const int Tq = u(rng) % 4 == 0 ? 1 + u(rng) % 64 : 64 * (1 + u(rng) % 3) + u(rng) % 6 - 1;
    const int Tk = 64 * (1 + u(rng) % 4) + u(rng) % 6 - 1;
    char buf[96];
    std::snprintf(buf, sizeof buf, "random D%d B%d H%d Tq%d Tk%d%s%s", D, B, H, Tq, Tk, causal ? " causal" : "",
                  mask ? " + key mask" : "");
    names.emplace_back(buf);
    const bool packed = u(rng) % 4 == 0;  // (and again on packed q|k|v views, equal bit for bit)
    if (packed) names.back() += " (packed)";
    if (!run({names.back().c_str(), B, H, Tq, Tk, D, causal, mask, 0.f, D == 64 ? 4 : 8, false, packed}, rng)) failed++;
  }
  std::printf("%d failed\n", failed);
  return failed ? 1 : 0;
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // every finished case shows, even when a later one crashes
  if (argc > 1 && std::string(argv[1]) == "--random")
    return random_cases(argc > 2 ? std::atoi(argv[2]) : 20, argc > 3 ? unsigned(std::atoi(argv[3])) : 1u);
  std::vector<Case> cases = {
      {"full D64 B2 H2 T77", 2, 2, 77, 77, 64, false, false, 0.f},
      {"cross D64 Tq64 Tk83 (abstractor-like)", 1, 2, 64, 83, 64, false, false, 0.f},
      {"causal D128 T70", 1, 2, 70, 70, 128, true, false, 0.f},
      {"causal D64 Tq40 Tk72 + key mask", 2, 1, 40, 72, 64, true, true, 0.f},
      {"causal D128 Tq72 Tk40 (rows see nothing)", 1, 1, 72, 40, 128, true, false, 0.f},
      {"full D128 T33 + key mask", 2, 1, 33, 33, 128, false, true, 0.f},
      {"dropout 0.2 D64 T50", 1, 2, 50, 50, 64, false, false, 0.2f},
      {"dropout 0.1 causal D128 T45", 1, 1, 45, 45, 128, true, false, 0.1f},
      {"long full D64 Tq150 Tk200", 1, 1, 150, 200, 64, false, false, 0.f},
      {"long causal D128 Tq100 Tk140", 1, 1, 100, 140, 128, true, false, 0.f},
      {"several 128-row blocks: causal D128 Tq260 Tk270 + mask", 2, 1, 260, 270, 128, true, true, 0.f},
      {"causal D128 B2 Tq200 Tk300 + key mask (3 key tiles)", 2, 1, 200, 300, 128, true, true, 0.f},
      {"block order: causal D128 H3 T300 (3 heads in 2 sections)", 1, 3, 300, 300, 128, true, false, 0.f},
      {"block order: causal D128 B3 Tq200 Tk260 + key mask", 3, 1, 200, 260, 128, true, true, 0.f, 4, false},
      // wgmma-ws: the upper consumer warpgroup has no rows (Tq 50) through 4 key tiles of a 2-stage ring: it must
      // still release every stage; causal with 5 key tiles and a 128-row block whose lower half stops a tile early.
      {"cross D128 B2 Tq50 Tk400 + key mask (4 key tiles, idle warpgroup)", 2, 1, 50, 400, 128, false, true, 0.f, 8, false},
      {"causal D64 Tq190 Tk600 (5 key tiles)", 1, 1, 190, 600, 64, true, false, 0.f, 8, false},
      {"4-warp bwd: full D64 B2 H2 T77", 2, 2, 77, 77, 64, false, false, 0.f, 4, false},
      {"4-warp bwd: causal D128 Tq100 Tk140 + mask", 2, 1, 100, 140, 128, true, true, 0.f, 4, false},
      {"4-warp bwd: dropout 0.2 D64 Tq150 Tk200", 1, 1, 150, 200, 64, false, false, 0.2f, 4, false},
      // D = 64 over three 128-key blocks (the last with 4 keys: its upper warpgroup has none), causal with a shift.
      {"4-warp bwd: causal D64 B2 Tq190 Tk260 + key mask", 2, 1, 190, 260, 64, true, true, 0.f, 4, false},
      // Tails of 1..4 rows or keys past the last whole 64 (attention_tail.cuh): the ViT's 257 tokens, the
      // abstractor's 64 queries over 64 + 257 keys (its 321: 5 × 64 + 1), causal with a shift, key masks.
      {"tail: ViT-like D64 B1 H2 T257", 1, 2, 257, 257, 64, false, false, 0.f, 4, false},
      {"tail: abstractor-like D64 Tq64 Tk193", 1, 2, 64, 193, 64, false, false, 0.f, 4, false},
      {"tail: causal D64 B2 Tq132 Tk130 + key mask", 2, 1, 132, 130, 64, true, true, 0.f, 4, false},
      {"tail: causal D64 Tq68 Tk196 (rows 4, keys 4)", 1, 1, 68, 196, 64, true, false, 0.f, 4, false},
      {"tail: D64 Tq69 Tk197 (5 past the tile: whole tiles)", 1, 1, 69, 197, 64, false, false, 0.f, 4, false},
      // OWLET_ATTN_BWD=wgmma-q (Tq <= 64): the abstractor's 64 queries over 5 key tiles and a 1-key tail, fewer
      // queries than a tile with a key mask, causal with a shift.
      {"short q: abstractor-like D64 B2 H2 Tq64 Tk321", 2, 2, 64, 321, 64, false, false, 0.f, 4, false},
      {"short q: D64 B2 Tq40 Tk130 + key mask", 2, 1, 40, 130, 64, false, true, 0.f, 4, false},
      {"short q: causal D64 Tq50 Tk190", 1, 2, 50, 190, 64, true, false, 0.f, 4, false},
      {"tail: D128 T131 causal (forward rows; backward whole tiles)", 1, 1, 131, 131, 128, true, false, 0.f, 8, false},
      {"tail: D128 Tq130 Tk140 + key mask", 2, 1, 130, 140, 128, false, true, 0.f, 8, false},
      // Packed q|k|v (attention_qkv_fwd/bwd, the ViT's self-attention): every variant again on views into packed
      // buffers, equal bit for bit. The ViT's 257 tokens (every D = 64 forward tile shape, the tail kernels both
      // ways, the Hopper forwards and backwards); D = 128 causal with a key mask and 3-row tails (br64, the 8-warp
      // backward); dropout (the mma.sync kernels only); a short self-attention (wgmma-q); and a cross-length one
      // (q and k|v in two packed buffers: wgmma-q with the key tail, the slots of neither left alone). Some again
      // with packed inputs and contiguous gradients.
      {"packed: ViT-like D64 B2 H2 T257", 2, 2, 257, 257, 64, false, false, 0.f, 4, true, true},
      {"packed: causal D128 B2 H2 T131 + key mask", 2, 2, 131, 131, 128, true, true, 0.f, 8, true, true, true},
      {"packed: dropout 0.2 D64 B2 H2 T50", 2, 2, 50, 50, 64, false, false, 0.2f, 8, true, true, true},
      {"packed: dropout 0.1 causal D128 B2 H2 T45", 2, 2, 45, 45, 128, true, false, 0.1f, 4, true, true},
      {"packed: short causal D64 B2 H3 T60 + key mask", 2, 3, 60, 60, 64, true, true, 0.f, 4, false, true},
      {"packed: cross D64 B2 H2 Tq64 Tk193", 2, 2, 64, 193, 64, false, false, 0.f, 4, false, true, true},
  };
  std::string only = argc > 1 ? argv[1] : "";
  std::mt19937 rng(7);
  int failed = 0;
  for (const Case& c : cases) {
    if (!only.empty() && std::string(c.name).find(only) == std::string::npos) continue;
    if (!run(c, rng)) failed++;
  }
  std::printf("%d failed\n", failed);
  return failed ? 1 : 0;
}
