// The GPU check of the CUDA backend, bundled by scripts/gpu/build-bundle.sh into .gpu/check.mjs and run on the GPU
// machine by scripts/gpu/run.sh.
//
//   check.mjs                   every case on CUDA (f32 and bf16) against the CPU backend, or a float64 reference
//                               where the CPU backend lacks the op; misuse and allocator checks; then benchmarks
//   check.mjs --quick           small cases only, no benchmarks (for compute-sanitizer)
//   check.mjs --cpu-only        no GPU: the CPU backend against the float64 references (and a clear message for why
//                               the CUDA addon cannot load here)
//   check.mjs --no-bench        correctness only
//   check.mjs --filter TEXT     cases whose name contains TEXT (TEXT|TEXT2: either)
//   check.mjs --summary OWLET.json PEER.json [PEER2.json …]   ratios of owlet's benchmark numbers to the PyTorch
//                                   peer's (several peer runs: to each number's median over them)
//   check.mjs --steps TRAIN.json PEER.json [PEER2.json …]   the trainer benchmark's 7B-sized steps (train-check's
//                                   train_bench.json) against the peer's e2e steps: ms, tokens/s ratio, peak memory
//   check.mjs --bench-lora          only the LoRA benchmarks (the BENCH lines; check.mjs --summary is not fed)
//   check.mjs --profile-lora-gemm   only the fused LoRA GEMM's launches: 4 stages, 3, dropout, warp epilogue
//   check.mjs --profile-lora        only the launches that run.sh's ncu-lora stage profiles: the frozen linear's two
//                               GEMMs, then one LoRA forward and backward (stage 2's M4096 with dropout 0.05, M8192
//                               without), by the default path and OWLET_LORA=mma
//   check.mjs --profile-attention   only the attention launches that run.sh's ncu stage profiles: one forward and
//                               one backward each at LLaMA 2k (D 128, causal) and ViT (D 64), with the static
//                               default variants (run.sh sets OWLET_ATTN_TUNE=0), OWLET_ATTN_FWD=wgmma-ws (what
//                               tuning chose at LLaMA 2k on an H200), its TMA and persistent forms (wgmma-ws-tma,
//                               wgmma-wsp with the persistent backward wgmma-p), OWLET_ATTN_BWD=mma, wgmma1 both
//                               ways and OWLET_ATTN_TAIL=1, in that order (each forward or backward is one to three
//                               kernels: Δ, the tiles, the tail)
//
// One line per case and dtype: PASS/FAIL, the reference used, the relative max error of every output. Results go
// to $OUT/owlet_cuda.json (or gpu-out/owlet_cuda.json, ignored by git). Exit status 1 when a case failed.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cpu, cuda } from '../../lib/native.ts';
import { TOL, type Tol } from '../../test/helpers/tolerances.ts';
import { attentionBench, attentionOnce, attentionQkvBench, bandwidthBench, type BenchResult, gemmBench, gemmNewShapesBench, gemmShapesBench, hostVsDeviceBench, loraBench, loraOnce } from './bench.ts';
import { type Case, cases, type Out } from './cases.ts';
import { type Be, bf16Round, fmt, get, Missing, type NT, put, relErr } from './harness.ts';
import { medianPeer, type PeerRun } from './peer-median.ts';

const argv = process.argv.slice(2);
const flag = (f: string) => argv.includes(f);
const arg = (f: string) => { const i = argv.indexOf(f); return i >= 0 ? argv[i + 1] : undefined; };

type Value = Float64Array | number | boolean;


function runOn(be: Be, c: Case, inputs: { shape: number[]; values: Float64Array; kind?: string }[], dtype: 'f32' | 'bf16'):
  Record<string, Value> {
  const xs: NT[] = [];
  const outs: Record<string, Out> = {};
  try {
    for (const i of inputs) xs.push(put(be, i.values, i.shape, (i.kind ?? 'float') as 'float', dtype));
    Object.assign(outs, c.run(be, xs));
    const res: Record<string, Value> = {};
    for (const [k, v] of Object.entries(outs)) {
      if (v === null || v === undefined) continue;
      res[k] = typeof v === 'number' || typeof v === 'boolean' ? v : get(be, v);
    }
    return res;
  } finally {
    for (const v of Object.values(outs)) if (v && typeof v === 'object') v.dispose();
    for (const x of xs) x.dispose();
  }
}

function compare(got: Record<string, Value>, want: Record<string, Value>, tolFor: (k: string) => Tol):
  { ok: boolean; errs: Record<string, number> } {
  let ok = true;
  const errs: Record<string, number> = {};
  for (const [k, w] of Object.entries(want)) {
    const g = got[k];
    const tol = tolFor(k);
    let e: number;
    if (g === undefined) e = Infinity;
    else if (typeof w === 'boolean') e = g === w ? 0 : Infinity;
    else if (typeof w === 'number') e = typeof g === 'number' ? Math.abs(g - w) / Math.max(Math.abs(w), tol.floor) : Infinity;
    else e = g instanceof Float64Array ? relErr(g, w, tol.floor) : Infinity;
    errs[k] = e;
    if (!(e < tol.rel)) ok = false;
  }
  return { ok, errs };
}

