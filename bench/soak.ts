// Resource soak: runs the long-lived paths many times in one process on the CPU backend with tiny models and prints,
// at each sample, what a leak would grow: live tensors, the native allocator's bytes and storages, the process's
// heap / external / array-buffer / RSS bytes (after a forced GC), open file descriptors, threads, signal/exit
// listeners and active handles. A leak is growth that does not level off: each scenario's summary is the growth per
// unit between its middle and its last sample (the first half warms up: V8 compiles, sharp and malloc grow pools).
// Run: node --expose-gc --import tsx bench/soak.ts [--scenario train|resume|generate|loader|load|all] [--steps N]
//      [--workers W] [--every K]
//
// Measured 2026-11-28 on the shared 2-core CI machine (node 20.20.2), `--scenario all --steps 400 --every 50
// --workers 1` (3.5 min), after the fixes of that day; growth per unit from the middle sample to the last:
//   train 400 steps (stage 2, LoRA + abstractor; log every step, eval every 10, checkpoint every 10 with keep_last 2,
//     TensorBoard, 1 data worker): tensors 178 → 178, native 4307652 B / 120 storages throughout, fds 38 → 38,
//     threads 24, listeners 1; heap +1.7 KiB/step (the run's own history: Trainer.history and the records, ~0.5 KiB
//     per step in heap snapshots, and V8's compiled code), RSS flat (281 → 278 MiB). Checkpoints left: ckpt-390,
//     ckpt-400, latest (metrics.json 72 KiB at step 390: the full history, ~185 B per step). After the run: 0
//     tensors, 0 native bytes, fds back to 26.
//   resume ×40 (train 10 steps, then `resume: 'auto'` for 10 more, …, 1 data worker, plots every 5th): tensors 0 and
//     fds back to 26 after every run, listeners 1, heap 38.6 → 39.1 MiB over rounds 20–40 (V8 code, the growing
//     history), RSS ~0.75 MiB/round, noisy (300–370 MiB, threads coming and going).
//   generate ×400 (one prompt with an image, 8 tokens, top-k sampling): 58 tensors (the weights), 4172544 B, fds 26,
//     heap +0.4 KiB/call (compiled code), RSS 338 → 376 MiB over 400 calls, then flat in the next scenarios.
//   answerQuestions ×400 (two images alternating): 57 tensors, fds 26, heap +0.13 KiB/question, RSS flat 362 MiB.
//   DataLoader 40 epochs (1 worker): tensors 0, fds 36 throughout (the worker's), heap flat, RSS 422 → 429 MiB.
//   loadCheckpoint + dispose ×400: tensors 0, native 0, fds 26, heap flat, RSS flat 367 MiB.
// Before the fixes, the scenarios after `resume` ran with 3–9 more descriptors open for good (files of the data
// worker's own modules: a worker terminated while it started, prepare-pool.ts), and a failing trainStage kept the
// model's tensors and its data workers on each attempt (stage.ts); test/soak-leaks.test.ts covers both.
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpu } from '../lib/native.ts';
import { liveTensors } from '../lib/tensor/index.ts';
import { generateDemoData, JsonlDataset, DataLoader, llamaTokenizer } from '../lib/data/index.ts';
import { validateConfig, parseConfigText } from '../lib/train/config.ts';
import { owlComponents } from '../lib/train/owl-components.ts';
import { trainStage } from '../lib/train/stage.ts';
import { answerQuestions, generate, loadImageTensor } from '../lib/generate/index.ts';
import sharp from 'sharp';
import { loadCheckpoint, saveCheckpoint } from '../lib/model/io/index.ts';
import { MplugOwl, initParams, parseOwlConfig } from '../lib/model/index.ts';

const arg = (name: string, dflt: string) => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? process.argv[i + 1] : dflt; };
const SCENARIO = arg('scenario', 'all'), STEPS = Number(arg('steps', '200')), WORKERS = Number(arg('workers', '0'));
const EVERY = Number(arg('every', '20'));

const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});
const LISTENED = ['SIGINT', 'SIGTERM', 'exit', 'uncaughtException', 'unhandledRejection', 'beforeExit'] as const;

export interface Sample {
  at: number; tensors: number; nativeBytes: number; storages: number; heapKiB: number; externalKiB: number;
  arrayBuffersKiB: number; rssMiB: number; fds: number; threads: number; listeners: number; handles: string;
}

