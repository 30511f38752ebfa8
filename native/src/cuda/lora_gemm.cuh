// LoRA's frozen GEMM with the rank-r update in the same kernel (Hopper, sm_90a): for bf16 matrices
//
//   C [M, N] = A [M, K] · op(W) + L [M, r] · (s · R [N, r])ᵀ        (fp32 accumulation, C rounded once to bf16)
//
//   forward:  y  = x Wᵀ + s · xa Bᵀ        A = x, W [N, K] (K-major), L = xa, R = B          (W_NMAJOR = false)
//   dx:       gx = gy W + s · (gy B) A      A = gy, W [K, N] (N-major), L = gy B, R = Aᵀ      (W_NMAJOR = true)
//   dx under LoRA's input dropout: the update masked and scaled as x was, element by element    (DROP; session 19)
//   either, with L computed in the kernel instead of read (OWN_L, rank 8, session 20): x Aᵀ or gy B from the A boxes
//     the ring brings anyway, by the tiles of column block 0, announced to the other tiles of their rows by a flag;
//     dx's also sums gyᵀ xa over its rows and, after its tiles, (gy B)ᵀ x on the blocks the last round leaves idle —
//     LoRA's ga and gb, so that no pass over x or gy is left outside the two GEMMs                (OWN_GB)
//
// where it times faster than the cuBLAS path, or with OWLET_LORA_GEMM=fused (lora.cu; session 18, emulated only
// until a GPU runs it). Why: through cuBLAS the update costs a K = r GEMM that writes all of C (26.6 µs for an
// 8192 × 4096 bf16 C on an H200, 2.4 TB/s) and the base GEMM's beta = 1 read of it (≈ 3 µs), in the forward and again
// for dx — about a third of what LoRA r8 adds to its frozen linear
// (bench/results/gpu-2026-11-27-h200-s17-call2/ncu/ncu_lora.txt). Here the update is one more k16 step of the tile's
// own accumulation: its operands, 128 rows of L and 256 of R, are 12 KiB per tile.
//
// Schedule: persistent, in clusters of two blocks (a grid of at most one block per SM): a cluster takes pairs of row
// blocks of one column block — tiles (2p, n) and (2p + 1, n) of 128 × 256, pairs in a grouped order, 4 pairs (8 row
// blocks) at a time across the columns, so that the clusters in flight share their rows of A and columns of W in L2
// — and the two blocks each load half of W's tile per k-step and multicast it to both: W's bytes from L2 halved (a
// block's k-step needs A's 16 KiB and W's 32 KiB; without the multicast 132 blocks at full tensor rate would draw ≈ 11
// TB/s from L2, which an H100's L2 may not give: cuBLAS's kernel here runs in clusters of two as well).
// 3 warpgroups (384 threads) per block:
//   - warpgroup 0, the producers (setmaxnreg.dec to kProducerRegs):
//       warp 0 lane 0 issues every TMA box copy: per k-step of 64, A's 128 × 64 box and this block's half of W's
//         256 × 64 tile (K-major: one box of 128 rows; N-major: two boxes of 64 columns), multicast to both blocks,
//         into a ring of STAGES stages. A stage's "full" barrier expects its 48 KiB (A, this block's half, the
//         partner's) and completes when they have landed; its "empty" barrier counts one arrival from every consumer
//         warp of both blocks (16), since either block's copy writes into both; the producer waits on it before
//         refilling. The ring runs on across the block's tiles, so the next tile's first stages load while the current
//         one finishes;
//       warps 1–3 write each tile's rank-r operands into the "lr" buffer: R's rows n0..n0+127 in 16-byte chunks 0–1,
//         n0+128..n0+255 in chunks 2–3 and s·L's rows m0..m0+127 in chunks 4–5 of 128 swizzled rows of 128 bytes
//         (columns r..15 zero), after the consumers have released the buffer ("lr empty", 256 arrivals) and before
//         "lr full" (one arrival per warp, after fence.proxy.async: generic stores read by the tensor cores).
//   - warpgroups 1 and 2, the consumers (setmaxnreg.inc to kConsumerRegs): rows 64w..64w+63 of the tile, 64 × 256
//     fp32 accumulators (128 registers). Per tile: the rank-r product first (two m64n128k16, A = s·L's chunks 4–5,
//     B = R's chunks 0–1, then 2–3, both K-major; scale-d 0; last instead with OWN_L and the session 21 epilogues),
//     then per k-step 4 × m64n256k16 over the stage, one commit group each with one group left in flight: once group
//     g is complete its stage is released (lane 0 of each warp arrives on both blocks' "empty" barriers; after the
//     first k-step, every thread on "lr empty"); then the
//     accumulators are rounded to bf16 into the warpgroup's staging buffer in shared memory, kCBoxes 64 × 64 boxes at a
//     time, and stored by TMA box stores (cp.async.bulk.tensor, which leave out what lies past M and N) that one thread
//     of the warpgroup issues after a warpgroup barrier (kEpiWarp: each warp its own 16 rows, without the barriers);
//     the consumers go on to the next tile while the stores drain, waiting for their reads only before the buffer is
//     written again. (Stores from registers would be 64 four-byte stores per thread, each touching 8 rows: a few µs of
//     load/store traffic per 36 µs tile with the tensor cores idle.) Session 21's: kEpiRing, one round through the
//     ring's stage of the tile's last k-step, held until the stores have read it; kEpiOverlap, the last rounds' bf16
//     pairs kept in registers and stored one per k-step during the next tile's first k-steps.
// A cluster barrier after the mbarriers' initialisation (the partner's copies and arrivals use them) and another
// before the blocks leave (neither may leave while the other can still write into it). Where the row blocks are odd in
// number, the last pair's second block lies past M: its A comes in as zeros and its stores are left out, and it still
// loads its half of W for its partner.
// Operand layouts (the 128-byte swizzle of attention_wgmma.cuh): A and K-major W as rows of 64 bf16 (128 bytes,
// 16-byte chunk c of row i at c ^ (i mod 8)), k16 step kk at +32·kk bytes, 8-row groups 1024 bytes apart (SBO); N-major
// W as four 64-column atoms of 64 k-rows (8 KiB apart: LBO), k-rows 128 bytes apart, 8-row groups 1024 apart (SBO),
// k16 step kk at +2048·kk bytes (CUTLASS's canonical MN-major layout, ((8, n), (8, k)) : ((1, LBO), (8, SBO))).
// Out-of-range rows and columns of A and W come in as zeros (the TMA fills them), so M, N and K need no multiple of the
// tile; rows of 16 bytes (K and, N-major, N multiples of 8) and 16-byte-aligned starts are the TMA's rules.
// Shared memory (232,448 bytes a block may have): STAGES = 4 (the default): 4 × 48 KiB, lr 16 KiB, staging 2 × 8 KiB
// (one box per warpgroup): 230,480 bytes with the barriers and the alignment; STAGES = 3 (OWLET_LORA_GEMM_STAGES=3,
// session 18's ring): 3 × 48 KiB, lr 16 KiB, staging 2 × 16 KiB. Why 4: cuBLAS's kernel for these shapes has 4, and S
// stages give a copy (S − 1) k-steps (≈ 0.56 µs each at the full tensor rate) to land. Measured on an H100 (session 19,
// bench/results/gpu-2026-11-28-h100-s19): 362.6 µs at M8192 K4096 N4096 with 4 stages, 456.7 with 3 — but ptxas
// serialises the 3-stage kernel's wgmma for want of registers (C7511, scripts/gpu/ptxas-serialised.sh), so that gap is
// not the ring's depth alone; what made the kernel fast was the cluster arrivals' fence (cluster.cuh).
// Numbers: the update's products are bf16 × bf16 into the fp32 accumulator, as the cuBLAS path's K = r GEMM computes
// them, but s·L is rounded to bf16 once (exact where s is a power of two, as LoRA's alpha / r usually is) and C is
// rounded once instead of twice (the cuBLAS path rounds the update into C, then the sum).
#pragma once
#include <cstdint>
#include <string>

#include "../core/hash_u01.h"
#include "attention_wgmma.cuh"
#include "attention_wgmma_ws.cuh"
#include "cluster.cuh"
#include "grid_flags.cuh"
#include "tma.cuh"