interface CaseResult { name: string; family: string; dtype: string; reference: string; pass: boolean;
  errors: Record<string, number>; note?: string; aborted?: boolean; skipped?: boolean }

function checkCases(cpuBe: Be, cudaBe: Be | null): CaseResult[] {
  const results: CaseResult[] = [];
  const filters = arg('--filter')?.split('|');  // (alternatives: a case runs when its name contains any of them)
  for (const c of cases()) {
    if (flag('--quick') && !c.quick) continue;
    if (filters && !filters.some((f) => c.name.includes(f))) continue;
    for (const dtype of cudaBe ? c.dtypes : (['f32'] as const)) {
      const raw = c.inputs();
      const inputs = raw.map((i) => ({ ...i, values: (i.kind ?? 'float') === 'float' && dtype === 'bf16' ? i.values.map(bf16Round) : i.values }));
      const t0 = Date.now();
      let want: Record<string, Value> = {}, reference = 'cpu', note: string | undefined;
      try {
        want = runOn(cpuBe, c, inputs, 'f32');
      } catch (e) {
        if (!(e instanceof Missing)) note = `cpu: ${(e as Error).message}`;
        reference = 'float64';
        if (cudaBe) want = c.ref(inputs.map((i) => i.values));
      }
      let res: CaseResult;
      if (!cudaBe) {  // CPU-only: the CPU backend against the float64 reference, where it has the op
        if (reference !== 'cpu') {
          res = { name: c.name, family: c.family, dtype, reference, pass: true, errors: {}, note: note ?? 'no CPU op: skipped' };
        } else {
          const r = compare(want, c.ref(inputs.map((i) => i.values)), (k) => (c.exact?.includes(k) ? TOL.indices : TOL.cudaF32));
          res = { name: c.name, family: c.family, dtype, reference: 'float64 (cpu checked)', pass: r.ok, errors: r.errs };
        }
      } else {
        try {
          cudaBe.synchronize();
          const held0 = cudaBe.memory().bytesInUse;
          const got = runOn(cudaBe, c, inputs, dtype);
          cudaBe.synchronize();
          const held = cudaBe.memory().bytesInUse - held0;
          if (held) note = `${note ? `${note}; ` : ''}device bytes still held after the case: ${held}`;
          const tolFor = (k: string) => (c.exact?.includes(k) ? TOL.indices
            : dtype === 'f32' ? TOL.cudaF32 : c.grads?.includes(k) ? TOL.cudaBf16Grad : TOL.cudaBf16);
          const r = compare(got, want, tolFor);
          res = { name: c.name, family: c.family, dtype, reference, pass: r.ok, errors: r.errs, note };
        } catch (e) {
          const msg = (e as Error).message;
          // (a variant the smoke stage kept out, harness.ts withEnv: not run, so neither passed nor failed)
          res = msg.startsWith('skipped:')
            ? { name: c.name, family: c.family, dtype, reference, pass: true, skipped: true, errors: {}, note: msg }
            : { name: c.name, family: c.family, dtype, reference, pass: false, aborted: true, errors: {}, note: `cuda: ${msg}` };
        }
      }
      const errs = Object.entries(res.errors).map(([k, v]) => `${k} ${fmt(v)}`).join(' ');
      console.log(`${res.skipped ? 'SKIP' : res.pass ? 'PASS' : 'FAIL'} ${res.dtype.padEnd(4)} ${res.name} [ref ${res.reference}] ${errs}` +
        `${res.note ? ` (${res.note})` : ''} ${Date.now() - t0}ms`);
      results.push(res);
    }
  }
  return results;
}

