// The trainer on the GPU (issue 5/6), bundled by scripts/gpu/build-bundle.sh into .gpu/train-check.mjs and run by
// scripts/gpu/run.sh on the GPU machine:
//
//   1. owl-tiny: STEPS (default 4) stage-1 and stage-2 optimizer steps of the real trainer (buildModel's placement,
//      OwlTrainable, AdamW, clipping, 2 micro-batches per step) on cpu f32 (the reference), cuda f32 and cuda bf16;
//      the losses and gradient norms side by side, PASS/FAIL against TOL.trainF32 / TOL.trainBf16.
//   2. a stage-1 and a stage-2 step benchmark at the 7B sizes (configs/stage1-7b.yaml, stage2-7b.yaml) with LAYERS
//      (default 4) LLaMA layers and random weights, bf16 on cuda, at the PyTorch peer's shapes
//      (../shared/gpu/peer_torch.py: stage 1 16 × 256 tokens, one image each, ViT + abstractor train; stage 2
//      2 × 2048 and 8 × 512, LoRA r8 on q/v + queries + abstractor train): step time, tokens/s, images/s, peak
//      device memory, utilisation by the peer's formula, written to $OUT/train_bench.json (default gpu-out/, ignored).
//
//   node train-check.mjs <owl-tiny dir>              everything (needs a GPU)
//   node train-check.mjs <owl-tiny dir> --cpu-only   part 1 on the CPU only (the bundle's smoke test here)
//   node train-check.mjs <owl-tiny dir> --no-bench   part 1 only
//   node train-check.mjs <owl-tiny dir> --cpu-only --dry-bench   part 1, then part 2's code at owl-tiny sizes on the
//                                                    CPU in f32 (a quick run of the benchmark's code, not a benchmark)
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import type { Batch as DataBatch } from '../../lib/data/batch.ts';
import { MplugOwl, initTensor, paramSpecs, parseOwlConfig, seededRandom } from '../../lib/model/index.ts';
import { backendFor } from '../../lib/native.ts';
import { deviceTimeline, opProfile, opProfileAvailable, resetOpProfile, setOpProfiling, type OpStat } from '../../lib/op-profile.ts';
import { tensor, type Tensor } from '../../lib/tensor/index.ts';
import { modelSizes, validateConfig } from '../../lib/train/config.ts';
import type { OwletConfig } from '../../lib/train/config-schema.ts';
import { probeCuda, resolveDevice } from '../../lib/train/device.ts';
import { PRESETS } from '../../lib/train/model-sizes.ts';
import { OwlOptimizer, OwlTrainable, buildModel, trainBatch, type OwlTrainBatch } from '../../lib/train/owl-components.ts';
import { applyStage, decayGroups } from '../../lib/train/param-groups.ts';
import { computeDtype, place, storageDtype } from '../../lib/train/precision.ts';
import { makeSchedule } from '../../lib/train/schedule.ts';
import { withEnv } from './harness.ts';
import { Trainer } from '../../lib/train/trainer.ts';
import type { DataStream, Json } from '../../lib/train/types.ts';
import { tinyConfig, trainTinySteps, type StepsResult } from '../../test/helpers/owl-steps.ts';
import { TOL } from '../../test/helpers/tolerances.ts';

const argv = process.argv.slice(2);
const FX = argv.find((a) => !a.startsWith('--'));
const cpuOnly = argv.includes('--cpu-only');
const dry = argv.includes('--dry-bench');
const STEPS = Number(process.env.STEPS ?? 4);
const LAYERS = Number(process.env.LAYERS ?? 4);
const outDir = process.env.OUT || 'gpu-out';
let failed = 0;
const report: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, steps: STEPS, layers: LAYERS };
const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-6);
const save = () => { mkdirSync(outDir, { recursive: true }); writeFileSync(join(outDir, 'train_bench.json'), JSON.stringify(report, null, 1)); };

// ---- 1. owl-tiny: the trainer on cpu f32, cuda f32 and cuda bf16 ----

