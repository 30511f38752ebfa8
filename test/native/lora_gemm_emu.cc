// Runs LoRA's fused GEMM (native/src/cuda/lora_gemm.cuh: C = A op(W) + (s L) Rᵀ, TMA ring, producer warps, two
// consumer warpgroups on wgmma m64n256k16) through the host warp emulator against a float64 reference: the forward's
// K-major W and dx's N-major W, ranks 8 and 16, shapes whose M, N and K end inside a tile (the TMA's zero fill; its
// box stores leaving out what lies past M and N), and grids smaller than the tile count (a block's tiles run through
// one stage ring, one lr buffer and one staging buffer per warpgroup), in clusters of two blocks that each load half of
// W's tile and multicast it to both (an odd number of row blocks leaves the last pair's second block past M). The reference takes s·L rounded to bf16 as the kernel does (s = 0.75 is not a power of two), so what is
// left is the fp32 summation order and C's one rounding; an operand read from the wrong stage, atom or chunk is off by
// the size of a term. Every element of C is checked, which starts poisoned. The kernels that compute their own L
// (OWN_L) and dx's gradient sums (OWN_GB) run on grids whose blocks are all resident together (emu::launch_resident),
// as their waits on other blocks' flags need. Build and run: scripts/flash-emu.sh.
#include "emu_kernel.h"

#include "../../native/src/cuda/lora_gemm.cuh"
#include "emu_values.h"

#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace lg = owlet::cuda::lora_gemm;
using owlet::cuda::bf16;
using namespace emu_values;

