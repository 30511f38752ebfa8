// Benchmarks of the CUDA backend (bf16): attention forward and forward+backward at the model's shapes, LoRA linear
// against the frozen linear, the 8192³ GEMM, and bandwidth of a few memory-bound kernels against a device copy.
// Timing: the op is queued `iters` times between two synchronisations (host clock), repeated, median per call;
// outputs are disposed as they come (the caching allocator recycles their blocks, as in a training step).
import { type Be, envSuffix, loraEnv, median, type NT, op, type VariantEnv, withEnv } from './harness.ts';

export interface BenchResult { name: string; ms: number; tflops?: number; gbps?: number; extra?: Record<string, number | string> }

// Milliseconds per run of `iters` runs of fn, synchronised.
function perRun(be: Be, fn: () => void, iters: number): number {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iters; i++) fn();
  be.synchronize();
  return Number(process.hrtime.bigint() - t0) / 1e6 / iters;
}

function time(be: Be, fn: () => void, iters: number, reps = 5): number {
  fn();
  fn();
  be.synchronize();
  const per: number[] = [];
  for (let r = 0; r < reps; r++) per.push(perRun(be, fn, iters));
  return median(per);
}

// Two workloads timed in alternating rounds of `iters` runs each (after two warm-up runs of each): the median of each
// one's per-run times, and the median of the rounds' ratios b / a. Why alternate: the H100's clock moved between
// 1.6 and 2.0 GHz under these loads (session 19's ncu), and timing a's rounds all before b's let that drift into the
// ratio (LoRA over the frozen linear read 1.19–1.33× in five calls of one session).
function timePair(be: Be, a: () => void, b: () => void, iters: number, rounds = 7): { a: number; b: number; ratio: number } {
  for (const fn of [a, b, a, b]) fn();
  be.synchronize();
  const ta: number[] = [], tb: number[] = [], ratio: number[] = [];
  for (let r = 0; r < rounds; r++) {
    ta.push(perRun(be, a, iters));
    tb.push(perRun(be, b, iters));
    ratio.push(tb[r] / ta[r]);
  }
  return { a: median(ta), b: median(tb), ratio: median(ratio) };
}

// A random bf16 tensor on the device: a random f32 block tiled to the size (random enough for timing, never zeros).
const block = (() => {
  let s = 12345;
  return Float32Array.from({ length: 1 << 20 }, () => {
    s = (s * 1103515245 + 12345) >>> 0;
    return ((s >>> 8) / (1 << 24) - 0.5) * 3.4;  // ~uniform, std ~1
  });
})();
function rand(be: Be, shape: number[], scale = 1, dtype: 'bf16' | 'f32' = 'bf16'): NT {
  const n = shape.reduce((a, b) => a * b, 1);
  const host = new Float32Array(n);
  for (let i = 0; i < n; i += block.length) host.set(block.subarray(0, Math.min(block.length, n - i)), i);
  if (scale !== 1) for (let i = 0; i < n; i++) host[i] *= scale;
  const f = be.fromBuffer('f32', shape, host);
  if (dtype === 'f32') return f;
  try { return be.cast(f, 'bf16'); } finally { f.dispose(); }
}

const disposeAll = (x: unknown) => {
  if (Array.isArray(x)) x.forEach(disposeAll);
  else if (x && typeof (x as NT).dispose === 'function') (x as NT).dispose();
};

/** Attention fwd and fwd+bwd TFLOP/s (performance.md's count); `env` picks kernel variants for the calls (e.g.
 *  { OWLET_ATTN_FWD: 'm2' } or { OWLET_ATTN_BWD_WARPS: '4' }) and names the result with a suffix (`_fwdm2`, `_bwd4w`). */
export function attentionBench(be: Be, name: string, B: number, H: number, Tq: number, Tk: number, D: number,
  causal: boolean, env: VariantEnv = {}): BenchResult {
  const r = withEnv(env, () => attentionBenchRun(be, name, B, H, Tq, Tk, D, causal));
  r.name += envSuffix(env);
  return r;
}