async function tinyRun(stage: 1 | 2, device: string, dtype: 'f32' | 'bf16'): Promise<StepsResult> {
  const c = tinyConfig(FX!, stage, device, dtype);
  return trainTinySteps(buildModel(c, modelSizes(c), { env: {} }), c, FX!, STEPS);
}

async function tiny(cuda: string | null): Promise<void> {
  const out: Record<string, unknown>[] = [];
  report.tiny = out;
  for (const stage of [1, 2] as const) {
    const ref = await tinyRun(stage, 'cpu', 'f32');
    const runs: [string, StepsResult, typeof TOL.trainF32][] = [];
    if (cuda) {
      for (const dtype of ['f32', 'bf16'] as const) {
        try {
          runs.push([`${cuda} ${dtype}`, await tinyRun(stage, cuda, dtype), dtype === 'f32' ? TOL.trainF32 : TOL.trainBf16]);
        } catch (e) {
          failed++;
          console.log(`FAIL owl-tiny stage ${stage} ${cuda} ${dtype}: ${(e as Error).message}`);
        }
      }
      const kept = runs.find(([n]) => n.endsWith('bf16'))?.[1];
      if (kept) {
        for (const [name, variable, what] of OFF_SWITCHES) {
          sameWithout(stage, cuda, kept, await withEnv({ [variable]: '0' }, () => tinyRun(stage, cuda, 'bf16')), name, `${variable}=0, ${what}`);
        }
      }
    }
    console.log(`owl-tiny stage ${stage}, ${STEPS} steps × 2 micro-batches: loss (gradient norm) per step`);
    console.log(['step', 'cpu f32', ...runs.map(([n]) => n)].map((s) => s.padEnd(30)).join(''));
    for (let i = 0; i < STEPS; i++) {
      const cell = (r: StepsResult) => `${r.losses[i].toFixed(6)} (${r.gradNorms[i].toFixed(5)})`;
      console.log([String(i + 1), cell(ref), ...runs.map(([, r]) => `${cell(r)} ${rel(r.losses[i], ref.losses[i]).toExponential(1)}`)]
        .map((s) => s.padEnd(30)).join(''));
    }
    const falls = (r: StepsResult) => r.losses.every(Number.isFinite) && r.losses[STEPS - 1] < r.losses[0];
    const okRef = falls(ref);
    if (!okRef) failed++;
    console.log(`${okRef ? 'PASS' : 'FAIL'} owl-tiny stage ${stage} cpu f32: finite losses that fall (${ref.losses[0].toFixed(4)} → ${ref.losses[STEPS - 1].toFixed(4)})`);
    const entry: Record<string, unknown> = { stage, cpu_f32: { losses: ref.losses, gradNorms: ref.gradNorms, ms: ref.ms } };
    for (const [name, r, tol] of runs) {
      const lossErr = Math.max(...r.losses.map((l, i) => rel(l, ref.losses[i])));
      const normErr = Math.max(...r.gradNorms.map((g, i) => rel(g, ref.gradNorms[i])));
      const ok = falls(r) && lossErr < tol.rel && normErr < tol.rel * 5;
      if (!ok) failed++;
      console.log(`${ok ? 'PASS' : 'FAIL'} owl-tiny stage ${stage} ${name} vs cpu f32: loss ${lossErr.toExponential(2)} < ${tol.rel}, ` +
        `gradient norm ${normErr.toExponential(2)} < ${tol.rel * 5} (${tol.why}); step ${median(r.ms.slice(1)).toFixed(1)} ms`);
      entry[name.replace(/[: ]/g, '_')] = { losses: r.losses, gradNorms: r.gradNorms, ms: r.ms, lossErr, normErr, pass: ok };
    }
    out.push(entry);
  }
}

/** The bf16 trainer keeps its working copies between steps (AdamW rewrites them, lib/tensor/working-copies.ts);
 *  casting them at every forward instead must give the same numbers bit for bit. */
// The bf16 trainer's shortcuts that must not change a bit: [what the default does, its off switch, what off does].
const OFF_SWITCHES: [string, string, string][] = [
  ['working copies kept', 'OWLET_WORKING_COPIES', 'cast at each forward'],
  ['bf16 gradients of the trained weights', 'OWLET_LOWP_GRADS', 'cast to fp32 in the backward'],
  ['each step queued before the previous one is read', 'OWLET_PIPELINE', 'one step after another'],
];