namespace owlet::cuda::lora_gemm {

constexpr int kBM = 128, kBN = 256, kBK = 64;
constexpr int kThreads = 384;
constexpr int kProducerRegs = 40, kConsumerRegs = 232;  // 128·40 + 256·232 = 64,512 (= 168 · 384, the launch's)
// OWN_L: the producers' warps 1–3 hold L's accumulators and P's fragments besides their tile loop; ptxas spills them
// at 56 and 72 registers, not at 88, and the consumers' 208 leave their wgmma unserialised: 128·88 + 256·208 = 64,512
// OWN_GB: besides, gyᵀ xa's accumulators and the tail: 128·104 + 256·200 (the producers spill at 88 and 96; setmaxnreg
// takes multiples of 8). ptxas serialised the consumers' wgmma here (C7511) while xa's fragments were held in registers
// instead of read from shared memory — scripts/gpu/ptxas-serialised.sh checks.
template <bool OWN_L, bool OWN_GB>
constexpr int kProducerRegsOf = OWN_GB ? 104 : OWN_L ? 88 : kProducerRegs;
template <bool OWN_L, bool OWN_GB>
constexpr int kConsumerRegsOf = OWN_GB ? 200 : OWN_L ? 208 : kConsumerRegs;
constexpr int kOwnRank = 8;  // OWN_L computes L at rank 8 only (mPLUG-Owl's LoRA rank)
// The epilogue (consume): each warpgroup's rows of C out in rounds through its staging boxes after the tile's last
// product (kEpiGroup, the default); each warp its own rows (kEpiWarp, OWLET_LORA_GEMM_EPILOGUE=warp); all rounds but
// the first during the next tile's first k-steps (kEpiOverlap, =overlap); or in one round, through the ring's stage of
// the tile's last k-step as well (kEpiRing, =ring).
enum Epi : int { kEpiGroup = 0, kEpiWarp = 1, kEpiOverlap = 2, kEpiRing = 3 };
// The rank-r update first, or last: with OWN_L (L is computed during the k-steps), with the overlapped epilogue
// (ptxas serialises its wgmma, C7511, with the update first and the carried pairs live across it), and with kEpiRing.
// (Not the DROP kernel's: its mask is on the update alone — and with kEpiRing, update first, ptxas serialises it.)
template <int EPI, bool OWN_L>
constexpr bool kUpdateLastOf = OWN_L || EPI == kEpiOverlap || EPI == kEpiRing;
// The kernels whose last round may be split by k-steps (Split, Maps::split): the ring epilogue's and the plain
// overlapped one's (the update last), not OWN_GB's (its tail takes the idle blocks) or DROP's. (With the split's code
// in, ptxas serialises the consumers' wgmma, C7511, in the group epilogue's kernels and OWN_L's overlapped one.)
// (lora.cu asks the same of the kernel it launches: splits)
constexpr bool splits(int epi, bool own_l, bool own_gb, bool drop) {
  return (epi == kEpiRing || (epi == kEpiOverlap && !own_l)) && !own_gb && !drop;
}
template <int EPI, bool OWN_L, bool OWN_GB, bool DROP>
constexpr bool kSplitOf = splits(EPI, OWN_L, OWN_GB, DROP);
constexpr int kOwnBarrier = 4;  // named barrier of producer warps 1–3 (the consumers' epilogue uses 2 and 3)
constexpr int kConsumersBarrier = 5;  // OWN_L: both consumer warpgroups
constexpr int kGroupRows = 8;                           // row blocks per group of the tile order
// Blocks per cluster: row blocks 2p and 2p + 1 of one column block, each loading half of W's tile per k-step and
// multicasting it to both (W's bytes from L2 halved).
constexpr int kCluster = 2;
constexpr uint16_t kClusterMask = 0x3;
constexpr uint32_t kABytes = kBM * kBK * 2, kWBytes = kBN * kBK * 2, kStageBytes = kABytes + kWBytes;
// The rank-r operands, 128 swizzled rows of 128 bytes: R's rows i and 128 + i in chunks 0–1 and 2–3 of row i, s·L's
// row i in chunks 4–5 (the update is two m64n128k16 products, one per half of the columns, so R's 256 rows fold into
// 128 and the buffer takes 16 KiB, not the 32 KiB of one m64n256k16 over 256 rows).
constexpr uint32_t kLrBytes = kBM * 128;
constexpr uint32_t kCBox = 64 * 128;  // one 64 × 64 bf16 box of C in the staging buffer
// Boxes per warpgroup in the staging buffer: two with 3 stages; one with 4 (the fourth stage takes their room).
template <int STAGES>
constexpr int kCBoxes = STAGES >= 4 ? 1 : 2;

template <int STAGES>
constexpr size_t smem_bytes() {
  return size_t(STAGES) * kStageBytes + kLrBytes + 2 * kCBoxes<STAGES> * kCBox + 8 * (3 * STAGES + 2) + 1024;
}
static_assert(smem_bytes<4>() <= 232448, "4 stages must fit an H100's 227 KiB of shared memory per block");

// The call: C = A op(W) + (s L) Rᵀ, every matrix bf16 and row-major; maps for A (boxes of 128 rows × 64 columns), W
// (a block's half of the tile: K-major 128 rows × 64; N-major 64 rows × 64, two boxes) and C (64 rows × 64).
struct Args {
  const bf16* l;  // [M, r]
  const bf16* r;  // [N, r]
  int M, N, K, rank;
  float s;
  // With the DROP kernels: the update masked, C = A op(W) + keep ⊙ (s L Rᵀ) with keep(m, n) = drop_scale where
  // hash_u01_at(drop_key, m · N + n) >= drop_p, else 0 — LoRA's input dropout seen from dx (C = gx, [M, N] = x's shape).
  uint64_t drop_key;
  float drop_p, drop_scale;
  // With the OWN_L kernels L is computed here, L = A Pᵀ (rank 8): the tiles of column block 0 compute their rows of it
  // from the A boxes the ring brings anyway, write them to l_out (= l) and set flags[row block] = epoch; the other
  // tiles of those rows wait for the flag and read them from l. Forward: P = LoRA's A [r, K], L = xa; dx: P = Bᵀ
  // [r, N], L = gy B.
  const bf16* p;   // [r, K] (the GEMM's K)
  bf16* l_out;     // [M, r]
  unsigned* flags;  // one per row block (grid_flags.cuh)
  unsigned epoch;
  // With OWN_GB (dx's kernel, OWN_L too) the same tiles add up LoRA's gb = s gyᵀ xa over their rows as well: ws[row
  // block][j][k] = Σ over the block's rows m of A[m][k] · xa[m][j] (fp32; lora.cu's cols_finish adds the row blocks up
  // in order and scales by s). The k-steps' A boxes are gy's columns, so nothing more is read but xa's rows.
  const bf16* xa;  // [M, r]
  float* gb_ws;    // [row blocks, r, K]
  // and LoRA's ga = s (gy B)ᵀ x, after the tiles ("the tail"): ga_ws[range][j][n] = Σ over the rows of a range of
  // kTailRows row blocks of L[m][j] · x[m][n] (x [M, N], through Maps::x), on the blocks that have one tile fewer than
  // the others (all blocks where the tiles divide evenly) while the others finish their last; cols_finish adds the
  // ranges up.
  float* ga_ws;    // [ranges, r, N]
};
struct Maps {
  tma::Map a, w, c, c16;  // c16: C in boxes of 16 rows, one warp's (the kEpiWarp kernels' stores)
  tma::Map x;             // OWN_GB: LoRA's x [M, N] in boxes of 128 rows × 64 columns (the tail's)
  // The last round split by k-steps (Split below; OWLET_LORA_GEMM_SPLIT=1) where split is 1: a block's partial sums of
  // a tile whose first k-steps another cluster computes go to its slot of split_ws (kSplitSlot floats per block),
  // announced by split_flags[block] = Args::epoch. (Here, not in Args: read in place, they leave the consumers'
  // registers alone — three more fields in Args and ptxas serialised the plain kernel's wgmma, C7511.)
  float* split_ws;
  unsigned* split_flags;
  int split;
};
constexpr int kTailRows = 16;  // row blocks per item of the tail (OWN_GB)

// The tail's items (OWN_GB): column chunk of 64 × range of kTailRows row blocks, item i = range · chunks + chunk;
// block `b` of the `count` that take items does items b, b + count, … . Those are the blocks of the clusters with one
// tile fewer (the tiles' last round leaves them idle) where they are at least a fifth of the clusters, else all blocks
// (too few SMs would take longer over x than the last round lasts: at ≈ 60 GB/s per SM with 4 stages of 16 KiB in
// flight, a fifth of an H100's streams 64 MiB in ≈ 40 µs, about one tile's time).
struct Tail {
  int first, stride, items, chunks;
};
__device__ __forceinline__ Tail tail_plan(int tiles, int clusters, int cl, int rank, int m_blocks, int N) {
  const int rem = tiles % clusters, chunks = (N + kBK - 1) / kBK;
  const int ranges = (m_blocks + kTailRows - 1) / kTailRows;
  Tail t{0, 0, chunks * ranges, chunks};
  if (rem == 0 || 5 * (clusters - rem) < clusters) t.first = cl * kCluster + rank, t.stride = clusters * kCluster;
  else if (cl >= rem) t.first = (cl - rem) * kCluster + rank, t.stride = (clusters - rem) * kCluster;
  else t.first = t.items, t.stride = 1;  // (none)
  return t;
}

// The last round split by k-steps (a stream-K tail; Maps::split, in kSplitOf's kernels): `tiles` pairs of tiles over
// `clusters` clusters leave the last round `rem` = tiles mod clusters tiles, so clusters − rem clusters idle for a
// whole tile's time (M8192 N4096: 512 pairs of tiles on 66 clusters, 7.76 rounds, the eighth 50/66 busy: 3% of the
// kernel, as in cuBLAS's kernel of the same tiles). Split, the last round's rem · k_steps k-steps go out in
// contiguous ranges, cluster c taking [c·W/clusters, (c+1)·W/clusters) of them (W = rem · k_steps) in tile order, so
// every cluster ends the kernel at about the same time. A range starts inside at most one tile: that part's partial sums
// go to the block's slot of split_ws and its flag; every other part of a range starts a tile (k-step 0) and is that
// tile's owner, which adds the slots of the clusters whose ranges start inside its tile (they compute those first,
// the owner its part last: it seldom waits) and does the update and the epilogue. Where OWN_L's column block 0 has a
// tile in the last round (its L needs all k-steps in one place), or a tile has one k-step, nothing is split.
// Unit i of a cluster's work: tile t, k-steps [k0, k1), whether it owns the tile (k0 == 0).
constexpr int kSplitSlot = kBM / 2 * kBN * 2;  // floats: 256 consumer threads × 128 accumulators
struct Split {
  int full, rem, lo, hi;  // rounds before the last; the last round's tiles; this cluster's k-steps of it
  bool on;
};
struct Unit {
  int t, k0, k1;
  bool owner;
};
// Where cluster c's range of the last round's k-steps starts (its end: where c + 1's starts).
__device__ __forceinline__ int split_start(int rem, int c, int clusters, int k_steps) {
  return int(int64_t(rem) * k_steps * c / clusters);
}
__device__ __forceinline__ Split split_plan(const Maps& m, bool allowed, int tiles, int clusters, int cl, int k_steps) {
  Split p{tiles / clusters, tiles % clusters, 0, 0, false};
  p.on = allowed && m.split && p.rem > 0 && k_steps > 1;
  p.lo = split_start(p.rem, cl, clusters, k_steps);
  p.hi = split_start(p.rem, cl + 1, clusters, k_steps);
  return p;
}
// Unit i of cluster cl (false past its last): whole tiles cl, cl + clusters, … — split, only in the rounds before the
// last, then its range of the last round's k-steps, one unit per tile it touches.
// (SPLIT false: the kernels that never split, compiled to the whole tiles alone)
template <bool SPLIT>
__device__ __forceinline__ bool unit_at(const Split& p, int i, int tiles, int clusters, int cl, int k_steps, Unit& u) {
  if (!SPLIT || !p.on || i < p.full) {
    u = Unit{cl + i * clusters, 0, k_steps, true};
    return u.t < tiles;
  }
  const int j = p.lo / k_steps + (i - p.full);  // the last round's tile
  if (p.lo >= p.hi || j * k_steps >= p.hi) return false;
  u.t = p.full * clusters + j;
  u.k0 = max(p.lo - j * k_steps, 0);
  u.k1 = min(p.hi - j * k_steps, k_steps);
  u.owner = u.k0 == 0;
  return true;
}

// Encodes the maps; false (and why) where the TMA cannot describe the matrices.
inline bool encode_maps(const bf16* a, const bf16* w, bf16* c, const Args& g, bool w_nmajor, Maps& m, std::string& why) {
  // (a matrix as the maps' [B, T, H, D] sequence: one batch, T rows, one head of D columns)
  return tma::encode(m.a, {a, 1, g.M, 1, g.K, g.K}, kBM, why) &&
         (w_nmajor ? tma::encode(m.w, {w, 1, g.K, 1, g.N, g.N}, kBK, why)
                   : tma::encode(m.w, {w, 1, g.N, 1, g.K, g.K}, kBN / kCluster, why)) &&
         tma::encode(m.c, {c, 1, g.M, 1, g.N, g.N}, 64, why) && tma::encode(m.c16, {c, 1, g.M, 1, g.N, g.N}, 16, why);
}

// D (64 × 256 fp32) = A·B (+ D when scale_d != 0): A 64 × 16 K-major and B 16 × 256 (K-major, or N-major with
// NMAJOR) from shared memory.
template <bool NMAJOR>
__device__ __forceinline__ void mma_m64n256k16(float (&d)[128], uint64_t desc_a, uint64_t desc_b, int scale_d) {
#ifdef OWLET_CUDA_EMULATION
  ::emu::wgmma_ss(d, 256, desc_a, false, desc_b, NMAJOR, scale_d != 0);
#else
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
      "%128, %129, p, 1, 1, 0, %131;\n}\n"
      : OWLET_WGMMA_ACC32(d, 0), OWLET_WGMMA_ACC32(d, 32), OWLET_WGMMA_ACC32(d, 64), OWLET_WGMMA_ACC32(d, 96)
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(int(NMAJOR)));
#endif
}