/** What a leak would grow, now (after a GC, so the JS numbers are what is reachable). */
export function sample(at: number): Sample {
  gc();
  const m = cpu().memory();
  const mu = process.memoryUsage();
  const handles = new Map<string, number>();
  for (const h of process.getActiveResourcesInfo()) handles.set(h, (handles.get(h) ?? 0) + 1);
  return {
    at, tensors: liveTensors(), nativeBytes: m.bytesInUse, storages: m.liveStorages,
    heapKiB: Math.round(mu.heapUsed / 1024), externalKiB: Math.round(mu.external / 1024),
    arrayBuffersKiB: Math.round(mu.arrayBuffers / 1024), rssMiB: Math.round(mu.rss / 2 ** 20),
    fds: readdirSync('/proc/self/fd').length, threads: readdirSync('/proc/self/task').length,
    listeners: LISTENED.reduce((a, e) => a + process.listenerCount(e), 0),
    handles: [...handles].map(([k, v]) => `${k}×${v}`).join(','),
  };
}

const samples: Sample[] = [];
const record = (at: number) => { const s = sample(at); samples.push(s); console.log(JSON.stringify(s)); };
/** Growth per unit between the middle and the last of a scenario's samples (the first half warms up: V8 compiles,
 *  sharp and the allocators grow their pools). */
function summary(name: string, first: number): void {
  const from = samples[first + Math.floor((samples.length - 1 - first) / 2)], to = samples[samples.length - 1];
  const per = (k: keyof Sample) => (((to[k] as number) - (from[k] as number)) / Math.max(1, to.at - from.at)).toPrecision(3);
  console.log(`${name}: from ${from.at} to ${to.at}: per unit tensors ${per('tensors')}, native bytes ${per('nativeBytes')}, ` +
    `storages ${per('storages')}, heap KiB ${per('heapKiB')}, external KiB ${per('externalKiB')}, rss MiB ${per('rssMiB')}, ` +
    `fds ${per('fds')}, threads ${per('threads')}, listeners ${per('listeners')}; handles then ${from.handles || '-'} now ${to.handles || '-'}`);
}

async function tinyStage2(dir: string, o: { steps: number; workers: number; eval: boolean; saveEvery: number; plots?: boolean }) {
  const data = join(dir, 'data');
  await generateDemoData({ out: data, trainImages: 12, evalImages: 4, imageSize: 56, maxTurns: 1, system: 'A chat.' });
  return validateConfig(parseConfigText(`
run: { name: soak, out_dir: ${join(dir, 'run')}, seed: 5, device: cpu }
model:
  sizes:
    num_query_tokens: 4
    vision_config: { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, image_size: 56, patch_size: 28 }
    visual_abstractor_config: { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, encoder_hidden_size: 16 }
    text_config: { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 32000 }
stage: { id: 2, train: [lora, abstractor], lora: { r: 4, alpha: 8, dropout: 0.1, targets: [q_proj, v_proj] } }
data:
  train: [{ path: ${join(data, 'train_instructions.jsonl')} }, { path: ${join(data, 'train_text.jsonl')}, weight: 0.2 }]
  eval: ${o.eval ? `[{ path: ${join(data, 'eval_instructions.jsonl')} }]` : '[]'}
  max_length: 40
  micro_batch: 2
  workers: ${o.workers}
  image: { size: 56, train_transform: random-resized-crop }
optimizer: { lr: 1.0e-3, weight_decay: 0.01 }
schedule: { type: constant }
training: { steps: ${o.steps}, grad_accum: 1, clip: 1.0 }
logging: { every: 1, eval_every: 10, eval_batches: 1, save_every: ${o.saveEvery}, keep_last: 2, tensorboard: true, plots: ${o.plots ?? false}, progress: false }
`));
}

/** (1) One long run: a sample every EVERY steps (from the per-step log line). */
async function soakTrain(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'owlet-soak-'));
  const config = await tinyStage2(dir, { steps: STEPS, workers: WORKERS, eval: true, saveEvery: 10 });
  record(0);
  const first = samples.length - 1;
  await trainStage(config, owlComponents(), {
    log: (l) => { const m = /^step (\d+)\//.exec(l); if (m && Number(m[1]) % EVERY === 0) record(Number(m[1])); },
    warn: () => {},
  });
  const ckpts = readdirSync(join(dir, 'run', 'checkpoints'));
  console.log(`checkpoints left: ${ckpts.join(' ')}; metrics.json of each: ` +
    ckpts.filter((c) => c.startsWith('ckpt-')).map((c) => `${statSync(join(dir, 'run', 'checkpoints', c, 'metrics.json')).size} B`).join(', '));
  summary(`train ${STEPS} steps, workers ${WORKERS}`, first);
  await new Promise((r) => setTimeout(r, 100)); // (terminated workers leave)
  record(STEPS + 1);
  console.log('after the run (compare with step 0):');
  rmSync(dir, { recursive: true, force: true });
}