// Misuse and runtime behaviour that only the device shows: typed errors, deferred index errors, the allocator cache.
function checkRuntime(be: Be): CaseResult[] {
  const out: CaseResult[] = [];
  const expectThrow = (name: string, code: string, fn: () => void) => {
    let msg = 'did not throw';
    let pass = false;
    try { fn(); } catch (e) {
      const err = e as { code?: string; message?: string };
      msg = `${err.code}: ${err.message}`;
      pass = err.code === code;
    }
    console.log(`${pass ? 'PASS' : 'FAIL'} runtime ${name}: ${msg}`);
    out.push({ name, family: 'runtime', dtype: '-', reference: '-', pass, errors: {}, note: msg });
  };
  // (Not under compute-sanitizer, which reports the refused cudaMalloc itself.)
  if (!flag('--quick'))
    expectThrow('out of memory is a typed error that says what would help', 'OWLET_OOM', () => { be.empty('bf16', [2 ** 40]).dispose(); });
  expectThrow('an out-of-range embedding id surfaces at the next synchronisation', 'OWLET_ARGUMENT', () => {
    const src = be.full('f32', [5, 3], 1), idx = be.fromBuffer('i32', [2], Int32Array.of(0, 999));
    try { be.gatherRows(src, idx).dispose(); } finally { src.dispose(); idx.dispose(); }
    be.synchronize();
  });
  expectThrow('attention with mismatched shapes is a shape error', 'OWLET_SHAPE', () => {
    const q = be.full('bf16', [1, 4, 2, 64], 0), k = be.full('bf16', [1, 4, 3, 64], 0);
    try { be.attentionForward(q, k, k, null, false, 0.125, 0, 0); } finally { q.dispose(); k.dispose(); }
  });
  expectThrow('packed attention of a qkv that is not [B, T, H, 3, D] is a shape error', 'OWLET_SHAPE', () => {
    const qkv = be.full('bf16', [1, 4, 2, 2, 64], 0);
    try { be.attentionQkvForward(qkv, null, false, 0.125, 0, 0); } finally { qkv.dispose(); }
  });
  expectThrow('packed attention backward with an out of the wrong shape is a shape error', 'OWLET_SHAPE', () => {
    const qkv = be.full('bf16', [1, 4, 2, 3, 64], 0), o = be.full('bf16', [1, 4, 2, 32], 0), lse = be.full('f32', [1, 2, 4], 0);
    try { be.attentionQkvBackward(qkv, o, lse, o, null, false, 0.125, 0, 0); } finally { qkv.dispose(); o.dispose(); lse.dispose(); }
  });
  // The cache: the same allocation sizes over and over reach cudaMalloc only the first time.
  {
    const info0 = be.info() as Record<string, number>;
    const x = be.full('bf16', [4096, 1000], 1);
    for (let i = 0; i < 50; i++) be.clone(x).dispose();
    x.dispose();
    for (let i = 0; i < 50; i++) be.full('bf16', [4096, 1000], 2).dispose();
    const info1 = be.info() as Record<string, number>;
    const grew = info1.allocatorMallocs - info0.allocatorMallocs;
    const pass = grew <= 2;
    console.log(`${pass ? 'PASS' : 'FAIL'} runtime allocator cache: ${grew} cudaMalloc calls for 101 allocations of one size`);
    out.push({ name: 'allocator cache', family: 'runtime', dtype: '-', reference: '-', pass, errors: {}, note: `${grew} mallocs` });
  }
  return out;
}

// The model's attention shapes benchmarked for every variant: [name, B, H, Tq, Tk, D, causal].
const attentionShapes: [string, number, number, number, number, number, boolean][] = [
  ['vit_L14_b64', 64, 16, 257, 257, 64, false],
  ['abstractor_b64', 64, 16, 64, 321, 64, false],
  ['llama7b_b4_t2048_causal', 4, 32, 2048, 2048, 128, true],
  ['llama7b_b16_t512_causal', 16, 32, 512, 512, 128, true],
];
// The default forward is auto (wgmma at D = 128 on an H100, w4s elsewhere); w4 was the only one before session 5,
// w8, w8s and m2 were slower everywhere in session 5's H100 run (bench/results/gpu-2026-11-26-h100-s5) and are
// only checked, not timed.
const attentionFwdVariants = ['w4', 'w4s', 'wgmma-overlap', 'wgmma-ws', 'wgmma-ws-overlap', 'wgmma-ws-tma', 'wgmma-ws-tma-overlap',
  'wgmma-wsp', 'wgmma-wsp-overlap'];

// LoRA fwd+bwd against the frozen linear on each path (check.mjs --bench-lora runs these alone).
function loraBenches(be: Be, tryb: TryBench): void {
  tryb(() => loraBench(be, 8192, 4096, 4096, 8));
  tryb(() => loraBench(be, 8192, 4096, 4096, 8, 'thin'));
  tryb(() => loraBench(be, 8192, 4096, 11008, 8));
  tryb(() => loraBench(be, 8192, 4096, 11008, 8, 'thin'));
  tryb(() => loraBench(be, 8192, 4096, 4096, 64));
  // the tensor-core thin products (session 12), and stage 2's LoRA input dropout (0.05) on each path
  tryb(() => loraBench(be, 8192, 4096, 4096, 8, 'mma'));
  tryb(() => loraBench(be, 8192, 4096, 11008, 8, 'mma'));
  tryb(() => loraBench(be, 8192, 4096, 4096, 16, 'mma'));
  tryb(() => loraBench(be, 8192, 4096, 4096, 16));
  for (const v of ['', 'thin', 'mma', 'fused']) tryb(() => loraBench(be, 4096, 4096, 4096, 8, v, 0.05));
  // the GEMM with the rank-r update in its kernel always (OWLET_LORA_GEMM=fused, session 18) and never (=cublas: the
  // default until then; unset, the first call of a shape times both)
  // (and with gy B, gyᵀ xa in one pass over gy: OWLET_LORA_GY=pass, alone and with the fused GEMM)
  // (fused3: the fused GEMM with session 18's 3-stage ring, OWLET_LORA_GEMM_STAGES=3; session 19 made it 4)
  // (cublas+gycublas: cuBLAS for everything, the default until session 18)
  // (fusedwarp: each warp storing its own rows of C, OWLET_LORA_GEMM_EPILOGUE=warp)
  // (fusedl: the fused GEMM computing its own L, x Aᵀ and gy B, OWLET_LORA_GEMM=fused-l, session 20)
  // (+overlap: its rounds of C but the first during the next tile's k-steps, OWLET_LORA_GEMM_EPILOGUE=overlap; +ring:
  // all through the stage of the tile's last k-step, =ring; session 21; +split: the last round split by k-steps,
  // OWLET_LORA_GEMM_SPLIT=1, session 22; ownl+ring+split: the default those would make, the OWN_L kernels timed
  // against the rest on each shape's first call, OWLET_LORA_GEMM_OWN_L=1, session 23)
  for (const v of ['fused', 'fusedl', 'fusedl+ring+split', 'ownl+ring+split', 'fused+ring+split', 'fused+ring', 'fusedl+ring',
    'fused+overlap', 'fusedl+overlap', 'fused3', 'fusedwarp', 'cublas', 'gypass', 'fused+gypass', 'cublas+gycublas']) {
    tryb(() => loraBench(be, 8192, 4096, 4096, 8, v));
    tryb(() => loraBench(be, 8192, 4096, 11008, 8, v));
    tryb(() => loraBench(be, 8192, 4096, 4096, 16, v));
  }
  for (const v of ['gypass', 'fused+gypass']) tryb(() => loraBench(be, 4096, 4096, 4096, 8, v, 0.05));
}