// Descriptor of the N-major W stage at `addr`: atoms of 64 columns 8 KiB apart (LBO), 8-row groups 1024 apart (SBO).
__device__ __forceinline__ uint64_t desc_nmajor_wide(uint32_t addr) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t((kBK * 128) >> 4) << 16) | (uint64_t(1024 >> 4) << 32) |
         (uint64_t(1) << 62);
}

// This block's part of the cluster's tile `t` (of the grouped order over row-block pairs): its row block (2p + the
// block's rank in the cluster) and the column block.
__device__ __forceinline__ void block_tile(int t, int m_pairs, int n_blocks, int rank, int& mb, int& nb) {
  const int per_group = kGroupRows * n_blocks, group = t / per_group, first = group * kGroupRows;
  const int rows = min(kGroupRows, m_pairs - first), in = t - group * per_group;
  mb = kCluster * (first + in % rows) + rank;
  nb = in / rows;
}

// 2 bf16 (4 bytes) times s, rounded back to bf16.
__device__ __forceinline__ uint32_t scaled2(uint32_t v, float s) {
  const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v));
  const __nv_bfloat162 h = __floats2bfloat162_rn(f.x * s, f.y * s);
  return *reinterpret_cast<const uint32_t*>(&h);
}
// 8 bf16 (16 bytes) times s, rounded back to bf16.
__device__ __forceinline__ uint4 scaled8(uint4 v, float s) {
  return make_uint4(scaled2(v.x, s), scaled2(v.y, s), scaled2(v.z, s), scaled2(v.w, s));
}

// DROP's mask bits of a thread's 128 elements of a tile, as a 128-bit shift register: element j (acc[j]: row
// 16wi + gq + 8·(j mod 4 ≥ 2), column 8·(j / 4) + 2·t4 + (j mod 2) of the warpgroup's 64 × 256) enters as the
// newest bit, so after all 128 its bit is 127 − j — a fixed register and bit for an unrolled loop over j.
struct KeepBits {
  uint32_t w[4] = {0u, 0u, 0u, 0u};
  __device__ __forceinline__ void push(bool keep) {
    w[3] = (w[3] << 1) | (w[2] >> 31);
    w[2] = (w[2] << 1) | (w[1] >> 31);
    w[1] = (w[1] << 1) | (w[0] >> 31);
    w[0] = (w[0] << 1) | uint32_t(keep);
  }
  __device__ __forceinline__ bool kept(int j) const { return (w[(127 - j) >> 5] >> ((127 - j) & 31)) & 1u; }
};

// 16 bytes through L2 only (ld.global.cg): what another block wrote during this kernel — L's rows (as uint4: bf16
// pairs), the split's partial sums (float4).
template <class V>
__device__ __forceinline__ V load_l2(const V* p) {
#ifdef OWLET_CUDA_EMULATION
  return *p;
#else
  return __ldcg(p);
#endif
}