function sameWithout(stage: number, cuda: string, on: StepsResult, off: StepsResult, name: string, offName: string): void {
  const hex = (a: ArrayLike<number>) => Buffer.from(Float32Array.from(a).buffer).toString('hex');
  const diff = [...on.weights.keys()].filter((k) => hex(on.weights.get(k)!) !== hex(off.weights.get(k)!));
  const ok = hex(on.losses) === hex(off.losses) && hex(on.gradNorms) === hex(off.gradNorms) && diff.length === 0;
  if (!ok) failed++;
  console.log(`${ok ? 'PASS' : 'FAIL'} owl-tiny stage ${stage} ${cuda} bf16 with ${name} (step ` +
    `${median(on.ms.slice(1)).toFixed(1)} ms) = ${offName} (${median(off.ms.slice(1)).toFixed(1)} ms): ` +
    `losses, gradient norms and trained weights bit for bit${diff.length ? `; ${diff.length} weights differ, first ${diff[0]}` : ''}`);
}

// ---- 2. 7B-sized steps (LAYERS LLaMA layers), bf16 ----

/** Random weights fast (the 7B sizes hold ~1.5e9 values at LAYERS=4; initParams draws ~20M/s in JS): normal weights
 *  are tiled from one pool of ~1e6 draws (a prime count, so rows do not repeat in step) at a random offset per tensor
 *  and uploaded at once; the rest as initParams makes them. Then placed as buildModel places them. */
function benchParams(config: OwletConfig, device: string): MplugOwl {
  const dtype = computeDtype(device, 'bf16');
  const c = parseOwlConfig(modelSizes(config));
  const r = seededRandom(config.run.seed);
  const pool = new Float32Array(1_000_003);
  for (let i = 0; i < pool.length; i++) pool[i] = 0.02 * Math.sqrt(-2 * Math.log(Math.max(r(), 1e-12))) * Math.cos(2 * Math.PI * r());
  const prec = { train: config.stage.train, dtype };
  const params = new Map<string, Tensor>();
  for (const s of paramSpecs(c)) {
    let t: Tensor;
    if (s.init === 'normal') {
      const n = s.shape.reduce((a, b) => a * b, 1), data = new Float32Array(n);
      for (let o = 0, at = Math.floor(r() * pool.length); o < n; at = 0) {
        const k = Math.min(n - o, pool.length - at);
        data.set(pool.subarray(at, at + k), o);
        o += k;
      }
      t = tensor(data, s.shape, { device });
      t.name = s.name;
    } else {
      t = initTensor(s, r, c.initializerRange);
    }
    params.set(s.name, place(t, device, storageDtype(s.name, prec)));
  }
  const owl = new MplugOwl(c, params, null);
  if (dtype !== 'f32') owl.computeDtype = dtype;
  return owl;
}

function benchConfig(stage: 1 | 2): OwletConfig {
  const sizes = dry ? JSON.parse(readFileSync(join(FX!, 'config.json'), 'utf8'))
    : structuredClone(PRESETS['mplug-owl-llama-7b']) as unknown as { text_config: { num_hidden_layers: number } };
  if (!dry) sizes.text_config.num_hidden_layers = LAYERS;
  return validateConfig({
    run: { out_dir: 'unused', seed: 5, device: 'cuda' },
    model: { sizes, dtype: 'bf16' },
    stage: stage === 1 ? { id: 1, train: ['vision', 'queries', 'abstractor'] }
      : { id: 2, train: ['lora', 'queries', 'abstractor'], lora: { r: 8, alpha: 32, dropout: 0.05, targets: ['q_proj', 'v_proj'] } },
    data: { train: [{ path: 'unused.jsonl' }], max_length: 255, micro_batch: 16 },
    optimizer: { lr: 1e-4, betas: [0.9, 0.98], weight_decay: 0.1 },
    schedule: { type: 'constant' },
    training: { steps: 100, clip: 1 },
  });
}