namespace {

// p > 0: the update under LoRA's dropout mask (the DROP kernel, dx's: N-major W, 4 stages).
// epi: the epilogue (lg::kEpiWarp, each warp storing its own rows of C; lg::kEpiOverlap, a tile's rounds of C but the
// first going out during the next tile's first k-steps).
// own_l: L = A Pᵀ computed in the kernel (the OWN_L kernels: column block 0's tiles compute it, write it out and set
// their row block's flag; the other tiles wait for the flag and read it), run `own_l` times on one flags array with
// epochs 1, 2, …, the grid's blocks all resident (emu::launch_resident) and L's buffer poisoned before each run — so
// a tile that took L before its flag was set, or a flag left over from the previous run, reads the poison.
// own_gb (with own_l, N-major): the same tiles' column sums Σ_m A[m][k] xa[m][j] per row block (gb_ws), and the
// tail's Σ_m L[m][j] x[m][n] per range of row blocks (ga_ws, x [M, N], L the kernel's own), each checked summed over
// its blocks against float64.
// split: the last round split by k-steps (Maps::split; lg::kSplitOf's kernels): `split` is the number of blocks
// expected to hand the partial sums of a tile another cluster starts to its owner (their flags are checked set), 0
// where the kernel is to leave the last round whole (OWN_L with a tile of column block 0 in it, the kernels that do not
// split), −1 for Maps::split = 0.
bool run(int stages, bool nmajor, int M, int N, int K, int R, unsigned grid, std::mt19937& rng, float p = 0.f,
         int epi = lg::kEpiGroup, int own_l = 0, bool own_gb = false, int split = -1) {
  auto randv = [&](size_t n) { return random_bf16(n, rng); };
  const float s = 0.75f;
  const std::vector<bf16> A = randv(size_t(M) * K), W = randv(size_t(N) * K), Rm = randv(size_t(N) * R),
                          P = randv(size_t(R) * K);
  std::vector<bf16> L = randv(size_t(M) * R);
  if (own_l)  // L = A Pᵀ rounded to bf16 (the kernel's fp32 sum rounds the same way but where a sum lies within
              // float rounding of a bf16 tie: a term of L off by one bf16 step, far inside C's tolerance)
    for (int m = 0; m < M; m++)
      for (int j = 0; j < R; j++) {
        double acc = 0;
        for (int k = 0; k < K; k++)
          acc += double(__bfloat162float(A[size_t(m) * K + k])) * double(__bfloat162float(P[size_t(j) * K + k]));
        L[size_t(m) * R + j] = __float2bfloat16_rn(float(acc));
      }
  // W's element (n, k) of op(W): K-major W is [N, K], N-major W is [K, N]
  auto w_at = [&](int n, int k) {
    return double(__bfloat162float(nmajor ? W[size_t(k) * N + n] : W[size_t(n) * K + k]));
  };
  const uint64_t key = owlet::hash_u01_key(1234);
  const float scale = p > 0.f ? float(1.0 / (1.0 - double(p))) : 1.f;
  std::vector<double> want(size_t(M) * N), got(want.size());
  int dropped = 0;
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      double acc = 0, upd = 0;
      for (int k = 0; k < K; k++) acc += double(__bfloat162float(A[size_t(m) * K + k])) * w_at(n, k);
      for (int j = 0; j < R; j++)
        upd += double(__bfloat162float(__float2bfloat16_rn(__bfloat162float(L[size_t(m) * R + j]) * s))) *
               double(__bfloat162float(Rm[size_t(n) * R + j]));
      if (p > 0.f) {
        const bool keep = owlet::hash_u01_at(key, uint64_t(m) * N + n) >= p;
        dropped += !keep;
        upd = keep ? upd * scale : 0.0;
      }
      want[size_t(m) * N + n] = acc + upd;
    }
  std::vector<bf16> C(want.size(), __float2bfloat16_rn(12345.f));
  std::vector<bf16> L_out(L.size());
  const int m_blocks = (M + lg::kBM - 1) / lg::kBM;
  std::vector<unsigned> flags(size_t(m_blocks), 0u);
  const std::vector<bf16> XA = randv(size_t(M) * R);
  std::vector<float> gb_ws(size_t(m_blocks) * R * K);
  const int ranges = (m_blocks + lg::kTailRows - 1) / lg::kTailRows;
  const std::vector<bf16> X = randv(size_t(M) * N);
  std::vector<float> ga_ws(size_t(ranges) * R * N);
  std::vector<float> split_ws(size_t(grid) * lg::kSplitSlot, std::nanf(""));
  std::vector<unsigned> split_flags(grid, 0u);
  lg::Args g{own_l ? L_out.data() : L.data(), Rm.data(), M, N, K, R, s, key, p, scale,
             P.data(), L_out.data(), flags.data(), 0u, XA.data(), gb_ws.data(), ga_ws.data()};
  lg::Maps maps{};
  std::string why;
  if (!lg::encode_maps(A.data(), W.data(), C.data(), g, nmajor, maps, why)) {
    std::fprintf(stderr, "tensor maps: %s\n", why.c_str());
    return false;
  }
  maps.split = split >= 0 ? 1 : 0, maps.split_ws = split_ws.data(), maps.split_flags = split_flags.data();
  if (own_gb && !owlet::cuda::tma::encode(maps.x, {X.data(), 1, M, 1, N, N}, lg::kBM, why)) {
    std::fprintf(stderr, "tensor map of x: %s\n", why.c_str());
    return false;
  }
  double l_err = 0, gb_err = 0, ga_err = 0;
  // the error of Σ over `parts` of ws [parts][R][cols] against Σ_m V[m][j] · Y[m][n] (V [M, R], Y [M, cols])
  auto sums_err = [&](const std::vector<bf16>& V, const std::vector<bf16>& Y, int cols, const std::vector<float>& ws,
                      int parts) {
    std::vector<double> want(size_t(R) * cols, 0.0), got(want.size(), 0.0);
    for (int m = 0; m < M; m++)
      for (int j = 0; j < R; j++)
        for (int n = 0; n < cols; n++)
          want[size_t(j) * cols + n] +=
              double(__bfloat162float(V[size_t(m) * R + j])) * double(__bfloat162float(Y[size_t(m) * cols + n]));
    for (int b = 0; b < parts; b++)
      for (size_t i = 0; i < got.size(); i++) got[i] += ws[size_t(b) * R * cols + i];
    return rel_err(got, want);
  };
  for (int run = 1; run <= own_l; run++) {
    std::fill(L_out.begin(), L_out.end(), __float2bfloat16_rn(-777.f));
    std::fill(C.begin(), C.end(), __float2bfloat16_rn(12345.f));
    std::fill(gb_ws.begin(), gb_ws.end(), std::nanf(""));
    std::fill(ga_ws.begin(), ga_ws.end(), std::nanf(""));
    g.epoch = unsigned(run);
    emu::launch_resident({grid, 1, 1}, lg::kThreads, lg::smem_bytes<4>(), [&] {
      constexpr int kG = lg::kEpiGroup, kO = lg::kEpiOverlap, kR = lg::kEpiRing;
      if (own_gb && epi == kO) lg::lora_gemm_kernel<true, 4, false, kO, true, true>(g, maps);
      else if (own_gb && epi == kR) lg::lora_gemm_kernel<true, 4, false, kR, true, true>(g, maps);
      else if (own_gb) lg::lora_gemm_kernel<true, 4, false, kG, true, true>(g, maps);
      else if (epi == kO && nmajor) lg::lora_gemm_kernel<true, 4, false, kO, true>(g, maps);
      else if (epi == kO) lg::lora_gemm_kernel<false, 4, false, kO, true>(g, maps);
      else if (epi == kR && nmajor) lg::lora_gemm_kernel<true, 4, false, kR, true>(g, maps);
      else if (epi == kR) lg::lora_gemm_kernel<false, 4, false, kR, true>(g, maps);
      else if (nmajor) lg::lora_gemm_kernel<true, 4, false, kG, true>(g, maps);
      else lg::lora_gemm_kernel<false, 4, false, kG, true>(g, maps);
    }, lg::kCluster);
    std::vector<double> lw(L.size()), lg_(L.size());
    for (size_t i = 0; i < L.size(); i++) lw[i] = __bfloat162float(L[i]), lg_[i] = __bfloat162float(L_out[i]);
    l_err = std::max(l_err, rel_err(lg_, lw));
    if (!own_gb) continue;
    gb_err = std::max(gb_err, sums_err(XA, A, K, gb_ws, m_blocks));
    ga_err = std::max(ga_err, sums_err(L_out, X, N, ga_ws, ranges));
  }
  if (!own_l && split >= 0) g.epoch = 1;  // (the flags start at 0)
  // (a split last round waits on other clusters' flags: every block resident, as for OWN_L)
  auto launch = split >= 0 ? emu::launch_resident : emu::launch;
  if (!own_l) launch({grid, 1, 1}, lg::kThreads, stages == 3 ? lg::smem_bytes<3>() : lg::smem_bytes<4>(), [&] {
    if (p > 0.f) {
      lg::lora_gemm_kernel<true, 4, true>(g, maps);
    } else if (epi == lg::kEpiWarp) {
      if (nmajor) lg::lora_gemm_kernel<true, 4, false, lg::kEpiWarp>(g, maps);
      else lg::lora_gemm_kernel<false, 4, false, lg::kEpiWarp>(g, maps);
    } else if (epi == lg::kEpiOverlap) {
      if (nmajor) lg::lora_gemm_kernel<true, 4, false, lg::kEpiOverlap>(g, maps);
      else lg::lora_gemm_kernel<false, 4, false, lg::kEpiOverlap>(g, maps);
    } else if (epi == lg::kEpiRing) {
      if (nmajor) lg::lora_gemm_kernel<true, 4, false, lg::kEpiRing>(g, maps);
      else lg::lora_gemm_kernel<false, 4, false, lg::kEpiRing>(g, maps);
    } else if (stages == 3) {
      if (nmajor) lg::lora_gemm_kernel<true, 3>(g, maps);
      else lg::lora_gemm_kernel<false, 3>(g, maps);
    } else {
      if (nmajor) lg::lora_gemm_kernel<true, 4>(g, maps);
      else lg::lora_gemm_kernel<false, 4>(g, maps);
    }
  }, lg::kCluster);
  for (size_t i = 0; i < C.size(); i++) got[i] = __bfloat162float(C[i]);
  const double e = rel_err(got, want);
  const int tiles = ((M + lg::kBM - 1) / lg::kBM) * ((N + lg::kBN - 1) / lg::kBN);  // (of one block: 128 × 256)
  // C rounded to bf16 once: 2^-9 of the largest element, and the fp32 sums' order; L (OWN_L) rounded once like the
  // reference, apart from sums within float rounding of a bf16 tie
  // gb_ws: fp32 sums of bf16 products (a NaN left anywhere fails it)
  int handed = 0;  // blocks that handed partial sums on (their split flag set by the last run)
  for (unsigned f : split_flags) handed += f == g.epoch && g.epoch != 0;
  const bool ok = e < 8e-3 && l_err < 4e-3 && gb_err < 1e-5 && ga_err < 1e-5 && (split < 0 || handed == split);
  std::printf("%s %d stages%s, %s W, M%-4d N%-4d K%-4d r%-2d%s, %d tiles on %u blocks: C %.1e", ok ? "PASS" : "FAIL",
              stages,
              (std::string(epi == lg::kEpiWarp      ? " (warp epilogue)"
                          : epi == lg::kEpiOverlap ? " (overlapped epilogue)"
                          : epi == lg::kEpiRing    ? " (ring epilogue)"
                                                   : "") +
               (own_gb ? " (L, gyᵀ xa in the kernel)" : own_l ? " (L in the kernel)" : ""))
                  .c_str(),
              nmajor ? "N-major" : "K-major",
              M, N, K, R,
              p > 0.f ? (" dropout " + std::to_string(p).substr(0, 4) + " (" + std::to_string(dropped) + " dropped)").c_str()
                      : "",
              tiles, grid, e);
  if (own_l) std::printf(", L %.1e", l_err);
  if (own_gb) std::printf(", gb %.1e, ga %.1e (%d ranges)", gb_err, ga_err, ranges);
  if (own_l) std::printf(" over %d runs", own_l);
  if (split >= 0) std::printf(", last round split: %d blocks handed partial sums on (%d expected)", handed, split);
  std::printf("\n");
  return ok;
}

}  // namespace