// The consumer warpgroups' part of gemm() (rows 64·wg.. of each tile): the rank-r product, the k-steps over the ring,
// the epilogue through the staging buffer. DROP: the rank-r product is masked in the accumulators before the k-steps
// add A op(W) to it; the next tile's 128 hashes per thread (splitmix64's, ≈ 35 instructions each) are spread over this
// tile's k-steps, where the warps otherwise wait for the tensor cores, instead of delaying the next tile's start.
template <bool W_NMAJOR, int STAGES, bool DROP, int EPI, bool OWN_L, bool OWN_GB>
__device__ __forceinline__ void consume(const Args& g, const Maps* maps, uint32_t sRing, uint32_t sLr, uint32_t sC,
                                        unsigned char* gC, uint32_t bar_full, uint32_t bar_empty, uint32_t bar_lr_full,
                                        uint32_t bar_lr_empty, int k_steps, int m_pairs, int n_blocks, int tiles, int cl,
                                        int clusters, int rank, int peer, const Split& sp) {
  using namespace wgmma;
  using wgmma_ws::mbar_arrive;
  using wgmma_ws::mbar_wait;
  const int tid = threadIdx.x;
  wgmma_ws::regs_inc<kConsumerRegsOf<OWN_L, OWN_GB>>();
  const int ctid = tid - 128, wg = ctid >> 7, wi = (ctid >> 5) & 3, lane = ctid & 31, gq = lane >> 2, t4 = lane & 3;
  const int thread_row = (wi * 16 + gq) * 128 + 4 * t4;  // the thread's first row and 4-byte slot in a staged box
  const bool issuer = (ctid & 127) == 0;  // the warpgroup's thread that issues its stores
  // The thread's pairs 2i and 2i + 1 of C's elements (`pair(q)`: its q-th pair as bf16 — acc[2q], acc[2q + 1], where
  // acc[4i + e] is row 16wi + gq + 8·(e ≥ 2) of the warpgroup's 64, column 8i + 2·t4 + (e mod 2)) into a staged box at
  // `at` (the thread's row) and 8 rows (1024 bytes) on
  auto stage_pairs = [&](unsigned char* at, auto&& pair, int i) {
    *reinterpret_cast<uint32_t*>(at) = pair(2 * i);
    *reinterpret_cast<uint32_t*>(at + 1024) = pair(2 * i + 1);
  };
  // this warpgroup's earlier stores have read what they store from (the staging boxes, the lr buffer, a held stage),
  // and all its threads are past that wait
  auto stores_read = [&] {
    if (issuer) bulk_wait_read<0>();
    bar_sync(2 + wg, 128);
  };
  // A stage is free for both blocks' producers once this warp's products on it are done: one arrival per warp on
  // this block's "empty" barrier and one on the partner's.
  auto release = [&](int s) {
    __syncwarp();
    if (lane == 0) {
      mbar_arrive(bar_empty + 8 * s);
      cluster::mbar_arrive_remote(bar_empty + 8 * s, peer);
    }
  };
  // DROP: the mask of the tile in hand (cur) and of the next one (next, `next_done` of its 128 elements so far)
  KeepBits cur, next;
  int next_done = 128, next_mb = 0, next_nb = 0;
  auto hash_next = [&](int upto) {  // the next tile's elements next_done..upto−1
    for (; next_done < upto; next_done++) {
      const int j = next_done, i = j >> 2, e = j & 3;
      const int64_t row = int64_t(next_mb) * kBM + wg * 64 + wi * 16 + gq + 8 * (e >> 1);
      const int64_t col = int64_t(next_nb) * kBN + 8 * i + 2 * t4 + (e & 1);
      next.push(hash_u01_at(g.drop_key, uint64_t(row * g.N + col)) >= g.drop_p);
    }
  };
  auto aim_next = [&](int t) {  // the next tile to hash: t (none past the last)
    next_done = 128;
    if (t >= tiles) return;
    block_tile(t, m_pairs, n_blocks, rank, next_mb, next_nb);
    next_done = 0;
  };
  if constexpr (DROP) {
    aim_next(cl);
    hash_next(128);  // (the first tile's, before its start)
  }
  // EPI = kEpiOverlap (OWLET_LORA_GEMM_EPILOGUE=overlap, session 21): a tile's first rounds of C go out from the
  // accumulators, the last kCarried rounds' pairs are packed into `later` (registers the k-steps' wgmma leave alone)
  // and go out one per k-step during the next tile's first k-steps, while its products run: between tiles the tensor
  // cores wait for fewer rounds, each of which waits for the previous one's stores to have read the staging buffer.
  constexpr bool kOverlap = EPI == kEpiOverlap;
  // EPI = kEpiRing (OWLET_LORA_GEMM_EPILOGUE=ring, session 21): the stage of the tile's last k-step is not released
  // after its products but holds 3 of each warpgroup's 4 boxes of C (48 KiB: A's 16 and W's 32), the staging buffer
  // the fourth: one round, no wait for a store's read before the next tile's products start; the stage goes back to
  // the producers after the next tile's first k-step is issued, once the stores have read it (the ring runs 3 deep
  // for a k-step or two). Its A box is free then: with OWN_L the producers have read it before "lr full", which the
  // update (last) waits for.
  constexpr bool kRing = EPI == kEpiRing;
  constexpr bool kUpdateLast = kUpdateLastOf<EPI, OWN_L>;
  constexpr bool kSplit = kSplitOf<EPI, OWN_L, OWN_GB, DROP>;
  // OWN_L (not OWN_GB): the lr buffer is the epilogue's second staging box once the tile's update has read it, so "lr
  // empty" waits until this warpgroup's stores from it have been read: after the next tile's first k-step (the
  // second with the overlapped epilogue, whose last round goes out during the first), or the last tile. (ptxas
  // serialises the consumers' wgmma so built, C7511, with OWN_GB at every register split tried, and in the overlapped
  // epilogue's kernel without OWN_L at every split from 208 to 232 — yet not in OWN_L's.)
  constexpr bool kLrStaging = OWN_L && !OWN_GB && !kRing;
  auto lr_free = [&] {
    stores_read();
    mbar_arrive(bar_lr_empty);
  };
  // The epilogue's rounds: round h takes kBoxes 64-column boxes (columns 64·kBoxes·h on) to the staging buffer
  // (128-byte swizzle: 16-byte chunk c of row i at c ^ (i mod 8)), then out by as many TMA box stores. kLrStaging: two
  // per round, the second in the lr buffer (its 8 KiB for this warpgroup), so two rounds where four would each wait
  // for the previous one's store to have read the buffer.
  constexpr int kBoxes = kRing ? 4 : kLrStaging ? 2 : kCBoxes<STAGES>, kRounds = 4 / kBoxes;
  int held = -1;  // kRing: the stage holding the stores' boxes (not yet released)
  auto box_at = [&](int b) -> uint32_t {  // box b of a round (shared-memory address)
    if constexpr (kRing) return b < 3 ? sRing + held * kStageBytes + (wg * 3 + b) * kCBox : sC + wg * kCBox;
    else if constexpr (kLrStaging) return b == 0 ? sC + wg * kCBox : sLr + wg * kCBox;
    else return sC + (wg * kBoxes + b) * kCBox;
  };
  // kRing: the held stage back to both blocks' producers once this warpgroup's stores have read it
  auto release_held = [&] {
    stores_read();
    release(held);
    held = -1;
  };
  unsigned char* const stage0 = gC - sC;  // (a shared-memory address + this: the generic pointer)
  // round h of the tile (mb, nb), its pairs from `pair` (stage_pairs)
  auto out_round = [&](int h, int mb, int nb, auto&& pair) {
    stores_read();
#pragma unroll
    for (int j = 0; j < 8 * kBoxes; j++) {
      // rows wi·16 + gq (+ 8): chunk j mod 8 at (j mod 8) ^ gq
      stage_pairs(stage0 + box_at(j / 8) + thread_row + (((j % 8) ^ gq) << 4), pair, 8 * kBoxes * h + j);
    }
    fence_proxy_async();  // the generic stores before the TMA's async-proxy reads
    bar_sync(2 + wg, 128);
    if (issuer) {
#pragma unroll
      for (int b = 0; b < kBoxes; b++)
        tma::store_4d(&maps->c, nb * kBN + 64 * (kBoxes * h + b), 0, mb * kBM + wg * 64, 0, box_at(b));
      bulk_commit();
    }
  };
  // The rounds carried (the overlapped epilogue): the second of two with the lr buffer's box (kLrStaging); the last two
  // of four without OWN_L (ptxas serialises the wgmma with three); OWN_GB, the last of four (it spills the producers
  // and serialises the consumers' wgmma with two). The previous tile's rounds still to go out: `pending`.. of
  // (pending_mb, pending_nb).
  constexpr int kCarried = !kOverlap ? 0 : kLrStaging || OWN_GB ? 1 : 2, kFirst = kRounds - kCarried;
  constexpr int kLater = kOverlap ? 16 * kBoxes * kCarried : 1;  // their pairs
  uint32_t later[kLater];
  int pending = kRounds, pending_mb = 0, pending_nb = 0;
  auto out_pending = [&] {  // the next pending round (h a constant in each branch: `later`'s indices fixed)
#pragma unroll
    for (int h = kFirst; h < kRounds; h++)
      if (pending == h) out_round(h, pending_mb, pending_nb, [&](int q) { return later[q - 16 * kBoxes * kFirst]; });
    pending++;
  };
  // The split last round (Split): this block's partial sums of a tile another cluster owns to its slot of split_ws,
  // 16 bytes per thread per store (for each q, the 256 consumer threads' accumulators 4q..4q+3 side by side), then
  // its flag; and an owner's sums of the slots of the clusters whose ranges start inside its tile j
  auto split_out = [&](const float(&acc)[128]) {
    float4* const dst = reinterpret_cast<float4*>(maps->split_ws + size_t(cl * kCluster + rank) * kSplitSlot) + ctid;
#pragma unroll
    for (int q = 0; q < 32; q++) dst[q * 256] = make_float4(acc[4 * q], acc[4 * q + 1], acc[4 * q + 2], acc[4 * q + 3]);
    grid_flags::fence_gpu();
    bar_sync(kConsumersBarrier, 256);
    if (ctid == 0) grid_flags::set(maps->split_flags + cl * kCluster + rank, g.epoch);
  };
  // (the clusters after this one, the owner, start their ranges past the tile's k-step 0; those starting before its
  // end hand a slot on, but for an empty range)
  auto split_in = [&](float(&acc)[128], int j) {
    for (int c = cl + 1; c < clusters; c++) {
      const int lo = split_start(sp.rem, c, clusters, k_steps);
      if (lo >= (j + 1) * k_steps) break;
      if (lo == split_start(sp.rem, c + 1, clusters, k_steps)) continue;
      grid_flags::wait(maps->split_flags + c * kCluster + rank, g.epoch);
      const float4* const src =
          reinterpret_cast<const float4*>(maps->split_ws + size_t(c * kCluster + rank) * kSplitSlot) + ctid;
#pragma unroll
      for (int q = 0; q < 32; q++) {
        const float4 v = load_l2(src + q * 256);
        acc[4 * q] += v.x, acc[4 * q + 1] += v.y, acc[4 * q + 2] += v.z, acc[4 * q + 3] += v.w;
      }
    }
  };
  // (a split's tile start has no update: the kernels that split do not stage C in the lr buffer, so that the debt
  // below is one per unit)
  static_assert(!(kSplit && kLrStaging), "the split kernels leave the lr buffer to the update");
  int step = 0, it = 0;  // the ring's k-steps so far; the units so far that owned their tile (the lr buffer's fills)
  // (the kernels that never split step through whole tiles by t alone: with unit_at's form of it, ptxas serialised
  // the plain kernel's wgmma, C7511)
  Unit u;
  for (int t = cl, ui = 0; kSplit ? unit_at<true>(sp, ui, tiles, clusters, cl, k_steps, u) : t < tiles;
       t += clusters, ui++) {
    if constexpr (kSplit) t = u.t;
    else u = Unit{t, 0, k_steps, true};
    const int oi = it;  // (an owned tile's lr buffer fill)
    if (!kSplit || u.owner) it++;
    int mb, nb;
    block_tile(t, m_pairs, n_blocks, rank, mb, nb);
    if constexpr (DROP) {
      cur = next;
      aim_next(t + clusters);
    }
    float acc[128];
    // the rank-r update: A = s·L (this warpgroup's 64 rows, chunks 4–5), B = R's rows 0..127 (chunks 0–1) into
    // columns 0..127, then rows 128..255 (chunks 2–3) into 128..255 (an m64n256 accumulator's first 64 registers are
    // the m64n128 one of its first 128 columns); first, or last (kUpdateLast)
    auto update = [&](int scale_d) {
      mbar_wait(bar_lr_full, uint32_t(oi & 1));
      fence_proxy_async();
      fence();
      const uint64_t desc_l = desc_kmajor(sLr + wg * 64 * 128 + 64);
      mma_ss_m64n128k16(*reinterpret_cast<float(*)[64]>(&acc[0]), desc_l, desc_kmajor(sLr), scale_d);
      mma_ss_m64n128k16(*reinterpret_cast<float(*)[64]>(&acc[64]), desc_l, desc_kmajor(sLr + 32), scale_d);
      commit();
    };
    // kLrStaging: this tile owes the producers the previous tile's "lr empty" (lr_free), once the previous tile's
    // rounds from the lr buffer have gone out
    bool lr_owed = kLrStaging && oi > 0;
    auto pay_lr = [&] {
      if (!lr_owed) return;
      while (pending < kRounds) out_pending();
      lr_free();
      lr_owed = false;
    };
    if constexpr (!kUpdateLast) update(0);
    if constexpr (DROP) {  // keep ⊙ (s L Rᵀ) before A op(W) is added on
      wait<0>();
      fence_operands(acc);
#pragma unroll
      for (int j = 0; j < 128; j++) acc[j] = cur.kept(j) ? acc[j] * g.drop_scale : 0.f;
    }
    int prev_s = -1;  // the stage of the group in flight before the current one
    for (int kt = u.k0; kt < u.k1; kt++, step++) {
      const int s = step % STAGES;
      mbar_wait(bar_full + 8 * s, uint32_t((step / STAGES) & 1));
      const uint32_t sA = sRing + s * kStageBytes + wg * 64 * 128, sW = sRing + s * kStageBytes + kABytes;
      fence();
#pragma unroll
      for (int kk = 0; kk < kBK / 16; kk++) {
        // (the update last: the tile's first product starts the accumulators)
        const int scale_d = kUpdateLast && kt == u.k0 && kk == 0 ? 0 : 1;
        if constexpr (W_NMAJOR)
          mma_m64n256k16<true>(acc, desc_kmajor(sA + 32 * kk), desc_nmajor_wide(sW + 2048 * kk), scale_d);
        else mma_m64n256k16<false>(acc, desc_kmajor(sA + 32 * kk), desc_kmajor(sW + 32 * kk), scale_d);
      }
      commit();
      if constexpr (DROP) hash_next(min(128, ((kt + 1) * 128 + k_steps - 1) / k_steps));  // while the products run
      if constexpr (kOverlap)
        if (pending < kRounds) out_pending();  // (the previous tile's, while the products run)
      wait<1>();  // the group before this one is complete: its stage (or, at kt = 0, the lr buffer) is free
      if (kt > u.k0) release(prev_s);
      else if constexpr (!kUpdateLast) mbar_arrive(bar_lr_empty);
      if (kRing && held >= 0) release_held();  // (the previous tile's; kt = 0)
      // (the previous tile's stores from the lr buffer have long been read — with the overlapped epilogue, a k-step
      // after its last round went out)
      if (kt - u.k0 >= kCarried) pay_lr();
      prev_s = s;
    }
    wait<0>();
    fence_operands(acc);
    if (kSplit && !u.owner) {  // the split last round: the start of a tile another cluster owns — its partial sums out
      release(prev_s);
      split_out(acc);
      continue;
    }
    if (kSplit && sp.on && t >= sp.full * clusters) split_in(acc, t - sp.full * clusters);
    if (kRing && k_steps > 0) held = prev_s;  // (lora.cu: K > 0 with kRing)
    else if (k_steps > 0) release(prev_s);
    else if constexpr (!kUpdateLast) mbar_arrive(bar_lr_empty);
    if constexpr (kUpdateLast) {  // (kLrStaging: the update's operands are then the epilogue's second staging box)
      pay_lr();  // (where the k-steps were too few to)
      update(k_steps > 0);
      wait<0>();
      fence_operands(acc);
      if constexpr (kLrStaging) bar_sync(kConsumersBarrier, 256);  // (both warpgroups' updates have read R's rows)
      else mbar_arrive(bar_lr_empty);
    }
    // kRing: both warpgroups' products are done with the held stage before either writes C into it
    if constexpr (kRing) bar_sync(kConsumersBarrier, 256);
    if constexpr (DROP) hash_next(128);  // (what the k-steps left: none unless K is under 128 · 64)

    auto acc_pair = [&](int q) { return mma::pack_bf16(acc[2 * q], acc[2 * q + 1]); };
    if constexpr (EPI == kEpiWarp) {
      // Each warp alone (OWLET_LORA_GEMM_EPILOGUE=warp, session 19, to compare): its 16 rows of a 64-column box into
      // its 2 KiB of the staging buffer, out by its own TMA store of 16 rows — no warpgroup barriers, and a warp
      // waits only for its own previous store's read.
      unsigned char* const stage = gC + wg * kCBox;
#pragma unroll
      for (int h = 0; h < 4; h++) {
        if (lane == 0) bulk_wait_read<0>();  // this warp's previous store has read its rows
        __syncwarp();
#pragma unroll
        for (int j = 0; j < 8; j++) {
          stage_pairs(stage + thread_row + ((j ^ gq) << 4), acc_pair, 8 * h + j);
        }
        fence_proxy_async();  // the generic stores before the TMA's async-proxy reads
        __syncwarp();
        if (lane == 0) {
          tma::store_4d(&maps->c16, nb * kBN + 64 * h, 0, mb * kBM + wg * 64 + wi * 16, 0, sC + wg * kCBox + wi * 2048);
          bulk_commit();
        }
      }
      continue;
    }
    if constexpr (kOverlap) {
      while (pending < kRounds) out_pending();  // (where the k-steps were too few for the previous tile's rounds)
#pragma unroll
      for (int h = 0; h < kFirst; h++) out_round(h, mb, nb, acc_pair);
#pragma unroll
      for (int q = 0; q < kLater; q++) later[q] = acc_pair(16 * kBoxes * kFirst + q);
      pending = kFirst, pending_mb = mb, pending_nb = nb;
    } else {
#pragma unroll
      for (int h = 0; h < kRounds; h++) out_round(h, mb, nb, acc_pair);
    }
  }
  if constexpr (kOverlap)
    while (pending < kRounds) out_pending();  // (the last tile's)
  if constexpr (kLrStaging) {
    if (it > 0) lr_free();  // (the last tile's)
  }
  if (kRing && held >= 0) release_held();  // (the last tile's: OWN_GB's tail refills it)
  // the stores are done before the block ends
  if constexpr (EPI == kEpiWarp) {
    if (lane == 0) bulk_wait<0>();
  } else if (issuer) {
    bulk_wait<0>();
  }
}