type TryBench = (f: () => BenchResult | BenchResult[]) => void;

// A runner of benchmarks that appends to `res` as it goes and calls `saved` after each result, so a run cut short
// keeps what it measured; a benchmark that throws prints why and the next one runs.
function benchRunner(res: BenchResult[], saved: () => void): TryBench {
  return (f) => {
    try {
      const r = f();
      for (const x of Array.isArray(r) ? r : [r]) {
        res.push(x);
        saved();
        console.log(`BENCH ${x.name} ${x.ms.toFixed(3)} ms${x.tflops ? ` ${x.tflops} TFLOP/s` : ''}${x.gbps ? ` ${x.gbps} GB/s` : ''}` +
          `${x.extra ? ' ' + JSON.stringify(x.extra) : ''}`);
      }
    } catch (e) { console.log(`BENCH failed: ${(e as Error).message}`); }
  };
}

function runBench(be: Be, res: BenchResult[], saved: () => void): void {
  const tryb = benchRunner(res, saved);
  tryb(() => gemmBench(be, 8192));
  tryb(() => gemmShapesBench(be));
  tryb(() => gemmNewShapesBench(be));
  for (const [name, B, H, Tq, Tk, D, causal] of attentionShapes)
    tryb(() => attentionBench(be, name, B, H, Tq, Tk, D, causal));
  tryb(() => attentionBench(be, 'fa_ref_b8_h16_t4096_d128_causal', 8, 16, 4096, 4096, 128, true));
  // The ViT's attention from its fused q|k|v output at the stage-1 batch: packed (attentionQkv) against split +
  // attention + concat (what each of the 24 layers did before), fwd and fwd+bwd.
  tryb(() => attentionQkvBench(be, 'vit_L14_b16_qkv_packed_vs_split', 16, 16, 257, 64));
  tryb(() => attentionBench(be, 'vit_L14_b64', 64, 16, 257, 257, 64, false, { OWLET_ATTN_BWD_WARPS: '8' }));
  tryb(() => attentionBench(be, 'llama7b_b4_t2048_causal', 4, 32, 2048, 2048, 128, true, { OWLET_ATTN_BWD_WARPS: '4' }));
  // The forward's tile shapes (OWLET_ATTN_FWD; the backward is the default in all of them).
  for (const fwd of attentionFwdVariants)
    for (const [name, B, H, Tq, Tk, D, causal] of attentionShapes)
      tryb(() => attentionBench(be, name, B, H, Tq, Tk, D, causal, { OWLET_ATTN_FWD: fwd }));
  // (OWLET_ATTN_BWD=br64 was no faster in session 5's run: checked, not timed.) At the long-sequence reference shape
  // (default: wgmma) w4, wgmma-overlap, wgmma-ws (warp-specialised), wgmma-ws-overlap, their TMA and persistent forms.
  for (const fwd of ['w4', 'wgmma-overlap', 'wgmma-ws', 'wgmma-ws-overlap', 'wgmma-ws-tma', 'wgmma-ws-tma-overlap', 'wgmma-wsp', 'wgmma-wsp-overlap'])
    tryb(() => attentionBench(be, 'fa_ref_b8_h16_t4096_d128_causal', 8, 16, 4096, 4096, 128, true, { OWLET_ATTN_FWD: fwd }));
  // The mma.sync backward (OWLET_ATTN_BWD=mma, the default until session 5) behind the default forward; and both
  // kernels of before session 5 together (w4 + mma).
  for (const [name, B, H, Tq, Tk, D, causal] of attentionShapes) {
    tryb(() => attentionBench(be, name, B, H, Tq, Tk, D, causal, { OWLET_ATTN_BWD: 'mma' }));
    tryb(() => attentionBench(be, name, B, H, Tq, Tk, D, causal, { OWLET_ATTN_FWD: 'w4', OWLET_ATTN_BWD: 'mma' }));
  }
  tryb(() => attentionBench(be, 'fa_ref_b8_h16_t4096_d128_causal', 8, 16, 4096, 4096, 128, true, { OWLET_ATTN_BWD: 'mma' }));
  // The causal kernels' block order (native/src/cuda/block_order.h, session 14: the longest tiles of a section of
  // heads first) against launch order (OWLET_ATTN_ORDER=0), at the LLaMA shapes, stage 2's 2 × 2048 and the long
  // reference; the variants chosen by timing are those of the default order's first call (tuned once per shape).
  const causalShapes: typeof attentionShapes = [...attentionShapes.filter((s) => s[6]),
    ['llama7b_b2_t2048_causal', 2, 32, 2048, 2048, 128, true], ['fa_ref_b8_h16_t4096_d128_causal', 8, 16, 4096, 4096, 128, true]];
  tryb(() => attentionBench(be, 'llama7b_b2_t2048_causal', 2, 32, 2048, 2048, 128, true));
  for (const [name, B, H, Tq, Tk, D, causal] of causalShapes)
    tryb(() => attentionBench(be, name, B, H, Tq, Tk, D, causal, { OWLET_ATTN_ORDER: '0' }));
  // Since session 17 heads of fewer than 8 tiles keep launch order (attention.cu block_sections: at B16 T512 the
  // block order lost 12% of the forward on the H200): B16 T512 and stage 1's B16 T256 in the 5 sections the order
  // took there, with the default forward (wgmma-wsp) and with wgmma-ws, to keep measuring that rule.
  for (const [name, B, Tq] of [['llama7b_b16_t512_causal', 16, 512], ['llama7b_b16_t256_causal', 16, 256]] as const) {
    if (Tq === 256) tryb(() => attentionBench(be, name, B, 32, Tq, Tq, 128, true));  // (B16 T512's default line is above)
    tryb(() => attentionBench(be, name, B, 32, Tq, Tq, 128, true, { OWLET_ATTN_ORDER: '5' }));
    tryb(() => attentionBench(be, name, B, 32, Tq, Tq, 128, true, { OWLET_ATTN_FWD: 'wgmma-ws' }));
    tryb(() => attentionBench(be, name, B, 32, Tq, Tq, 128, true, { OWLET_ATTN_FWD: 'wgmma-ws', OWLET_ATTN_ORDER: '5' }));
  }
  // Stage 2's 2 × 2048 through the warp-specialised forward's cp.async, TMA and persistent forms (session 15).
  for (const fwd of ['wgmma-ws', 'wgmma-ws-tma', 'wgmma-wsp', 'wgmma-wsp-overlap'])
    tryb(() => attentionBench(be, 'llama7b_b2_t2048_causal', 2, 32, 2048, 2048, 128, true, { OWLET_ATTN_FWD: fwd }));
  // The persistent backward (OWLET_ATTN_BWD=wgmma-p, session 15) at the causal shapes, behind the persistent forward
  // and alone (behind the tuned forward).
  for (const [name, B, H, Tq, Tk, D, causal] of causalShapes) {
    // (and the warp-specialised backward, OWLET_ATTN_BWD=wgmma-ws, session 18)
    tryb(() => attentionBench(be, name, B, H, Tq, Tk, D, causal, { OWLET_ATTN_BWD: 'wgmma-ws' }));
    tryb(() => attentionBench(be, name, B, H, Tq, Tk, D, causal, { OWLET_ATTN_BWD: 'wgmma-p' }));
    tryb(() => attentionBench(be, name, B, H, Tq, Tk, D, causal, { OWLET_ATTN_FWD: 'wgmma-wsp', OWLET_ATTN_BWD: 'wgmma-p' }));
  }
  // dQ by bulk reductions instead of atomics (OWLET_ATTN_BWD=wgmma-bulk, session 8) at every shape.
  for (const [name, B, H, Tq, Tk, D, causal] of attentionShapes)
    tryb(() => attentionBench(be, name, B, H, Tq, Tk, D, causal, { OWLET_ATTN_BWD: 'wgmma-bulk' }));
  // The Hopper forward and backward with one warpgroup (64 query rows, 64 keys) per block at D = 64 (wgmma1, session
  // 7): the backward alone behind the default forward, the forward alone, and both.
  for (const [name, B, H, Tq, Tk, D, causal] of attentionShapes) {
    if (D !== 64) continue;
    tryb(() => attentionBench(be, name, B, H, Tq, Tk, D, causal, { OWLET_ATTN_BWD: 'wgmma1' }));
    tryb(() => attentionBench(be, name, B, H, Tq, Tk, D, causal, { OWLET_ATTN_FWD: 'wgmma1' }));
    tryb(() => attentionBench(be, name, B, H, Tq, Tk, D, causal, { OWLET_ATTN_FWD: 'wgmma1', OWLET_ATTN_BWD: 'wgmma1' }));
    // wgmma1 with the 257th key (321st at the abstractor) in the last key block (session 14)
    tryb(() => attentionBench(be, name, B, H, Tq, Tk, D, causal, { OWLET_ATTN_BWD: 'wgmma1-keys' }));
    // The 257th token / 321st key always through attention_tail.cuh instead of whole tiles (session 8's kernels; the
    // default since 2026-11-27 leaves the choice to autotuning), default kernels and wgmma1.
    tryb(() => attentionBench(be, name, B, H, Tq, Tk, D, causal, { OWLET_ATTN_TAIL: '1' }));
    tryb(() => attentionBench(be, name, B, H, Tq, Tk, D, causal, { OWLET_ATTN_FWD: 'wgmma1', OWLET_ATTN_BWD: 'wgmma1', OWLET_ATTN_TAIL: '1' }));
    // The query-major backward where Tq <= 64 (the abstractor; session 8), and at batch 2 (its keys split in ranges).
    if (Tq <= 64) {
      tryb(() => attentionBench(be, name, B, H, Tq, Tk, D, causal, { OWLET_ATTN_BWD: 'wgmma-q' }));
      tryb(() => attentionBench(be, 'abstractor_b2', 2, H, Tq, Tk, D, causal));
      tryb(() => attentionBench(be, 'abstractor_b2', 2, H, Tq, Tk, D, causal, { OWLET_ATTN_BWD: 'wgmma-q' }));
    }
  }
  loraBenches(be, tryb);
  tryb(() => bandwidthBench(be));
  tryb(() => hostVsDeviceBench(be));
}