function attentionBenchRun(be: Be, name: string, B: number, H: number, Tq: number, Tk: number, D: number,
  causal: boolean): BenchResult {
  const q = rand(be, [B, Tq, H, D]), k = rand(be, [B, Tk, H, D]), v = rand(be, [B, Tk, H, D]), go = rand(be, [B, Tq, H, D]);
  const fwd = op(be, 'attentionForward'), bwd = op(be, 'attentionBackward');
  const scale = 1 / Math.sqrt(D);
  const flops = 4 * B * H * Tq * Tk * D * (causal ? 0.5 : 1);
  const iters = flops > 1e11 ? 5 : 20;
  const fms = time(be, () => disposeAll(fwd(q, k, v, null, causal, scale, 0, 0)), iters);
  const fbms = time(be, () => {
    const [o, lse] = fwd(q, k, v, null, causal, scale, 0, 0);
    disposeAll(bwd(q, k, v, o, lse, go, null, causal, scale, 0, 0));
    o.dispose();
    lse.dispose();
  }, iters);
  [q, k, v, go].forEach((t) => t.dispose());
  return { name, ms: fbms, extra: { fwd_ms: +fms.toFixed(4), fwd_tflops: +(flops / fms / 1e9).toFixed(1),
    fwdbwd_ms: +fbms.toFixed(4), fwdbwd_tflops: +((3.5 * flops) / fbms / 1e9).toFixed(1) } };
}

/** The ViT's self-attention from the fused q|k|v projection's output qkv [B, T, H, 3, D], forward and forward +
 *  backward: packed (attentionQkvForward/Backward: q, k, v read in place, the gradient written in qkv's layout)
 *  against what lib/model/vision.ts did before (three slices out of qkv, attention, the three gradients
 *  concatenated back). ms is the packed fwd+bwd; split_ms − packed_ms is what a layer saves. dtype f32: a CPU dry
 *  run of the same calls (the CPU backend's attention is f32 only). */
export function attentionQkvBench(be: Be, name: string, B: number, H: number, T: number, D: number,
  env: VariantEnv = {}, dtype: 'bf16' | 'f32' = 'bf16'): BenchResult {
  const r = withEnv(env, () => attentionQkvBenchRun(be, name, B, H, T, D, dtype));
  r.name += envSuffix(env);
  return r;
}

function attentionQkvBenchRun(be: Be, name: string, B: number, H: number, T: number, D: number,
  dtype: 'bf16' | 'f32'): BenchResult {
  const qkv = rand(be, [B, T, H, 3, D], 1, dtype), go = rand(be, [B, T, H, D], 1, dtype);
  const pf = op(be, 'attentionQkvForward'), pb = op(be, 'attentionQkvBackward');
  const af = op(be, 'attentionForward'), ab = op(be, 'attentionBackward'), slice = op(be, 'slice'), concat = op(be, 'concat');
  const scale = 1 / Math.sqrt(D);
  const flops = 4 * B * H * T * T * D;
  const iters = dtype === 'f32' ? 1 : 20;
  const packed = (bwd: boolean) => {
    const [o, lse] = pf(qkv, null, false, scale, 0, 0);
    if (bwd) disposeAll(pb(qkv, o, lse, go, null, false, scale, 0, 0));
    disposeAll([o, lse]);
  };
  const split = (bwd: boolean) => {
    const parts: NT[] = [0, 1, 2].map((s) => slice(qkv, 3, s, 1));
    const qkvs = parts.map((x) => x.view([B, T, H, D]));
    const [o, lse] = af(qkvs[0], qkvs[1], qkvs[2], null, false, scale, 0, 0);
    if (bwd) {
      const gs: NT[] = ab(qkvs[0], qkvs[1], qkvs[2], o, lse, go, null, false, scale, 0, 0);
      const views = gs.map((g) => g.view([B, T, H, 1, D]));
      disposeAll([concat(views, 3), views, gs]);
    }
    disposeAll([o, lse, qkvs, parts]);
  };
  const pfms = time(be, () => packed(false), iters), sfms = time(be, () => split(false), iters);
  const pms = time(be, () => packed(true), iters), sms = time(be, () => split(true), iters);
  [qkv, go].forEach((t) => t.dispose());
  return { name, ms: pms, extra: { packed_fwd_ms: +pfms.toFixed(4), split_fwd_ms: +sfms.toFixed(4),
    packed_ms: +pms.toFixed(4), split_ms: +sms.toFixed(4), saved_ms: +(sms - pms).toFixed(4),
    packed_tflops: +((3.5 * flops) / pms / 1e9).toFixed(1) } };
}