/** (2) Train 10 steps, then resume for 10 more, … in one process. */
async function soakResume(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'owlet-soak-'));
  const rounds = Math.max(2, Math.round(STEPS / 10));
  const first = samples.length;
  for (let r = 1; r <= rounds; r++) {
    const config = await tinyStage2(dir, { steps: 10 * r, workers: WORKERS, eval: true, saveEvery: 5, plots: r % 5 === 3 });
    await trainStage(config, owlComponents(), { resume: r > 1 ? 'auto' : undefined, log: () => {}, warn: () => {} });
    record(r);
  }
  summary(`resume ×${rounds}, workers ${WORKERS}`, first);
  rmSync(dir, { recursive: true, force: true });
}

function tinyOwl(): MplugOwl {
  const config = parseOwlConfig({
    num_query_tokens: 2,
    vision_config: { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, image_size: 28, patch_size: 14 },
    visual_abstractor_config: { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, encoder_hidden_size: 16 },
    text_config: { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 32000 },
  });
  return new MplugOwl(config, initParams(config, { seed: 1 }));
}

/** (3) generate() called many times on one model, then answerQuestions over many questions. */
async function soakGenerate(): Promise<void> {
  const owl = tinyOwl(), tok = llamaTokenizer();
  const dir = mkdtempSync(join(tmpdir(), 'owlet-soak-'));
  for (const [name, colour] of [['a.png', '#c00'], ['b.png', '#0c0']]) {
    await sharp({ create: { width: 28, height: 28, channels: 3, background: colour } }).png().toFile(join(dir, name));
  }
  const img = await loadImageTensor(join(dir, 'a.png'), 28);
  let first = samples.length;
  for (let i = 1; i <= STEPS; i++) {
    generate(owl, tok, [{ prompt: 'Human: <image>\nHuman: What is this?\nAI: ', images: [img] }], { maxNewTokens: 8, temperature: 0.7, topK: 5, seed: i });
    if (i % EVERY === 0) record(i);
  }
  summary(`generate ×${STEPS}`, first);
  img.dispose();
  // Questions alternate between two images (each a new dialogue: the history does not grow without end).
  const qs = Array.from({ length: STEPS }, (_, i) => ({ image: i % 2 ? 'b.png' : 'a.png', question_id: i, question: `Question ${i}?` }));
  first = samples.length;
  for (let k = EVERY; k <= STEPS; k += EVERY) {
    await answerQuestions(owl, tok, qs.slice(k - EVERY, k), dir, { maxNewTokens: 4, greedy: true });
    record(k);
  }
  summary(`answerQuestions ×${STEPS}`, first);
  for (const t of owl.params.values()) t.dispose();
  rmSync(dir, { recursive: true, force: true });
}

/** (4) The data loader over many epochs. */
async function soakLoader(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'owlet-soak-'));
  await generateDemoData({ out: dir, trainImages: 8, evalImages: 2, imageSize: 56, maxTurns: 1, system: 'A chat.' });
  const ds = JsonlDataset.load([{ path: join(dir, 'train_instructions.jsonl') }]);
  const epochs = Math.max(2, Math.round(STEPS / 10));
  const loader = new DataLoader(ds, { batchSize: 2, resolution: 56, maxLength: 40, mediaTokenLength: 4, mode: 'train', epochs, workers: WORKERS });
  const first = samples.length;
  let b = 0;
  const perEpoch = Math.ceil(loader.stream.perRank / 2);
  for await (const _ of loader) if (++b % (perEpoch * 5) === 0) record(b / perEpoch);
  loader.close();
  summary(`loader ${epochs} epochs, workers ${WORKERS}`, first);
  rmSync(dir, { recursive: true, force: true });
}

/** (5) saveCheckpoint once, then loadCheckpoint + dispose many times. */
async function soakLoad(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'owlet-soak-'));
  const owl = tinyOwl();
  saveCheckpoint(dir, owl.params, { config: owl.config });
  for (const t of owl.params.values()) t.dispose();
  const first = samples.length;
  for (let i = 1; i <= STEPS; i++) {
    const p = loadCheckpoint(dir, { dtype: 'f32' });
    for (const t of p.values()) t.dispose();
    if (i % EVERY === 0) record(i);
  }
  summary(`loadCheckpoint ×${STEPS}`, first);
  rmSync(dir, { recursive: true, force: true });
}

const scenarios: Record<string, () => Promise<void>> = { train: soakTrain, resume: soakResume, generate: soakGenerate, loader: soakLoader, load: soakLoad };
for (const [name, run] of Object.entries(scenarios)) if (SCENARIO === 'all' || SCENARIO === name) await run();