/** B samples of T ids: one image (65 media ids) then random text, every text token a target (captions, as the
 *  peer's labels). Each next() builds the micro-batch as the loader hands it over: pixels uploaded every time. The
 *  same batch every step; with `vary`, a different number of counted tokens each step (the prompt mask cuts 1 to L/2
 *  positions off each sample's end), as real data gives: new row counts for the LM head's GEMMs every step. */
class SyntheticStream implements DataStream<OwlTrainBatch> {
  private readonly b: DataBatch;
  private readonly r: () => number;
  constructor(private readonly device: string, B: number, T: number, M: number, V: number, seed: number, private readonly vary = false,
    res = 224, private readonly pixelDtype: 'f32' | 'bf16' = 'f32') {
    const r = seededRandom(seed), L = T - 1;
    this.r = r;
    const ids = new Int32Array(B * T), nonMedia = new Int32Array(B * L), ones = new Int32Array(B * L).fill(1);
    for (let s = 0; s < B; s++) {
      for (let i = 0; i < T; i++) ids[s * T + i] = i < M ? -1 : 3 + Math.floor(r() * (V - 3));
      for (let i = 0; i < L; i++) nonMedia[s * L + i] = ids[s * T + i + 1] >= 0 ? 1 : 0;
    }
    const pixels = new Float32Array(B * 3 * res * res);
    for (let i = 0; i < pixels.length; i++) pixels[i] = 2 * r() - 1;
    const targets = nonMedia.reduce((a, v) => a + v, 0);
    this.b = { batchSize: B, maxLength: L, resolution: res, inputIds: ids, numImages: new Int32Array(B).fill(1), nonPaddingMask: ones,
      nonMediaMask: nonMedia, promptMask: ones, pixelValues: pixels, sampleIds: Array.from({ length: B }, (_, i) => `synthetic:${i}`),
      labelCount: targets, tokenCount: B * T };
  }
  async next(): Promise<OwlTrainBatch> {
    if (!this.vary) return trainBatch(this.b, this.device, this.pixelDtype);
    const { batchSize: B, maxLength: L, nonMediaMask } = this.b, prompt = new Int32Array(B * L).fill(1);
    for (let s = 0; s < B; s++) prompt.fill(0, (s + 1) * L - 1 - Math.floor(this.r() * (L / 2)), (s + 1) * L);
    const labelCount = nonMediaMask.reduce((a, v, i) => a + v * prompt[i], 0);
    return trainBatch({ ...this.b, promptMask: prompt, labelCount }, this.device, this.pixelDtype);
  }
  position(): Json { return null; }
  restore(): void {}
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[s.length >> 1] : NaN; };