/** One attention forward and backward with `env` set, untimed: the launches Nsight Compute profiles
 *  (check.mjs --profile-attention). */
export function attentionOnce(be: Be, B: number, H: number, Tq: number, Tk: number, D: number, causal: boolean,
  env: VariantEnv = {}): void {
  const q = rand(be, [B, Tq, H, D]), k = rand(be, [B, Tk, H, D]), v = rand(be, [B, Tk, H, D]), go = rand(be, [B, Tq, H, D]);
  try {
    withEnv(env, () => {
      const [o, lse] = op(be, 'attentionForward')(q, k, v, null, causal, 1 / Math.sqrt(D), 0, 0);
      disposeAll(op(be, 'attentionBackward')(q, k, v, o, lse, go, null, causal, 1 / Math.sqrt(D), 0, 0));
      o.dispose();
      lse.dispose();
    });
    be.synchronize();
  } finally { [q, k, v, go].forEach((t) => t.dispose()); }
}

/** A LoRA linear's operands: x [M, K], the frozen w [N, K], the adapter a [r, K] and b [N, r], an output gradient. */
function loraOperands(be: Be, M: number, K: number, N: number, r: number) {
  return { x: rand(be, [M, K]), w: rand(be, [N, K], 1 / Math.sqrt(K)), a: rand(be, [r, K], 1 / Math.sqrt(K)),
    b: rand(be, [N, r], 0.01), gy: rand(be, [M, N]) };
}

/** One frozen linear (forward and input gradient) and one LoRA forward + backward at that shape, synchronised:
 *  the launches Nsight Compute profiles (check.mjs --profile-lora). */
export function loraOnce(be: Be, M: number, K: number, N: number, r: number, variant = '', p = 0): void {
  const { x, w, a, b, gy } = loraOperands(be, M, K, N, r);
  try {
    withEnv(loraEnv(variant), () => {
      disposeAll([op(be, 'matmul')(x, w, false, true, 1), op(be, 'matmul')(gy, w, false, false, 1)]);
      const [y, xa] = op(be, 'loraForward')(x, w, a, b, 2, p, 7);
      disposeAll(op(be, 'loraBackward')(gy, x, w, a, b, xa, 2, p, 7, true));
      disposeAll([y, xa]);
    });
    be.synchronize();
  } finally { [x, w, a, b, gy].forEach((t) => t.dispose()); }
}

/** LoRA fwd+bwd against the frozen linear (matmul forward + input gradient); variant 'thin' times the one-pass
 *  kernels for the thin products (OWLET_LORA=thin), 'mma' the tensor-core ones (OWLET_LORA=mma), 'fused' the GEMM
 *  with the rank-r update in its kernel (OWLET_LORA_GEMM=fused), for comparison (cuBLAS is the default); p > 0 with
 *  the LoRA input dropout (stage 2's 0.05). */
export function loraBench(be: Be, M: number, K: number, N: number, r: number, variant = '', p = 0): BenchResult {
  return withEnv(loraEnv(variant), () => loraBenchRun(be, M, K, N, r, variant, p));
}