// The peer's numbers from the files one call wrote (peer_torch.json, and peer_torch_k.json with run.sh's PEER_RUNS):
// each file, or where the peer was cut short before writing it, the "key: value" lines its log printed (peer.log,
// peer_k.log); several runs merged into each number's median (peer-median.ts).
function peerNumbers(paths: string[]): PeerRun {
  const runs = paths.flatMap((path): PeerRun[] => {
    try { return [JSON.parse(readFileSync(path, 'utf8')) as PeerRun]; } catch { /* the log instead */ }
    const log = path.replace(/peer_torch(_\d+)?\.json$/, 'peer$1.log'), p: PeerRun = {};
    try {
      for (const line of readFileSync(log, 'utf8').split('\n')) {
        const m = /^([A-Za-z0-9_]+): (.*)$/.exec(line);
        if (!m) continue;
        try { p[m[1]] = JSON.parse(m[2].replace(/'/g, '"')); } catch { p[m[1]] = m[2]; }
      }
      console.log(`(no ${path}; peer numbers read from ${log})`);
      return [p];
    } catch { console.log(`(no peer results at ${path})`); return []; }
  });
  if (runs.length > 1) console.log(`(peer: the median of ${runs.length} runs in this call)`);
  return runs.length ? medianPeer(runs) : {};
}

// Ratios of owlet's numbers to the peer's (both from the same call).
function summary(owletPath: string, p: PeerRun): void {
  let o: { bench?: BenchResult[]; device?: Record<string, unknown>; attentionTuned?: string } = {};
  try { o = JSON.parse(readFileSync(owletPath, 'utf8')); } catch { console.log(`(no owlet results at ${owletPath})`); }
  const bench = o.bench ?? [];
  if (!bench.length) console.log('(owlet recorded no benchmarks)');
  const ob = new Map(bench.map((b) => [b.name, b]));
  console.log(`device: ${o.device?.device ?? '?'}`);
  const g = ob.get('gemm_bf16_8192');
  if (g) console.log(`gemm 8192³ bf16: owlet ${g.tflops} TFLOP/s, peer ${p.gemm_bf16_8192_tflops ?? '?'}`);
  for (const name of ['vit_L14_b64', 'abstractor_b64', 'abstractor_b2', 'llama7b_b4_t2048_causal', 'llama7b_b16_t512_causal',
    'fa_ref_b8_h16_t4096_d128_causal']) {
    // Every variant of the shape: the name plus suffixes such as _bwd4w, _fwdm2, _notail (harness.ts envSuffix).
    const suffixes = bench.map((x) => x.name)
      .filter((n) => n.startsWith(name) && /^(_(fwd|bwd)[A-Za-z0-9-]+|_notail)*$/.test(n.slice(name.length)))
      .map((n) => n.slice(name.length));
    for (const suffix of suffixes) {
    const b = ob.get(name + suffix)?.extra as Record<string, number> | undefined;
    const pr = p[`sdpa_${name}`] as Record<string, number> | undefined;
    if (!b) continue;
    const r = (x?: number, y?: number) => (x && y ? `×${(x / y).toFixed(2)}` : '');
    console.log(`attention ${name}${suffix}: fwd ${b.fwd_tflops} TFLOP/s (peer ${pr?.fwd_tflops ?? '?'}) ${r(b.fwd_tflops, pr?.fwd_tflops)}; ` +
      `fwd+bwd ${b.fwdbwd_tflops} (peer ${pr?.fwdbwd_tflops ?? '?'}) ${r(b.fwdbwd_tflops, pr?.fwdbwd_tflops)}`);
    }
  }
  if (o.attentionTuned) console.log(`attention variants chosen by timing (the unsuffixed lines): ${o.attentionTuned}`);
  for (const b of bench.filter((x) => x.name.startsWith('lora_'))) {
    const e = b.extra as Record<string, number>;
    const pr = p[b.name.replace(/_(thin|mma)$/, '')] as Record<string, number> | undefined;
    console.log(`${b.name}: owlet LoRA/frozen ${e.overhead}× (${e.lora_fwdbwd_ms} vs ${e.frozen_linear_fwdbwd_ms} ms), ` +
      `peer ${pr?.overhead ?? '?'}× (${pr?.lora_eager_fwdbwd_ms ?? '?'} vs ${pr?.frozen_linear_fwdbwd_ms ?? '?'} ms)`);
  }
  for (const b of bench.filter((x) => x.gbps)) console.log(`${b.name}: ${b.gbps} GB/s (${b.ms.toFixed(3)} ms)`);
  for (const b of bench.filter((x) => /^gemm_.*_M\d+/.test(x.name))) {
    const e = b.extra as Record<string, number>;
    console.log(`${b.name}: ${e.heuristic_tflops} TFLOP/s with the heuristic's first algorithm, ${e.tuned_tflops} tuned`);
  }
  for (const b of bench.filter((x) => x.name.startsWith('gemm_new_shapes'))) {
    const e = b.extra as Record<string, number>;
    console.log(`${b.name} (24 new row counts): first calls ${e.first_calls_ms_off} ms untuned, ${e.first_calls_ms_exact} timing each shape, ` +
      `${e.first_calls_ms_bucket} timing per bucket; steady ${e.steady_ms_off} / ${e.steady_ms_exact} / ${e.steady_ms_bucket} ms per call of each, summed`);
  }
}

// The trainer benchmark's steps against the peer's whole steps of the same shapes (e2e_stage{S}_B{B}_T{T}): the
// issue's "stage steps ≥ 1.5× the peer's tokens/s with no more memory", per shape.
function steps(trainPath: string, p: PeerRun): void {
  let rows: { stage: number; layers?: number; batch: number; tokens: number; step_ms: number; peak_gib: number;
    hw_flops_util_vs_989?: number; counted_tokens?: string }[] = [];
  try { rows = (JSON.parse(readFileSync(trainPath, 'utf8')) as { bench?: typeof rows }).bench ?? []; } catch {
    console.log(`(no trainer benchmark at ${trainPath})`);
  }
  for (const r of rows) {
    if (r.counted_tokens) continue;  // (a variant of the 8 × 512 shape; the peer has no such line)
    const pe = p[`e2e_stage${r.stage}_B${r.batch}_T${r.tokens}`] as
      { step_ms?: number; mem_gb?: number; hw_flops_util_vs_989?: number } | undefined;
    const ratio = pe?.step_ms ? ` ×${(pe.step_ms / r.step_ms).toFixed(2)} the peer's tokens/s` : '';
    console.log(`steps stage ${r.stage} ${r.batch} × ${r.tokens} (${r.layers ?? '?'} LLaMA layers): owlet ${r.step_ms} ms, ` +
      `peer ${pe?.step_ms ?? '?'} ms${ratio}; peak ${r.peak_gib} GiB, peer ${pe?.mem_gb ?? '?'} GiB; utilisation ` +
      `${r.hw_flops_util_vs_989 ?? '?'}, peer ${pe?.hw_flops_util_vs_989 ?? '?'}`);
  }
}

function main(): number {
  for (const [f, run] of [['--steps', steps], ['--summary', summary]] as const) {
    if (!flag(f)) continue;
    const i = argv.indexOf(f);
    run(argv[i + 1], peerNumbers(argv.slice(i + 2).filter((a) => !a.startsWith('--'))));
    return 0;
  }
  if (flag('--profile-lora')) {
    // The kernels behind one LoRA forward + backward, for run.sh's ncu-lora stage: stage 2's shape with its input
    // dropout (M4096 N4096 r8 p 0.05, 1.77× the frozen linear on session 12's H200) and the no-dropout bench shape
    // (M8192), each after the frozen linear's two GEMMs; the default path (cuBLAS thin products), then OWLET_LORA=mma,
    // then the fused GEMM with the one pass over gy (OWLET_LORA_GEMM=fused, OWLET_LORA_GY=pass).
    // (PROFILE_LORA="v1,v2" and PROFILE_LORA_M=8192 narrow it: 'default' for the unset variant)
    const be = cuda();
    const variants = process.env.PROFILE_LORA?.split(',').map((v) => (v === 'default' ? '' : v)) ?? ['', 'mma', 'fused+gypass'];
    const shapes = ([[4096, 0.05], [8192, 0]] as const).filter(([M]) => !process.env.PROFILE_LORA_M || String(M) === process.env.PROFILE_LORA_M);
    for (const variant of variants)
      for (const [M, p] of shapes) {
        console.log(`profile: lora M${M} K4096 N4096 r8 dropout ${p} ${variant || 'default'}: frozen matmul x2, loraForward, loraBackward`);
        loraOnce(be, M, 4096, 4096, 8, variant, p);
      }
    return 0;
  }
  if (flag('--profile-lora-gemm')) {
    // The fused GEMM alone under Nsight Compute (run.sh's ncu-lora-gemm: -k lora_gemm_kernel): the 4-stage ring,
    // then the 3-stage one, at the no-dropout bench shape (its forward's kernel and its dx's), stage 2's shape with
    // its dropout (the forward's kernel and dx's with the mask on its update), and the warp epilogue; after the first,
    // the kernels computing their own L (session 20), then with the ring's epilogue and the last round split (session
    // 22), then both with the ring's and the overlapped epilogues (session 21) — the newest first after the reference,
    // as ncu's limit may cut the list short.
    const be = cuda();
    for (const [variant, M, p] of [['fused', 8192, 0], ['fusedl', 8192, 0], ['fusedl+ring+split', 8192, 0],
      ['fused+ring', 8192, 0], ['fusedl+ring', 8192, 0], ['fused+overlap', 8192, 0], ['fusedl+overlap', 8192, 0], ['fusedwarp', 8192, 0],
      ['fused', 4096, 0.05], ['fused3', 8192, 0]] as const) {
      console.log(`profile: lora M${M} K4096 N4096 r8 dropout ${p} ${variant}: frozen matmul x2, loraForward, loraBackward`);
      loraOnce(be, M, 4096, 4096, 8, variant, p);
    }
    return 0;
  }
  if (flag('--bench-lora')) {  // the LoRA benchmarks alone (a short device call)
    const be = cuda();
    loraBenches(be, benchRunner([], () => {}));
    return 0;
  }
  if (flag('--profile-attention')) {
    const be = cuda();
    // (the first two backward launches are the default D = 128 kernel's and wgmma-ws's: run.sh's ncu-bwd takes those)
    const envs = [{}, { OWLET_ATTN_BWD: 'wgmma-ws' }, { OWLET_ATTN_FWD: 'wgmma-ws' }, { OWLET_ATTN_FWD: 'wgmma-ws-tma' }, { OWLET_ATTN_FWD: 'wgmma-wsp', OWLET_ATTN_BWD: 'wgmma-p' },
      { OWLET_ATTN_BWD: 'mma' }, { OWLET_ATTN_FWD: 'wgmma1', OWLET_ATTN_BWD: 'wgmma1' }, { OWLET_ATTN_TAIL: '1' }];
    for (const [label, B, H, T, D, causal] of [['llama7b_b4_t2048_causal', 4, 32, 2048, 128, true],
      ['vit_L14_b64', 64, 16, 257, 64, false]] as const) {
      for (const env of envs as Record<string, string>[]) {
        console.log(`profile: ${label} fwd+bwd ${JSON.stringify(env)}`);
        attentionOnce(be, B, H, T, T, D, causal, env);
      }
    }
    return 0;
  }
  const outDir = process.env.OUT || 'gpu-out';
  mkdirSync(outDir, { recursive: true });
  const report: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, argv };
  const cpuBe = cpu();
  report.cpu = cpuBe.info();
  let cudaBe: Be | null = null;
  try {
    cudaBe = cuda();
    report.device = cudaBe.info();
    console.log(`CUDA backend: ${JSON.stringify(report.device)}`);
  } catch (e) {
    const msg = (e as Error).message;
    report.cudaLoadError = msg;
    if (!flag('--cpu-only')) {
      console.log(`FAIL the CUDA backend cannot be used: ${msg}`);
      writeFileSync(join(outDir, 'owlet_cuda.json'), JSON.stringify(report, null, 1));
      return 1;
    }
    console.log(`(as expected without a GPU) the CUDA backend cannot be used: ${msg}`);
  }
  if (flag('--cpu-only')) cudaBe = null;
  const mem0 = cudaBe ? cudaBe.memory().bytesInUse : 0;
  const results = checkCases(cpuBe, cudaBe);
  if (cudaBe) {
    results.push(...checkRuntime(cudaBe));
    cudaBe.synchronize();
    const leaked = cudaBe.memory().bytesInUse - mem0;
    // A case that threw half-way cannot dispose what it had made: then a leak is reported but not counted.
    const aborted = results.some((r) => r.aborted);
    const pass = leaked === 0 || aborted;
    console.log(`${pass ? 'PASS' : 'FAIL'} runtime no device memory left held by the checks (${leaked} bytes` +
      `${aborted && leaked ? '; some cases aborted, so not counted' : ''})`);
    results.push({ name: 'no leaks', family: 'runtime', dtype: '-', reference: '-', pass, errors: {}, note: `${leaked} bytes` });
  }
  report.cases = results;
  const failed = results.filter((r) => !r.pass).length, skipped = results.filter((r) => r.skipped).length;
  console.log(`${results.length - failed - skipped} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  const save = () =>
    writeFileSync(join(outDir, 'owlet_cuda.json'), JSON.stringify(report, (_k, v) => (v === Infinity ? 'Infinity' : v), 1));
  save();
  if (cudaBe && !flag('--no-bench') && !flag('--quick')) {
    const bench: BenchResult[] = [];
    report.bench = bench;
    runBench(cudaBe, bench, save);
  }
  if (cudaBe) {  // what the attention's autotuning chose for the shapes above (OWLET_ATTN_TUNE unset)
    report.attentionTuned = (cudaBe.info() as { attentionTuned?: string }).attentionTuned ?? '';
    console.log(`attention variants chosen by timing: ${report.attentionTuned || 'none'}`);
    save();
  }
  return failed ? 1 : 0;
}

process.exitCode = main();