async function benchCase(owl: MplugOwl, config: OwletConfig, device: string, B: number, T: number, vary = false): Promise<Record<string, unknown>> {
  const be = backendFor(device);
  const model = new OwlTrainable(owl, config.run.seed);
  const trainable = applyStage(model as never, { train: config.stage.train, lora: config.stage.lora });
  const optimizer = new OwlOptimizer(decayGroups(trainable, config.optimizer.weight_decay, config.optimizer.no_decay), config.optimizer);
  const trainer = new Trainer({ model, trainable, data: new SyntheticStream(device, B, T, owl.config.mediaTokenLength, owl.config.text.vocabSize, 9, vary, owl.config.vision.imageSize,
    owl.computeDtype === 'bf16' ? 'bf16' : 'f32'), optimizer,
    schedule: makeSchedule({ type: 'constant', lr: config.optimizer.lr, warmupSteps: 0, totalSteps: 100 }), totalSteps: 100,
    seed: 1, clip: 1 });
  try {
    const warm = 2, perRound = 4;
    for (let i = 0; i < warm; i++) await trainer.trainStep();
    be.synchronize();
    be.resetPeakMemory(device);
    // Rounds of steps one after another (trainStep: the host reads each step's results before queueing the next) and
    // queued ahead (trainSteps, what run() does on a GPU: the next step's forward and backward are queued before the
    // results are read), alternated so that drift between them shows. Per round: V8's garbage collection (the 'gc'
    // performance entries, which arrive only when the event loop turns, each attributed to a round by its start time)
    // and the device allocator's new cudaMallocs.
    const gcs: { start: number; ms: number }[] = [];
    const gcObs = new PerformanceObserver((list) => { for (const e of list.getEntries()) gcs.push({ start: e.startTime, ms: e.duration }); });
    gcObs.observe({ entryTypes: ['gc'] });
    const mallocsNow = () => Number((be.info() as { allocatorMallocs?: number }).allocatorMallocs ?? 0);
    const losses: number[] = [], hostMs: number[] = [], queueMs: number[] = [];
    const rounds: { mode: 'one_by_one' | 'queued_ahead'; start: number; end: number; ms: number; mallocs: number }[] = [];
    try {
      for (const mode of ['one_by_one', 'queued_ahead', 'one_by_one', 'queued_ahead'] as const) {
        const m0 = mallocsNow(), start = performance.now();
        const got = [];
        if (mode === 'queued_ahead') got.push(...await trainer.trainSteps(perRound));
        else for (let i = 0; i < perRound; i++) got.push(await trainer.trainStep());
        be.synchronize();
        const end = performance.now();
        rounds.push({ mode, start, end, ms: (end - start) / perRound, mallocs: mallocsNow() - m0 });
        for (const s of got) { losses.push(s.loss); hostMs.push(s.ms); queueMs.push(s.queueMs ?? NaN); }
      }
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
    } finally {
      gcObs.disconnect();
    }
    const gcMs = rounds.map((r) => +gcs.filter((g) => g.start >= r.start && g.start < r.end).reduce((x, g) => x + g.ms, 0).toFixed(1));
    const modeMs = (mode: string) => {
      const xs = rounds.filter((r) => r.mode === mode).map((r) => r.ms);
      return xs.reduce((a, b) => a + b, 0) / xs.length;
    };
    const ms = modeMs('queued_ahead'), oneByOne = modeMs('one_by_one');
    const L = owl.config.text.numHiddenLayers, nLlm = 6.74e9 * L / 32;
    // The peer's hardware-FLOPs formula (peer_torch.py): frozen LLM 4N per token, ViT 6N (trained) or 2N per patch token.
    const flops = 4 * nLlm * B * T + (config.stage.id === 1 ? 6 : 2) * 3.03e8 * B * 257;
    const peak = be.memory(device).peakBytes;
    const profile = opProfileAvailable() ? await profileStep(trainer, be, ms) : undefined;
    const info = be.info() as { gemmLt?: number; gemmEx?: number; gemmBiasEpilogue?: number; gemmExShapes?: string;
      gemmTuned?: number; gemmTunedChanged?: number; gemmTuneSavedMsPerCall?: number; gemmTuneReused?: number; attentionTuned?: string };
    if (info.attentionTuned !== undefined) console.log(`attention variants chosen by timing so far: ${info.attentionTuned || 'none'}`);
    if (info.gemmLt !== undefined) console.log(`GEMM paths so far: ${info.gemmLt} through cuBLASLt (${info.gemmBiasEpilogue} with the bias in the epilogue), ${info.gemmEx} through cublasGemmEx${info.gemmExShapes ? `: ${info.gemmExShapes}` : ''}; ` +
      `${info.gemmTuned ?? 0} shapes tuned (${info.gemmTuneReused ?? 0} more took their bucket's choice), ${info.gemmTunedChanged ?? 0} of them faster than the heuristic's first algorithm (${(info.gemmTuneSavedMsPerCall ?? 0).toFixed(3)} ms per call of each, summed)`);
    return { profile, stage: config.stage.id, layers: L, batch: B, tokens: T, ...(vary ? { counted_tokens: 'new count each step' } : {}), step_ms: +ms.toFixed(1), tokens_per_s: Math.round(B * T / ms * 1e3),
      images_per_s: +(B / ms * 1e3).toFixed(1), hw_flops_util_vs_989: +(flops / ms / 1e9 / 989).toFixed(3), peak_gib: +(peak / 2 ** 30).toFixed(2),
      trainable: [...trainable.values()].reduce((a, p) => a + p.numel, 0), step_ms_one_by_one: +oneByOne.toFixed(1),
      rounds: rounds.map((r, i) => ({ mode: r.mode, ms: +r.ms.toFixed(1), gc_ms: gcMs[i], device_mallocs: r.mallocs })),
      queue_ms: queueMs.map((x) => +x.toFixed(1)),
      losses, step_ms_trainer: hostMs.map((x) => +x.toFixed(1)) };
  } finally {
    trainer.dispose();
  }
}