function loraBenchRun(be: Be, M: number, K: number, N: number, r: number, variant: string, p: number): BenchResult {
  const { x, w, a, b, gy } = loraOperands(be, M, K, N, r);
  const mm = op(be, 'matmul'), lf = op(be, 'loraForward'), lb = op(be, 'loraBackward');
  const t = timePair(be, () => {
    const y = mm(x, w, false, true, 1);
    const gx = mm(gy, w, false, false, 1);
    y.dispose();
    gx.dispose();
  }, () => {
    const [y, xa] = lf(x, w, a, b, 2, p, 7);
    disposeAll(lb(gy, x, w, a, b, xa, 2, p, 7, true));
    y.dispose();
    xa.dispose();
  }, 10);
  const frozen = t.a, lora = t.b;
  [x, w, a, b, gy].forEach((t) => t.dispose());
  // (overhead: the median of the alternating rounds' ratios, not lora / frozen of the two medians)
  return { name: `lora_M${M}_K${K}_N${N}_r${r}${p ? `_dropout${p}` : ''}${variant ? `_${variant}` : ''}`, ms: lora, extra: { frozen_linear_fwdbwd_ms: +frozen.toFixed(4),
    lora_fwdbwd_ms: +lora.toFixed(4), overhead: +t.ratio.toFixed(3),
    frozen_tflops: +((4 * M * K * N) / frozen / 1e9).toFixed(1) } };
}

export function gemmBench(be: Be, n: number): BenchResult {
  const a = rand(be, [n, n]), b = rand(be, [n, n]);
  const mm = op(be, 'matmul');
  const ms = time(be, () => mm(a, b, false, false, 1).dispose(), 10);
  a.dispose();
  b.dispose();
  return { name: `gemm_bf16_${n}`, ms, tflops: +((2 * n ** 3) / ms / 1e9).toFixed(1) };
}

/** The model's GEMM shapes with cuBLASLt's first heuristic (the default) and with the fastest of its
 *  candidates (OWLET_GEMM_TUNE=1): what tuning buys per shape. Forward y = x wᵀ (x [M, K], w [N, K]) and, for the ViT,
 *  the weight gradient dW = dyᵀ x (a long reduction over the 4112 tokens into a small output). */
export function gemmShapesBench(be: Be): BenchResult[] {
  // name, a's shape, b's shape, transA, transB
  const shapes: [string, number[], number[], boolean, boolean][] = [
    ['vit_qkv', [4112, 1024], [3072, 1024], false, true], ['vit_dense', [4112, 1024], [1024, 1024], false, true],
    ['vit_fc1', [4112, 1024], [4096, 1024], false, true], ['vit_fc2', [4112, 4096], [1024, 4096], false, true],
    ['vit_dense_dW', [4112, 1024], [4112, 1024], true, false], ['vit_fc1_dW', [4112, 4096], [4112, 1024], true, false],
    ['llama_qkvo', [4096, 4096], [4096, 4096], false, true], ['llama_up', [4096, 4096], [11008, 4096], false, true],
    ['llama_down', [4096, 11008], [4096, 11008], false, true],
  ];
  const mm = op(be, 'matmul'), out: BenchResult[] = [];
  for (const [name, as, bs, ta, tb] of shapes) {
    const a = rand(be, as), b = rand(be, bs);
    const M = ta ? as[1] : as[0], K = ta ? as[0] : as[1], N = tb ? bs[0] : bs[1];
    const ms: Record<string, number> = {};
    for (const tune of ['0', '1']) ms[tune] = withEnv({ OWLET_GEMM_TUNE: tune }, () => time(be, () => mm(a, b, ta, tb, 1).dispose(), 10));
    a.dispose();
    b.dispose();
    const tf = (t: number) => +((2 * M * K * N) / t / 1e9).toFixed(1);
    out.push({ name: `gemm_${name}_M${M}_K${K}_N${N}`, ms: ms['1'], tflops: tf(ms['1']),
      extra: { heuristic_ms: +ms['0'].toFixed(4), tuned_ms: +ms['1'].toFixed(4), heuristic_tflops: tf(ms['0']), tuned_tflops: tf(ms['1']) } });
  }
  return out;
}

/** What GEMM tuning costs when every step brings new shapes (the LM head's rows are the batch's counted tokens):
 *  the LM head's forward (x [M, 4096] · w [32000, 4096]ᵀ) at 24 row counts from 2900 to 3199, each mode on shapes new
 *  to it: the first call of each (timing included) and the steady per-call time afterwards, summed over the 24, with
 *  OWLET_GEMM_TUNE unset (the heuristic's first), exact (every new shape timed) and 1 (one timing per bucket). */
