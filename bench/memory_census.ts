// Where a training step's memory goes at its peak (the end of the forward): every storage the autograd tape holds
// for backward, grouped by the op that saved it and the shape, and every storage the step's scope still owns that
// the tape does not (intermediates nobody released). Run on the CPU at the 7B shapes of the GPU benchmark
// (scripts/gpu/train-check.ts: ViT-L/14, the abstractor, LAYERS LLaMA-7B layers) with a batch of B samples, f32;
// a bf16 run on the GPU keeps the same elements in half the bytes (LayerNorm/RMSNorm statistics and log-sum-exps
// stay fp32), so the element counts here predict its activations.
// Run: npx tsx bench/memory_census.ts [--stage 1|2] [--batch B] [--tokens T] [--layers L] [--json FILE]
import { writeFileSync } from 'node:fs';
import { cpu } from '../lib/native.ts';
import { parseOwlConfig } from '../lib/model/index.ts';
import { PRESETS } from '../lib/train/index.ts';
import { backward, bytesInUse, scope, scopeOwned, tapeSaved, Tensor } from '../lib/tensor/index.ts';
import { numberArg, stageModel } from './stage-model.ts';
import { syntheticBatch } from './synthetic-batch.ts';

const STAGE = numberArg('stage', 1), B = numberArg('batch', 1), T = numberArg('tokens', 256), LAYERS = numberArg('layers', 4);
const jsonOut = process.argv.includes('--json') ? process.argv[process.argv.indexOf('--json') + 1] : null;

const sizes = structuredClone(PRESETS['mplug-owl-llama-7b']) as unknown as { text_config: { num_hidden_layers: number } };
sizes.text_config.num_hidden_layers = LAYERS;
const cfg = parseOwlConfig(sizes as never);
const t0 = performance.now();
const model = stageModel(cfg, STAGE, { std: 0.02, loraDropout: 0.05 });
console.log(`stage ${STAGE}: 7B shapes, ${LAYERS} LLaMA layers, batch ${B} × ${T} tokens; weights made in ${((performance.now() - t0) / 1e3).toFixed(0)} s`);

const paramStorages = new Set([...model.params.values()].map((t) => t.handle.storageId));
const batch = syntheticBatch({ batch: B, length: T - 1, resolution: cfg.vision.imageSize, media: cfg.mediaTokenLength });
const be = cpu();
const MiB = 2 ** 20;
const base = bytesInUse('cpu');
be.resetPeakMemory();

interface Row { what: string; storages: number; elements: number; mib: number }
const rows: Row[] = [];
let heldAtLoss = 0, forwardPeak = 0;
scope(() => {
  const t1 = performance.now();
  const { loss } = model.forward(batch, { training: true, logits: 'counted' });
  heldAtLoss = bytesInUse('cpu') - base;
  forwardPeak = be.memory().peakBytes - base;
  console.log(`forward ${((performance.now() - t1) / 1e3).toFixed(1)} s; above the weights: held at the loss ${(heldAtLoss / MiB).toFixed(1)} MiB, ` +
    `peak during the forward ${(forwardPeak / MiB).toFixed(1)} MiB`);
  const seen = new Set<number>();
  const groups = new Map<string, Row>();
  const add = (what: string, t: Tensor) => {
    const id = t.handle.storageId;
    if (paramStorages.has(id) || seen.has(id)) return;
    seen.add(id);
    const g = groups.get(what) ?? { what, storages: 0, elements: 0, mib: 0 };
    g.storages++; g.elements += t.numel; g.mib += t.handle.nbytes / MiB;
    groups.set(what, g);
  };
  // A saved storage the scope still holds too is not freed when backward passes its node (the model did not release
  // its own handle after the last forward use): flagged "+scope".
  const owned = scopeOwned().filter((t): t is Tensor => t instanceof Tensor);
  const scopeIds = new Set(owned.map((t) => t.handle.storageId));
  for (const n of tapeSaved()) {
    for (const t of n.saved) add(`tape ${n.op}${scopeIds.has(t.handle.storageId) ? ' +scope' : ''} [${t.shape.join(',')}] ${t.dtype}`, t);
  }
  for (const t of owned) add(`scope only [${t.shape.join(',')}] ${t.dtype}`, t);
  rows.push(...[...groups.values()].sort((a, b) => b.mib - a.mib));
  backward(loss);
});
const total = rows.reduce((a, r) => a + r.mib, 0);
for (const r of rows) console.log(`${r.mib.toFixed(1).padStart(9)} MiB  ${String(r.storages).padStart(4)}×  ${r.what}`);
console.log(`${total.toFixed(1).padStart(9)} MiB  in all (census); held at the loss ${(heldAtLoss / MiB).toFixed(1)} MiB; peak above the weights ` +
  `(forward and backward, gradients included) ${((be.memory().peakBytes - base) / MiB).toFixed(1)} MiB`);
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ date: new Date().toISOString(), stage: STAGE, batch: B, tokens: T, layers: LAYERS, heldAtLossMiB: heldAtLoss / MiB, forwardPeakMiB: forwardPeak / MiB, peakMiB: (be.memory().peakBytes - base) / MiB, rows }, null, 1));