/** One more step with every op synchronised and timed, one with host-side call times, and one with each op bracketed
 *  by device timeline marks (OWLET_PROFILE_OPS=1): the top entries are printed; the device's busy time and idle gaps
 *  against the unprofiled step time `ms` tell whether the step waits for the device or the device for the host. */
async function profileStep(trainer: Trainer<OwlTrainBatch>, be: ReturnType<typeof backendFor>, ms: number): Promise<Json> {
  const one = async (mode: 'sync' | 'host') => {
    resetOpProfile();
    setOpProfiling(mode);
    const t0 = performance.now();
    try { await trainer.trainStep(); be.synchronize(); } finally { setOpProfiling(null); }
    const wall = performance.now() - t0, ops = opProfile();
    return { wall, ops, sum: ops.reduce((a, o) => a + o.ms, 0), calls: ops.reduce((a, o) => a + o.calls, 0) };
  };
  const sync = await one('sync'), host = await one('host');
  resetOpProfile();
  setOpProfiling('device');
  const td0 = performance.now();
  try { await trainer.trainStep(); } finally { setOpProfiling(null); }
  const dev = deviceTimeline(be.timelineRead(), be.backend), devWall = performance.now() - td0;
  // The same timeline over steps queued ahead (trainSteps: run()'s way on a GPU): the idle left per step.
  const aheadSteps = 3;
  resetOpProfile();
  setOpProfiling('device');
  const tq0 = performance.now();
  try { await trainer.trainSteps(aheadSteps); } finally { setOpProfiling(null); }
  const devQ = deviceTimeline(be.timelineRead(), be.backend), devQWall = performance.now() - tq0;
  const byName = (ops: OpStat[]) => {
    const m = new Map<string, OpStat>();
    for (const o of ops) {
      const n = o.op.split(' ')[0], e = m.get(n) ?? { op: n, calls: 0, ms: 0 };
      e.calls += o.calls; e.ms += o.ms; m.set(n, e);
    }
    return [...m.values()].sort((a, b) => b.ms - a.ms);
  };
  const fmt = (o: OpStat) => `  ${o.ms.toFixed(2).padStart(8)} ms ${String(o.calls).padStart(5)}× ${o.op}`;
  console.log(`PROFILE step ${ms.toFixed(1)} ms unprofiled; synced: ${sync.calls} calls, ops ${sync.sum.toFixed(1)} ms of ${sync.wall.toFixed(1)} ms; ` +
    `host: calls ${host.sum.toFixed(1)} ms of ${host.wall.toFixed(1)} ms`);
  console.log('PROFILE by op (synced):');
  for (const o of byName(sync.ops).slice(0, 25)) console.log(fmt(o));
  console.log('PROFILE by op and shape (synced), top 30:');
  for (const o of sync.ops.slice(0, 30)) console.log(fmt(o));
  console.log('PROFILE by op (host), top 12:');
  for (const o of byName(host.ops).slice(0, 12)) console.log(fmt(o));
  console.log(`PROFILE device timeline: ${dev.calls} calls over ${dev.span_ms.toFixed(1)} ms of ${devWall.toFixed(1)} ms: ` +
    `device busy ${dev.busy_ms.toFixed(1)} ms, idle between calls ${dev.idle_ms.toFixed(1)} ms (upper bound: the marks cost the host)`);
  console.log('PROFILE by op (device time), top 25:');
  for (const o of byName(dev.ops).slice(0, 25)) console.log(fmt(o));
  console.log('PROFILE by op and shape (device time), top 30:');
  for (const o of dev.ops.slice(0, 30)) console.log(fmt(o));
  console.log('PROFILE longest idle gaps (the device waiting for the host before that call):');
  for (const o of dev.gaps.slice(0, 12)) console.log(fmt(o));
  const per = (x: number) => (x / aheadSteps).toFixed(1);
  console.log(`PROFILE device timeline, ${aheadSteps} steps queued ahead: per step ${per(devQ.span_ms)} ms span of ${per(devQWall)} ms, ` +
    `busy ${per(devQ.busy_ms)} ms, idle ${per(devQ.idle_ms)} ms; longest gaps:`);
  for (const o of devQ.gaps.slice(0, 8)) console.log(fmt(o));
  const r = (o: OpStat) => ({ op: o.op, calls: o.calls, ms: +o.ms.toFixed(3) });
  return { step_ms: ms, synced: { wall_ms: sync.wall, ops_ms: sync.sum, calls: sync.calls, by_op: byName(sync.ops).map(r), top: sync.ops.slice(0, 60).map(r) },
    host: { wall_ms: host.wall, calls_ms: host.sum, by_op: byName(host.ops).map(r) },
    device: { wall_ms: devWall, span_ms: dev.span_ms, busy_ms: dev.busy_ms, idle_ms: dev.idle_ms, calls: dev.calls,
      by_op: byName(dev.ops).map(r), top: dev.ops.slice(0, 60).map(r), gaps: dev.gaps.map(r) },
    device_queued_ahead: { steps: aheadSteps, wall_ms: devQWall, span_ms: devQ.span_ms, busy_ms: devQ.busy_ms, idle_ms: devQ.idle_ms,
      calls: devQ.calls, by_op: byName(devQ.ops).map(r), gaps: devQ.gaps.map(r) } } as unknown as Json;
}