export function gemmNewShapesBench(be: Be): BenchResult {
  const K = 4096, N = 32000, rows = Array.from({ length: 24 }, (_, i) => 2900 + 13 * i);
  const x = rand(be, [rows[rows.length - 1], K]), w = rand(be, [N, K]);
  const xs = rows.map((M) => be.slice(x, 0, 0, M));
  const mm = op(be, 'matmul'), extra: Record<string, number> = {};
  for (const [mode, tune] of [['off', '0'], ['exact', 'exact'], ['bucket', '1']] as const) {
    withEnv({ OWLET_GEMM_TUNE: tune }, () => {
      let first = 0, steady = 0;
      for (const xi of xs) {
        be.synchronize();
        const t0 = process.hrtime.bigint();
        mm(xi, w, false, true, 1).dispose();
        be.synchronize();
        first += Number(process.hrtime.bigint() - t0) / 1e6;
      }
      for (const xi of xs) steady += time(be, () => mm(xi, w, false, true, 1).dispose(), 3, 3);
      extra[`first_calls_ms_${mode}`] = +first.toFixed(2);
      extra[`steady_ms_${mode}`] = +steady.toFixed(3);
    });
  }
  [x, w, ...xs].forEach((t) => t.dispose());
  return { name: 'gemm_new_shapes_lm_head_K4096_N32000', ms: extra.first_calls_ms_bucket, extra };
}