// L's 8 bf16 of a row (16 bytes) through L2 only (load_l2)
__device__ __forceinline__ uint4 load_l2(const bf16* p) { return load_l2(reinterpret_cast<const uint4*>(p)); }

// Producer warps 1–3 (lane `pl` of 96) write a tile's rank-r operands into the lr buffer: R's rows n0..n0+127 in
// 16-byte chunks 0–1, n0+128..n0+255 in chunks 2–3 and (with_l) s·L's rows m0..m0+127 in chunks 4–5 of 128 swizzled
// rows of 128 bytes (columns r..15 zero). Each lane loads kBatch chunks before storing them (3: no spills in the
// producers' 40 registers), so that a tile's fill waits about three memory latencies, not one per chunk as with one
// warp (session 18's ≈ 16: the first tile's fill is not hidden behind a mainloop, ≈ 10 µs of a 362 µs kernel).
// OWN_L: L's rows come through L2 only (load_l2: another block wrote them during this kernel); only there, as the
// DROP kernel's producers spill with it.
template <bool OWN_L>
__device__ __forceinline__ void fill_rank_operands(const Args& g, unsigned char* gLr, int mb, int nb, int pl, bool with_l) {
  constexpr int kLanes = 96, kBatch = 3;
  const int items = (with_l ? 3 : 2) * kBM * 2;  // rows of R's part (256) and of s·L's (128), two chunks each
#pragma unroll 1
  for (int q0 = pl; q0 < items; q0 += kLanes * kBatch) {
    uint4 v[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; u++) {
      const int q = q0 + u * kLanes, row = q >> 1, c = q & 1;
      v[u] = make_uint4(0, 0, 0, 0);
      if (q >= items || c * 8 >= g.rank) continue;
      if (row < 2 * kBM) {  // R's row nb·256 + row
        const int n = nb * kBN + row;
        if (n < g.N) v[u] = reinterpret_cast<const uint4*>(g.r + int64_t(n) * g.rank)[c];
      } else {  // L's row mb·128 + (row − 256), scaled below
        const int m = mb * kBM + row - 2 * kBM;
        if constexpr (OWN_L) {
          if (m < g.M) v[u] = load_l2(g.l + int64_t(m) * g.rank + 8 * c);
        } else {
          if (m < g.M) v[u] = reinterpret_cast<const uint4*>(g.l + int64_t(m) * g.rank)[c];
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kBatch; u++) {
      const int q = q0 + u * kLanes, row = q >> 1, c = q & 1;
      if (q >= items) continue;
      // R's rows i and 128 + i in chunks 0–1 and 2–3 of row i, s·L's row i in chunks 4–5 (16-byte chunk k of row i
      // at k ^ (i mod 8))
      const int i = row % kBM, chunk = row < 2 * kBM ? 2 * (row / kBM) + c : 4 + c;
      *reinterpret_cast<uint4*>(gLr + i * 128 + ((chunk ^ (i & 7)) << 4)) = row < 2 * kBM ? v[u] : scaled8(v[u], g.s);
    }
  }
}

// Σ over a 128-row box of box[m][k] · V[m][j] (rank 8) for the box's 16-column groups w and w + 3 of 4 (producer
// warp 1 + w): d[cc] += by mma.sync, the box transposed (ldmatrix .trans: mma.cuh's a_km through the 128-byte swizzle,
// rows 16q + lane mod 8 (+ 8 for lanes 16–31), chunk 2c (+ 1 for lanes 8–15 and 24–31)) and V's 128 rows, staged in
// 16-byte chunk `vc` of the lr buffer's rows (stage_v_rows), as B fragments (ldmatrix .trans of rows 16q + lane: b0,
// b1 of k16 blocks q and q + 1).
__device__ __forceinline__ void box_t_times(uint32_t box, uint32_t sLr, int vc, float (&d)[2][4], int w, int lane) {
  const uint32_t v_at = sLr + uint32_t(lane) * 128 + uint32_t((vc ^ (lane & 7)) << 4);
#pragma unroll
  for (int cc = 0; cc < 2; cc++) {
    const int c = w + 3 * cc;
    if (c >= kBK / 16) continue;
    const uint32_t at = box + uint32_t((lane & 7) + ((lane >> 4) << 3)) * 128 +
                        uint32_t(((2 * c + ((lane >> 3) & 1)) ^ (lane & 7)) << 4);
#pragma unroll
    for (int q = 0; q < 8; q += 2) {
      uint32_t vf[4], a[4];
      mma::ldmatrix_x4_trans(vf, v_at + q * 2048);
      mma::ldmatrix_x4_trans(a, at + q * 2048);
      mma::mma_bf16(d[cc], a, vf[0], vf[1]);
      mma::ldmatrix_x4_trans(a, at + (q + 1) * 2048);
      mma::mma_bf16(d[cc], a, vf[2], vf[3]);
    }
  }
}

// V's 128 rows from m0 (V [M, 8] bf16, 16 bytes a row) into 16-byte chunk `vc` of the lr buffer's rows (the swizzle:
// at vc ^ (row mod 8)), zero past M, by producer lane `pl` of 96; the caller then syncs warps 1–3 (kOwnBarrier).
// Through L2 only where another block wrote V during this kernel.
template <bool L2_ONLY>
__device__ __forceinline__ void stage_v_rows(const bf16* v, int64_t m0, int M, unsigned char* gLr, int vc, int pl) {
  for (int i = pl; i < kBM; i += 96) {
    uint4 x = make_uint4(0, 0, 0, 0);
    if (m0 + i < M) x = L2_ONLY ? load_l2(v + (m0 + i) * kOwnRank) : *reinterpret_cast<const uint4*>(v + (m0 + i) * kOwnRank);
    *reinterpret_cast<uint4*>(gLr + i * 128 + ((vc ^ (i & 7)) << 4)) = x;
  }
}

// d (box_t_times's sums for columns n0.. of a box) into ws [r][N]: d[cc][0], [1] column n0 + 16c + lane / 4, j = 2 (lane
// mod 4) and the next; [2], [3] column + 8. Columns past N are left out.
__device__ __forceinline__ void store_box_cols(float* ws, int N, int n0, const float (&d)[2][4], int w, int lane) {
#pragma unroll
  for (int cc = 0; cc < 2; cc++) {
    const int c = w + 3 * cc;
    if (c >= kBK / 16) continue;
    const int n = n0 + 16 * c + (lane >> 2);
    float* const at = ws + int64_t(2 * (lane & 3)) * N + n;
    if (n < N) at[0] = d[cc][0], at[N] = d[cc][1];
    if (n + 8 < N) at[8] = d[cc][2], at[N + 8] = d[cc][3];
  }
}

// OWN_L, producer warp 1 + w (w = 0..2), on a tile of column block 0: L's rows for the tile, L = A Pᵀ at rank 8, by
// mma.sync m16n8k16 from the A boxes of the ring as they land (the warp's row blocks of 16: w, w + 3, w + 6 of 8;
// ldmatrix through the 128-byte swizzle), P's fragments loaded from global memory (1 KiB per k-step, from L2; a k-step
// ahead but with GB). Each stage's "x empty" barrier (3 arrivals, this block's: A's box is not multicast) then tells the
// TMA thread that these warps have read it. Extra tensor work: 128 × 8 of the tile's 128 × 256 columns (3%), on 1 of
// every N / 256 tiles.
// Returns L's rows as bf16 pairs: lb[j][h] = row 16(w + 3j) + lane / 4 + 8h, columns 2 (lane mod 4) and the next.
// GB (OWN_GB): from the same boxes, while the stage is held, Σ over the block's rows of A[m][k] xa[m][j] for the
// k-step's columns (box_t_times, xa's 128 rows staged once per tile in chunk 6 of the lr buffer, which the rank-r
// operands leave free), stored to gb_ws's row `mb` (`rows`: the block has rows).
template <int STAGES, bool GB>
__device__ __forceinline__ void own_l_rows(const Args& g, uint32_t sRing, uint32_t bar_full, uint32_t bar_x_empty,
                                           uint32_t sLr, unsigned char* gLr, int step0, int k_steps, int w, int lane,
                                           int mb, bool rows, uint32_t (&lb)[3][2]) {
  using wgmma_ws::mbar_arrive;
  using wgmma_ws::mbar_wait;
  const int gq = lane >> 2, t4 = lane & 3;
  float acc[3][4];
#pragma unroll
  for (int j = 0; j < 3; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc[j][e] = 0.f;
  // lane's ldmatrix row (mma.cuh's a_rowmajor: lanes 0–15 rows 0–15 of a 16-row block at column 16kk, lanes 16–31 at
  // 16kk + 8) and, since the blocks start at multiples of 8 rows, one swizzle for all of them
  const uint32_t row_at = uint32_t(lane & 15) * 128 + uint32_t(w) * 2048;
  const int half = lane >> 4, swz = lane & 7;
  // b0, b1 of k16 step kk of k-step kt: P[gq][64kt + 16kk + 2·t4 (+ 8)] and the next column (mma.cuh's B fragment:
  // B[k][n] = P[n][k])
  const bf16* const p_row = g.p + int64_t(gq) * g.K + 2 * t4;
  auto load_p = [&](uint32_t(&pf)[8], int kt) {
    const uint32_t* at = reinterpret_cast<const uint32_t*>(p_row + kt * kBK);
    if ((kt + 1) * kBK <= g.K) {  // (all but a last, partial k-step: one address, immediate offsets)
#pragma unroll
      for (int q = 0; q < 8; q++) pf[q] = at[4 * q];
    } else {
#pragma unroll
      for (int q = 0; q < 8; q++) pf[q] = kt * kBK + 8 * q + 2 * t4 < g.K ? at[4 * q] : 0u;
    }
  };
  uint32_t pf[8];
  if constexpr (!GB) load_p(pf, 0);
  // GB: xa's rows of the block into chunk 6, once the three warps are past their last reads of it
  if constexpr (GB) {
    wgmma::bar_sync(kOwnBarrier, 96);
    stage_v_rows<false>(g.xa, int64_t(mb) * kBM, g.M, gLr, 6, 32 * w + lane);
    wgmma::bar_sync(kOwnBarrier, 96);
  }
#pragma unroll 1
  for (int kt = 0; kt < k_steps; kt++) {
    const int step = step0 + kt, s = step % STAGES;
    // P's next fragments in flight while this k-step's products run — or, GB (short of registers), this k-step's in
    // flight while the stage lands
    uint32_t pn[GB ? 1 : 8] = {};
    if constexpr (GB) load_p(pf, kt);
    else if (kt + 1 < k_steps) load_p(pn, kt + 1);
    mbar_wait(bar_full + 8 * s, uint32_t((step / STAGES) & 1));
    const uint32_t sA = sRing + s * kStageBytes;
#pragma unroll
    for (int kk = 0; kk < kBK / 16; kk++) {
      const uint32_t at = sA + row_at + uint32_t(((2 * kk + half) ^ swz) << 4);
#pragma unroll
      for (int j = 0; j < 3; j++) {
        if (w + 3 * j >= kBM / 16) continue;
        uint32_t a[4];
        mma::ldmatrix_x4(a, at + j * 3 * 2048);
        mma::mma_bf16(acc[j], a, pf[2 * kk], pf[2 * kk + 1]);
      }
    }
    if constexpr (GB) {  // the k-step's columns of gyᵀ xa over the block's rows
      float d[2][4] = {};
      box_t_times(sA, sLr, 6, d, w, lane);
      if (rows) store_box_cols(g.gb_ws + int64_t(mb) * kOwnRank * g.K, g.K, kt * kBK, d, w, lane);
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(bar_x_empty + 8 * s);
    if constexpr (!GB)
#pragma unroll
      for (int q = 0; q < 8; q++) pf[q] = pn[q];
  }
#pragma unroll
  for (int j = 0; j < 3; j++)
#pragma unroll
    for (int h = 0; h < 2; h++) lb[j][h] = mma::pack_bf16(acc[j][2 * h], acc[j][2 * h + 1]);
}

template <bool W_NMAJOR, int STAGES, bool DROP, int EPI, bool OWN_L, bool OWN_GB>
__device__ __forceinline__ void gemm(const Args& g, const Maps* maps) {
  static_assert(!(OWN_L && DROP), "OWN_L computes L from the unmasked A: not for the dropout kernel");
  static_assert(!OWN_GB || (OWN_L && W_NMAJOR), "OWN_GB is dx's (gy's columns in its A boxes), with OWN_L");
  static_assert(!(OWN_L && (EPI == kEpiWarp || STAGES != 4)), "OWN_L stages C through the lr buffer: 4 stages, warpgroup stores");
  static_assert(EPI < kEpiOverlap || (STAGES == 4 && !DROP), "the overlapped and ring epilogues: 4 stages, no mask");
  using namespace wgmma;
  using wgmma_ws::mbar_arrive;
  using wgmma_ws::mbar_init;
  using wgmma_ws::mbar_wait;
  OWLET_DYNAMIC_SMEM(smem_raw);
  const uint32_t raw = mma::smem_u32(smem_raw);
  const uint32_t sRing = (raw + 1023u) & ~1023u, sLr = sRing + STAGES * kStageBytes, sC = sLr + kLrBytes,
                 bar_full = sC + 2 * kCBoxes<STAGES> * kCBox,
                 bar_empty = bar_full + 8 * STAGES, bar_lr_full = bar_empty + 8 * STAGES, bar_lr_empty = bar_lr_full + 8,
                 bar_x_empty = bar_lr_empty + 8;
  unsigned char* const gLr = smem_raw + (sLr - raw);
  unsigned char* const gC = smem_raw + (sC - raw);

  const int tid = threadIdx.x, role = tid >> 7;
  const int m_blocks = (g.M + kBM - 1) / kBM, n_blocks = (g.N + kBN - 1) / kBN, k_steps = (g.K + kBK - 1) / kBK;
  // Work goes out by row-block pairs: the cluster's blocks take rows 2p and 2p + 1 (the second past M where m_blocks is
  // odd: its A comes in as zeros and its stores are left out, but its half of W is the partner's too).
  const int rank = cluster::rank(), peer = rank ^ 1, cl = int(blockIdx.x) / kCluster, clusters = int(gridDim.x) / kCluster;
  const int m_pairs = (m_blocks + kCluster - 1) / kCluster, tiles = m_pairs * n_blocks;
  // The split last round (Split): in kSplitOf's kernels; with OWN_L only where no tile of column block 0 (whose L
  // needs all of its k-steps in one place) is in the last round.
  constexpr bool kSplit = kSplitOf<EPI, OWN_L, OWN_GB, DROP>;
  bool split_ok = kSplit;
  if constexpr (OWN_L && kSplit)
    for (int t = tiles / clusters * clusters; t < tiles; t++) {
      int mb, nb;
      block_tile(t, m_pairs, n_blocks, 0, mb, nb);
      if (nb == 0) split_ok = false;
    }
  const Split sp = split_plan(*maps, split_ok, tiles, clusters, cl, k_steps);

  if (tid == 0) {
    for (int s = 0; s < STAGES; s++) {
      mbar_init(bar_full + 8 * s, 1);
      mbar_init(bar_empty + 8 * s, kCluster * 8);  // every consumer warp of both blocks: the stage is theirs
    }
    mbar_init(bar_lr_full, 3);  // warps 1–3 of the producers
    mbar_init(bar_lr_empty, 256);
    if constexpr (OWN_L)
      for (int s = 0; s < STAGES; s++) mbar_init(bar_x_empty + 8 * s, 3);  // warps 1–3 have read A's box
    tma::fence_barrier_init();
  }
  // the initialised barriers are visible to every thread of both blocks (the partner's copies and arrivals use them)
  cluster::sync();

  if (role == 0) {
    wgmma_ws::regs_dec<kProducerRegsOf<OWN_L, OWN_GB>>();
    const int warp = tid >> 5, lane = tid & 31;
    if (warp == 0 && lane == 0) {  // ---- the TMA thread ----
      tma::prefetch(&maps->a), tma::prefetch(&maps->w);
      int step = 0;  // the block's k-steps so far: stage step mod STAGES
      // OWN_L: whether each of the last STAGES k-steps was a column-block-0 tile's or the tail's (bit i: step − 1 − i),
      // whose A box warps 1–3 read too, and each stage's parity of its next "x empty" phase
      uint32_t own_steps = 0, x_parity = 0;
      // before refilling stage s at `step`: warps 1–3 are done with its last fill where they read it; then the fill
      // about to be issued is recorded as theirs or not
      auto x_read = [&](int step, int s, bool theirs) {
        if (step >= STAGES && ((own_steps >> (STAGES - 1)) & 1)) {
          mbar_wait(bar_x_empty + 8 * s, (x_parity >> s) & 1);
          x_parity ^= 1u << s;
        }
        own_steps = (own_steps << 1) | uint32_t(theirs);
      };
      Unit u;
      for (int ui = 0; unit_at<kSplit>(sp, ui, tiles, clusters, cl, k_steps, u); ui++) {
        int mb, nb;
        block_tile(u.t, m_pairs, n_blocks, rank, mb, nb);
        for (int kt = u.k0; kt < u.k1; kt++, step++) {
          const int s = step % STAGES;
          // both blocks' consumers are done with the stage (this block's copy writes into the partner's too)
          if (step >= STAGES) mbar_wait(bar_empty + 8 * s, uint32_t((step / STAGES - 1) & 1));
          if constexpr (OWN_L) x_read(step, s, nb == 0);  // and this block's warps 1–3, where they read it
          const uint32_t sA = sRing + s * kStageBytes, sW = sA + kABytes, full = bar_full + 8 * s;
          // A's box, this block's half of W's tile and the partner's (multicast by it)
          tma::arrive_expect_tx(full, kStageBytes);
          tma::load_4d(sA, &maps->a, kt * kBK, 0, mb * kBM, 0, full);
          if constexpr (W_NMAJOR) {
#pragma unroll
            for (int c = 2 * rank; c < 2 * rank + 2; c++)
              tma::load_4d_multicast(sW + c * (kBK * 128), &maps->w, nb * kBN + 64 * c, 0, kt * kBK, 0, full,
                                     kClusterMask);
          } else {
            constexpr int kHalf = kBN / kCluster;  // rows of W per block
            tma::load_4d_multicast(sW + rank * kHalf * 128, &maps->w, kt * kBK, 0, nb * kBN + rank * kHalf, 0, full,
                                   kClusterMask);
          }
        }
      }
      if constexpr (OWN_GB) {  // the tail: x's boxes for warps 1–3 alone (no W, no consumers)
        tma::prefetch(&maps->x);
        const Tail tail = tail_plan(tiles, clusters, cl, rank, m_blocks, g.N);
        // (a stage's last fill was a tile's, released by the consumers of both blocks — every fill of it was, so its
        // "empty" parity follows from the step — or the tail's, by warps 1–3)
        uint32_t tail_steps = 0;
        for (int item = tail.first; item < tail.items; item += tail.stride) {
          const int chunk = item % tail.chunks, range = item / tail.chunks;
          for (int mb = range * kTailRows; mb < min(m_blocks, (range + 1) * kTailRows); mb++, step++) {
            const int s = step % STAGES;
            if (step >= STAGES && !((tail_steps >> (STAGES - 1)) & 1))
              mbar_wait(bar_empty + 8 * s, uint32_t((step / STAGES - 1) & 1));
            x_read(step, s, true);
            tail_steps = (tail_steps << 1) | 1u;
            const uint32_t full = bar_full + 8 * s;
            tma::arrive_expect_tx(full, kABytes);
            tma::load_4d(sRing + s * kStageBytes, &maps->x, chunk * kBK, 0, mb * kBM, 0, full);
          }
        }
      }
      // every copy has landed before this thread leaves
      for (int st = max(0, step - STAGES); st < step; st++)
        mbar_wait(bar_full + 8 * (st % STAGES), uint32_t((st / STAGES) & 1));
    } else if (warp >= 1) {  // ---- the rank-r operands: warps 1–3 ----
      const int pl = tid - 32;
      int it = 0, step_at = 0;  // the owned tiles so far (the lr buffer's fills); the ring's k-steps so far
      Unit u;
      for (int ui = 0; unit_at<kSplit>(sp, ui, tiles, clusters, cl, k_steps, u); ui++, step_at += u.k1 - u.k0) {
        if (kSplit && !u.owner) continue;  // (a split tile's start: no update)
        int mb, nb;
        block_tile(u.t, m_pairs, n_blocks, rank, mb, nb);
        if constexpr (OWN_L) {
          // column block 0 computes its rows of L (and announces them); the others take them once announced.
          // First the consumers are done with the previous tile (its update read the lr buffer) — and so every fill
          // of the ring before this tile's has completed: these warps skip the other tiles' fills, and an mbarrier
          // parity wait is only sound one phase ahead (a wait two fills ahead would pass on the older one)
          if (it > 0) mbar_wait(bar_lr_empty, uint32_t((it - 1) & 1));
          const bool own = nb == 0, rows = mb < m_blocks;
          uint32_t lb[3][2];
          if (own) {
            own_l_rows<STAGES, OWN_GB>(g, sRing, bar_full, bar_x_empty, sLr, gLr, step_at, k_steps, warp - 1, lane,
                                       mb, rows, lb);
            if (rows) {  // L's rows out in bf16 (as x Aᵀ / gy B would be stored), then the flag
#pragma unroll
              for (int j = 0; j < 3; j++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                  const int64_t m = int64_t(mb) * kBM + 16 * (warp - 1 + 3 * j) + (lane >> 2) + 8 * h;
                  if (warp - 1 + 3 * j < kBM / 16 && m < g.M)
                    *reinterpret_cast<uint32_t*>(g.l_out + m * kOwnRank + 2 * (lane & 3)) = lb[j][h];
                }
              grid_flags::fence_gpu();
              bar_sync(kOwnBarrier, 96);
              if (pl == 0) grid_flags::set(g.flags + mb, g.epoch);
            }
          }
          if (!own && rows) grid_flags::wait(g.flags + mb, g.epoch);
          fill_rank_operands<true>(g, gLr, mb, nb, pl, !own);
          // (L's rows and the s·L chunks in two loops, the stores of L and its flag first: one loop spills the OWN_GB
          // kernel's producers)
          if (own) {  // s·L (L rounded to bf16 first, as the L the other tiles read) into chunk 4, chunk 5 zero
#pragma unroll
            for (int j = 0; j < 3; j++)
#pragma unroll
              for (int h = 0; h < 2; h++) {
                const int i = 16 * (warp - 1 + 3 * j) + (lane >> 2) + 8 * h;
                if (i >= kBM) continue;
                *reinterpret_cast<uint32_t*>(gLr + i * 128 + ((4 ^ (i & 7)) << 4) + 4 * (lane & 3)) = scaled2(lb[j][h], g.s);
                *reinterpret_cast<uint32_t*>(gLr + i * 128 + ((5 ^ (i & 7)) << 4) + 4 * (lane & 3)) = 0u;
              }
          }
        } else {
          if (it > 0) mbar_wait(bar_lr_empty, uint32_t((it - 1) & 1));
          fill_rank_operands<false>(g, gLr, mb, nb, pl, true);
        }
        fence_proxy_async();  // the generic stores before the tensor cores' async-proxy reads
        __syncwarp();
        if (lane == 0) mbar_arrive(bar_lr_full);
        it++;
      }
      if constexpr (OWN_GB) {  // the tail: ga's sums over row ranges, L's rows as each row block's flag is set
        const Tail tail = tail_plan(tiles, clusters, cl, rank, m_blocks, g.N);
        if (it > 0) mbar_wait(bar_lr_empty, uint32_t((it - 1) & 1));  // (every tile's fill completed: as above)
        bar_sync(kOwnBarrier, 96);  // (and the three warps past their reads of the lr buffer's chunk 6)
        int step = step_at, staged = 0;
        for (int item = tail.first; item < tail.items; item += tail.stride) {
          const int chunk = item % tail.chunks, range = item / tail.chunks;
          float d[2][4] = {};
          for (int mb = range * kTailRows; mb < min(m_blocks, (range + 1) * kTailRows); mb++, step++) {
            // L's rows of the block into chunk 6 or 7 by turns (the warps are past this barrier only once done with the
            // chunk's previous rows, two row blocks back)
            const int vc = 6 + (staged++ & 1);
            grid_flags::wait(g.flags + mb, g.epoch);
            stage_v_rows<true>(g.l_out, int64_t(mb) * kBM, g.M, gLr, vc, pl);
            bar_sync(kOwnBarrier, 96);
            const int s = step % STAGES;
            mbar_wait(bar_full + 8 * s, uint32_t((step / STAGES) & 1));
            box_t_times(sRing + s * kStageBytes, sLr, vc, d, warp - 1, lane);
            __syncwarp();
            if (lane == 0) mbar_arrive(bar_x_empty + 8 * s);
          }
          store_box_cols(g.ga_ws + int64_t(range) * kOwnRank * g.N, g.N, chunk * kBK, d, warp - 1, lane);
        }
      }
    }
  } else {
    consume<W_NMAJOR, STAGES, DROP, EPI, OWN_L, OWN_GB>(g, maps, sRing, sLr, sC, gC, bar_full, bar_empty, bar_lr_full,
                                              bar_lr_empty, k_steps, m_pairs, n_blocks, tiles, cl, clusters, rank, peer, sp);
  }
  // Neither block leaves while the other may still multicast into it or arrive on its barriers.
  __syncwarp();
  cluster::sync();
}

template <bool W_NMAJOR, int STAGES, bool DROP = false, int EPI = kEpiGroup, bool OWN_L = false, bool OWN_GB = false>
__global__ void __launch_bounds__(kThreads, 1) lora_gemm_kernel(const Args g, const __grid_constant__ Maps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(OWLET_CUDA_EMULATION)
  gemm<W_NMAJOR, STAGES, DROP, EPI, OWN_L, OWN_GB>(g, &maps);
#else
  __trap();  // built without sm_90a: the dispatch never launches this (lora.cu fused_ok)
#endif
}

}  // namespace owlet::cuda::lora_gemm