async function bench(device: string): Promise<void> {
  const cases: Record<string, unknown>[] = [];
  report.bench = cases;
  // [B, T, vary]: vary = a new number of counted tokens each step (SyntheticStream)
  const plan = dry ? [[1, [[2, 24, false]]], [2, [[1, 40, false], [2, 20, false], [2, 20, true]]]] as const
    : [[1, [[16, 256, false]]], [2, [[2, 2048, false], [8, 512, false], [8, 512, true]]]] as const;
  for (const [stage, shapes] of plan) {
    const config = benchConfig(stage);
    const be = backendFor(device);
    be.resetPeakMemory(device);
    const t0 = performance.now();
    let owl: MplugOwl | null = null;
    try {
      owl = benchParams(config, device);
      console.log(`stage ${stage} model (${dry ? 'owl-tiny sizes, dry run' : `7B sizes, ${LAYERS} LLaMA layers`}) built in ${((performance.now() - t0) / 1e3).toFixed(1)} s`);
      for (const [B, T, vary] of shapes) {
        const r = await benchCase(owl, config, device, B, T, vary);
        cases.push(r);
        console.log(`BENCH ${JSON.stringify({ ...r, profile: undefined })}`);
        save();
      }
    } catch (e) {
      failed++;
      console.log(`FAIL bench stage ${stage}: ${(e as Error).message}`);
    } finally {
      if (owl) for (const p of owl.params.values()) p.dispose();
    }
  }
}

async function main(): Promise<void> {
  if (!FX) throw new Error('usage: train-check.mjs <owl-tiny dir> [--cpu-only] [--no-bench]');
  let cuda: string | null = null;
  if (!cpuOnly) {
    try {
      cuda = resolveDevice('cuda', { env: {} });
      report.device = backendFor(cuda).info();
    } catch (e) {
      failed++;
      console.log(`FAIL the CUDA backend cannot be used: ${(e as Error).message}`);
    }
  } else {
    const p = probeCuda();
    console.log(`(--cpu-only) CUDA here: ${p.devices ? `${p.devices} device(s), not used` : p.why}`);
  }
  if (!argv.includes('--no-tiny')) await tiny(cuda);
  save();
  if (cuda && !argv.includes('--no-bench')) await bench(cuda);
  else if (dry) await bench('cpu');
  save();
  console.log(`train-check: ${failed ? `${failed} FAILED` : 'all passed'}; results in ${join(outDir, 'train_bench.json')}`);
}

main().then(() => { process.exitCode = failed ? 1 : 0; }, (e) => { console.log(`FAIL train-check: ${(e as Error).stack}`); process.exitCode = 1; });