/** Bytes moved per call over time: a device copy (the ceiling), RMSNorm, cross-entropy, AdamW. */
export function bandwidthBench(be: Be): BenchResult[] {
  const out: BenchResult[] = [];
  const gbps = (bytes: number, ms: number) => +(bytes / ms / 1e6).toFixed(0);
  {
    const x = rand(be, [1 << 27]);  // 256 MiB of bf16, five times the L2
    const ms = time(be, () => be.clone(x).dispose(), 20);
    out.push({ name: 'copy_256MiB', ms, gbps: gbps(2 * 2 ** 28, ms) });
    x.dispose();
  }
  {
    // f32 <-> bf16 casts (copy_convert's 16-byte path since session 14; the attention backward's dQ goes through
    // the f32 -> bf16 one): 2^25 elements, 128 MiB of f32 and 64 MiB of bf16 moved per call.
    const x = rand(be, [1 << 25], 1, 'f32');
    let ms = time(be, () => be.cast(x, 'bf16').dispose(), 20);
    out.push({ name: 'cast_f32_to_bf16_2^25', ms, gbps: gbps(6 * 2 ** 25, ms) });
    const y = be.cast(x, 'bf16');
    ms = time(be, () => be.cast(y, 'f32').dispose(), 20);
    out.push({ name: 'cast_bf16_to_f32_2^25', ms, gbps: gbps(6 * 2 ** 25, ms) });
    x.dispose();
    y.dispose();
  }
  {
    // RoPE at stage 2's LLaMA q/k shape (16-byte kernel since session 14; session 12's profile: ≈ 44 µs device time)
    const x = rand(be, [2, 2048, 32, 128]);
    const f = op(be, 'ropeForward');
    const ms = time(be, () => f(x, 0, 10000).dispose(), 20);
    out.push({ name: 'rope_fwd_2x2048x32x128', ms, gbps: gbps(2 * 2 * 2048 * 32 * 128 * 2, ms) });
    x.dispose();
  }
  {
    const x = rand(be, [8192, 4096]), w = rand(be, [4096]);
    const f = op(be, 'rmsNormForward');
    const ms = time(be, () => disposeAll(f(x, w, 1e-6)), 20);
    out.push({ name: 'rmsnorm_fwd_8192x4096', ms, gbps: gbps(2 * 8192 * 4096 * 2, ms) });
    x.dispose();
    w.dispose();
  }
  {
    // The ViT's shapes (16 images × 257 tokens): LayerNorm with the residual add fused, its backward with the added
    // gradient, and quick_gelu's backward (bytes: every operand read or written once).
    const R = 16 * 257, C = 1024, F = 4096;
    const x = rand(be, [R, C]), r = rand(be, [R, C]), w = rand(be, [C]), b = rand(be, [C]), gy = rand(be, [R, C]);
    const fwd = op(be, 'layerNormForward'), bwd = op(be, 'layerNormBackward');
    // a warp per row (the default since session 17) and a block per row (OWLET_NORM_ROWS=block)
    for (const env of [{}, { OWLET_NORM_ROWS: 'block' }] as VariantEnv[]) {
      withEnv(env, () => {
        let t = time(be, () => disposeAll(fwd(x, w, b, 1e-5, r)), 20);
        out.push({ name: `layernorm_residual_fwd_4112x1024${envSuffix(env)}`, ms: t, gbps: gbps(4 * R * C * 2, t) });
        const [y, mean, rstd, sum] = fwd(x, w, b, 1e-5, r);
        // (gx only: the weight and bias gradients are reduce_cols' pass)
        t = time(be, () => disposeAll(bwd(gy, sum, w, mean, rstd, true, false, r)), 20);
        out.push({ name: `layernorm_residual_bwd_4112x1024${envSuffix(env)}`, ms: t, gbps: gbps(4 * R * C * 2, t) });
        disposeAll([y, mean, rstd, sum]);
      });
    }
    // The weight and bias gradients of that backward (reduce_cols: gy and x read once) and bias gradients at the
    // ViT's two widths (sumRows: gy read once).
    {
      const [y, mean, rstd, sum] = fwd(x, w, b, 1e-5, r);
      const t = time(be, () => disposeAll(bwd(gy, sum, w, mean, rstd, false, true)), 20);
      out.push({ name: 'layernorm_param_grads_4112x1024', ms: t, gbps: gbps(2 * R * C * 2, t) });
      // The whole backward as the trainer runs it — gx and the weight and bias gradients — in gx's pass (the default
      // since session 17) and with the gradients in reduce_cols' own pass (OWLET_NORM_PARAMS=separate); bytes: gy, x,
      // the added gradient and gx once each.
      for (const env of [{}, { OWLET_NORM_PARAMS: 'separate' }] as VariantEnv[]) {
        withEnv(env, () => {
          const tp = time(be, () => disposeAll(bwd(gy, sum, w, mean, rstd, true, true, r)), 20);
          out.push({ name: `layernorm_residual_bwd_gx_gw_gb_4112x1024${envSuffix(env)}`, ms: tp, gbps: gbps(4 * R * C * 2, tp) });
        });
      }
      disposeAll([y, mean, rstd, sum]);
    }
    for (const cols of [C, F]) {
      const g = rand(be, [R, cols]);
      const t = time(be, () => be.sumRows(g, [cols]).dispose(), 20);
      out.push({ name: `bias_grad_sum_rows_4112x${cols}`, ms: t, gbps: gbps(R * cols * 2, t) });
      g.dispose();
    }
    disposeAll([x, r, w, b, gy]);
    const h = rand(be, [R, F]), g = rand(be, [R, F]);
    const ms = time(be, () => be.quickGeluBackward(g, h).dispose(), 20);
    out.push({ name: 'quick_gelu_bwd_4112x4096', ms, gbps: gbps(3 * R * F * 2, ms) });
    disposeAll([h, g]);
  }
  {
    const logits = rand(be, [4096, 32000], 2);
    const labels = be.fromBuffer('i32', [4096], Int32Array.from({ length: 4096 }, (_, i) => (i * 7919) % 32000));
    const ce = op(be, 'crossEntropy');
    const ms = time(be, () => disposeAll(ce(logits, labels, -100)), 10);
    out.push({ name: 'cross_entropy_4096x32000', ms, gbps: gbps(2 * 4096 * 32000 * 2, ms) });
    logits.dispose();
    labels.dispose();
  }
  {
    const n = 1 << 26;  // 64M fp32 parameters in 4 tensors
    const mk = (v: number) => [0, 1, 2, 3].map(() => be.full('f32', [n / 4], v));
    const p = mk(0.5), g = mk(0.01), m = mk(0), v = mk(0);
    const adam = op(be, 'adamw');
    let step = 1;
    const ms = time(be, () => adam(p, g, m, v, [0.1, 0.1, 0, 0], 1e-4, 0.9, 0.999, 1e-8, step++), 10);
    out.push({ name: 'adamw_64M_params', ms, gbps: gbps(n * 4 * 7, ms) });  // read p, g, m, v; write p, m, v
    [...p, ...g, ...m, ...v].forEach((t) => t.dispose());
  }
  return out;
}