int main() {
  std::mt19937 rng(5);
  int failed = 0;
  // (grids of clusters of lg::kCluster blocks, each pair taking row blocks 2p and 2p + 1 of a column block)
  // (4 stages, the default, and session 18's 3)
  for (int stages : {4, 3})
    for (bool nmajor : {false, true}) {
      failed += !run(stages, nmajor, 200, 264, 136, 8, 2, rng);   // one cluster through both column blocks; N, K end
                                                                  // in a tile
      failed += !run(stages, nmajor, 390, 512, 64, 16, 2, rng);   // 4 row blocks (2 pairs) × 2 column blocks; one
                                                                  // k-step
      failed += !run(stages, nmajor, 64, 72, 328, 8, 4, rng);     // an odd row-block count (the pair's second block
                                                                  // past M), more clusters than work; 6 k-steps
                                                                  // through the ring
      failed += !run(stages, nmajor, 300, 264, 200, 16, 4, rng);  // 3 row blocks: a full pair and a half one on 2
                                                                  // clusters
    }
  // dx under LoRA's input dropout: the mask on the update (hashed a tile ahead during the k-steps): several tiles per
  // block (the next tile's mask), a K of one k-step (the hashes after the k-steps), rows and columns ending in a tile
  failed += !run(4, true, 390, 520, 200, 8, 2, rng, 0.1f);
  failed += !run(4, true, 300, 264, 64, 16, 4, rng, 0.3f);
  // each warp storing its own 16 rows of C: rows and columns ending inside a warp's rows and a box, several tiles
  for (bool nmajor : {false, true}) {
    failed += !run(4, nmajor, 390, 520, 200, 8, 2, rng, 0.f, lg::kEpiWarp);
    failed += !run(4, nmajor, 37, 72, 64, 16, 2, rng, 0.f, lg::kEpiWarp);
  }
  // L computed in the kernel (rank 8): column block 0's tiles compute rows of L the other column blocks wait for —
  // several row blocks and column blocks on one cluster (in order) and on 2 and 3 clusters, where most tiles wait on
  // another cluster's (tile t of the grouped order waits for t − pairs · column block, on cluster t mod clusters); an
  // odd row-block count (a pair's second block past M computes nothing it announces); K ending inside a k-step
  for (bool nmajor : {false, true}) {
    failed += !run(4, nmajor, 390, 776, 200, 8, 2, rng, 0.f, lg::kEpiGroup, 2);
    failed += !run(4, nmajor, 520, 520, 136, 8, 4, rng, 0.f, lg::kEpiGroup, 2);
    failed += !run(4, nmajor, 390, 776, 328, 8, 6, rng, 0.f, lg::kEpiGroup, 1);
    // (more than one group of 8 row-block pairs: a cluster's tile of column block 0 after another column block's,
    // whose ring fills these warps skipped)
    failed += !run(4, nmajor, 2100, 520, 200, 8, 4, rng, 0.f, lg::kEpiGroup, 1);
  }
  // and gyᵀ xa's row-block sums in the same tiles and (gy B)ᵀ x in the tail (dx's kernel): rows and columns ending
  // inside a block and a k-step, an odd row-block count, tiles on several clusters, tiles that divide among the
  // clusters (every block takes tail items) and that do not (the clusters with one tile fewer take them), more than
  // one range of row blocks (M 2100: 17 row blocks)
  failed += !run(4, true, 390, 776, 200, 8, 2, rng, 0.f, lg::kEpiGroup, 1, true);
  failed += !run(4, true, 520, 520, 136, 8, 4, rng, 0.f, lg::kEpiGroup, 2, true);
  failed += !run(4, true, 2100, 136, 72, 8, 4, rng, 0.f, lg::kEpiGroup, 1, true);
  // (one idle cluster of 6 is too few to stream x alone: every block takes tail items)
  failed += !run(4, true, 200, 1100, 72, 8, 12, rng, 0.f, lg::kEpiGroup, 1, true);
  // the overlapped epilogue (a tile's rounds of C after the first going out during the next tile's first k-steps) and
  // the ring's (C through the held stage of the tile's last k-step, released during the next tile's first): several
  // tiles per block (rounds carried into the next tile, a stage held across; N a multiple of 256, so that a block's
  // last tile has columns in every round), K of 1 and 2 k-steps (fewer than the rounds to carry: the rest go out
  // before the next tile's first; the held stage the next tile's first), rows and columns ending inside a tile; with L
  // in the kernel (the forward's rounds through the lr buffer, which the producers may refill only once the carried
  // round is read; the held stage's A box, which they read) and with dx's gradient sums (the tail refilling the last
  // held stage)
  for (int epi : {lg::kEpiOverlap, lg::kEpiRing}) {
    for (bool nmajor : {false, true}) {
      failed += !run(4, nmajor, 390, 512, 200, 8, 2, rng, 0.f, epi);
      failed += !run(4, nmajor, 300, 264, 64, 16, 2, rng, 0.f, epi);
      failed += !run(4, nmajor, 200, 776, 72, 8, 2, rng, 0.f, epi);
      failed += !run(4, nmajor, 390, 768, 200, 8, 2, rng, 0.f, epi, 2);
      failed += !run(4, nmajor, 520, 520, 64, 8, 4, rng, 0.f, epi, 1);
    }
    failed += !run(4, true, 390, 512, 200, 8, 2, rng, 0.f, epi, 1, true);
    failed += !run(4, true, 2100, 136, 72, 8, 4, rng, 0.f, epi, 1, true);
  }
  // the last round split by k-steps (a stream-K tail): a cluster's range starting inside a tile hands its partial
  // sums to the tile's owner, which adds them before its update and epilogue. 20 pairs of tiles on 3 clusters
  // (M1030 N776, 4 k-steps: the last round's 8 k-steps as [0, 2), [2, 5), [5, 8), one helper per tile); 7 on 3 (one
  // tile in the last round, 6 k-steps in three parts: its owner adds two slots); 7 on 5 with 2 k-steps (4 k-steps in
  // the last round for 5 clusters: one range empty, the rest one k-step each); with L in the kernel over two runs
  // (each run's flags a new epoch), and where column block 0 has a tile in the last round (left whole)
  for (int epi : {lg::kEpiRing, lg::kEpiOverlap})
    for (bool nmajor : {false, true}) {
      failed += !run(4, nmajor, 1030, 776, 200, 8, 6, rng, 0.f, epi, 0, false, 4);
      failed += !run(4, nmajor, 200, 1700, 328, 8, 6, rng, 0.f, epi, 0, false, 4);
      failed += !run(4, nmajor, 200, 1700, 72, 8, 10, rng, 0.f, epi, 0, false, 4);
    }
  // (9 tiles on 7 clusters, 2 k-steps: the last round's 4 k-steps leave three ranges empty, one of them starting
  // inside a tile after its owner's — no slot to wait for)
  failed += !run(4, false, 200, 2204, 72, 8, 14, rng, 0.f, lg::kEpiRing, 0, false, 4);
  // (the kernels that do not split — the group epilogue's, OWN_L's with it — leave Maps::split alone)
  for (int epi : {lg::kEpiGroup, lg::kEpiRing}) {
    failed += !run(4, false, 1030, 776, 200, 8, 6, rng, 0.f, epi, 2, false, epi == lg::kEpiRing ? 4 : 0);
    failed += !run(4, true, 200, 1700, 328, 8, 6, rng, 0.f, epi, 1, false, epi == lg::kEpiRing ? 4 : 0);
  }
  failed += !run(4, false, 2100, 520, 200, 8, 8, rng, 0.f, lg::kEpiRing, 1, false, 0);
  failed += !run(4, true, 1030, 776, 200, 8, 6, rng, 0.f, lg::kEpiGroup, 0, false, 0);
  std::printf("%d failed\n", failed);
  return failed ? 1 : 0;
}