/**
 * What one call costs the host and what it costs the device, apart: the other benchmarks here time calls queued back
 * to back, which measures the host instead of the device wherever the host's cost per call (N-API, checks,
 * allocation, launch) is the larger — a LayerNorm over the ViT's 4112 × 1024 moves 34 MB, about 8 µs of the device's
 * bandwidth. Host: `iters` calls queued with nothing waited for, per call. Device: the same calls queued behind ~8 ms
 * of GEMMs (so the host has queued them all before the device reaches them), between two timeline marks, per call.
 */
export function hostVsDeviceBench(be: Be, primeN = 8192, dtype: 'bf16' | 'f32' = 'bf16'): BenchResult[] {
  const out: BenchResult[] = [];
  const R = 16 * 257, C = 1024, F = 4096;
  const t = (shape: number[]) => rand(be, shape, 1, dtype);
  const x = t([R, C]), r = t([R, C]), w = t([C]), b = t([C]), gy = t([R, C]);
  const wl = t([F, C]), bl = t([F]), h = t([R, F]), tiny = t([8]), big = t([primeN, primeN]);
  const [y0, mean, rstd, sum] = op(be, 'layerNormForward')(x, w, b, 1e-5, r) as NT[];
  const pixels = new Uint16Array(16 * 3 * 224 * 224).fill(0x3f80);
  const calls: [string, () => unknown, number?][] = [
    ['add_8', () => be.add(tiny, tiny, 1, 1)],
    ['full_8', () => be.full(dtype, [8], 0)],
    ['layernorm_residual_fwd_4112x1024', () => op(be, 'layerNormForward')(x, w, b, 1e-5, r)],
    ['layernorm_residual_bwd_gx_gw_4112x1024', () => op(be, 'layerNormBackward')(gy, sum, w, mean, rstd, true, true, r)],
    ['linear_fwd_bias_4112x1024x4096', () => be.linearForward(x, wl, bl)],
    ['quick_gelu_fwd_4112x4096', () => be.quickGeluForward(h)],
    // stage 1's pixels (16 images, bf16) through the pinned staging ring: the host's copy into it, the device's DMA
    // (4 at a time: the ring holds a few of them before the host would wait for the device)
    ['upload_pixels_16x3x224x224_bf16', () => be.fromBuffer('bf16', [16, 3, 224, 224], pixels), 4],
  ];
  for (const [name, fn, n] of calls) {
    const iters = n ?? 200;
    for (let i = 0; i < 3; i++) disposeAll(fn());
    be.synchronize();
    const hosts: number[] = [], devices: number[] = [];
    for (let rep = 0; rep < 3; rep++) {
      const results: unknown[] = [];
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < iters; i++) results.push(fn());
      hosts.push(Number(process.hrtime.bigint() - t0) / 1e3 / iters);
      be.synchronize();
      results.forEach(disposeAll);
      results.length = 0;
      for (let i = 0; i < 8; i++) be.matmul(big, big).dispose();  // ~8 ms queued ahead of the calls
      be.timelineMark();
      for (let i = 0; i < iters; i++) results.push(fn());
      be.timelineMark();
      const marks = be.timelineRead();
      devices.push((marks[marks.length - 1] - marks[marks.length - 2]) * 1e3 / iters);
      results.forEach(disposeAll);
    }
    const host = median(hosts), device = median(devices);
    out.push({ name: `host_vs_device_${name}`, ms: device / 1e3, extra: { host_us: +host.toFixed(2), device_us: +device.toFixed(2) } });
  }
  disposeAll([x, r, w, b, gy, wl, bl, h, tiny, big, y0, mean, rstd, sum]);
  return out;
}
