// Resources over long runs and repeated runs in one process (a notebook, a sweep, a service that retries): what a
// training run, a resume, generation or the data loader holds must not grow with the steps or the runs. Growth is
// measured between a warm-up point and a later one, never as absolute values. bench/soak.ts measures the same things
// over hundreds of steps.
import test from 'ava';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { generateDemoData } from '../lib/data/index.ts';
import { bytesInUse, keep, liveTensors, tensor } from '../lib/tensor/index.ts';
import { cpu } from '../lib/native.ts';
import { PreparePool } from '../lib/data/prepare-pool.ts';
import { CheckpointManager } from '../lib/train/checkpoint.ts';
import { owlComponents, safetensorsIO } from '../lib/train/owl-components.ts';
import { trainStage } from '../lib/train/stage.ts';
import { tinyStageConfig } from './train/helpers/tiny-stage.ts';

const tmp = mkdtempSync(join(tmpdir(), 'owlet-soak-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));
const data = join(tmp, 'data');
test.before(async () => {
  await generateDemoData({ out: data, trainImages: 4, evalImages: 2, imageSize: 56, maxTurns: 1, system: 'A chat.' });
});

// (Linux: /proc; elsewhere the descriptor checks compare zeros)
const openFds = () => (existsSync('/proc/self/fd') ? readdirSync('/proc/self/fd').length : 0);
/** The open descriptors once closed data workers have gone (each finishes starting and what it was preparing, then
 *  ends by itself): polled until at most `atMost`, for up to 20 s. */
async function settledFds(atMost: number): Promise<number> {
  let n = openFds();
  for (let i = 0; i < 200 && n > atMost; i++) {
    await new Promise((r) => setTimeout(r, 100));
    n = openFds();
  }
  return n;
}

const LISTENED = ['SIGINT', 'SIGTERM', 'exit', 'uncaughtException', 'unhandledRejection'] as const;
/** What a leak would grow, now. */
const resources = () => ({
  tensors: liveTensors(), bytes: bytesInUse('cpu'), storages: cpu().memory().liveStorages, fds: openFds(),
  listeners: LISTENED.map((e) => `${e} ${process.listenerCount(e)}`).join(', '),
});

test.serial('a long run holds the same tensors, native bytes, descriptors and listeners at step 25 as at step 65; a run leaves none', async (t) => {
  // Logging every step, evaluation and a checkpoint (keep_last 2) every 10 steps, TensorBoard, a data worker: the
  // samples fall between checkpoints (no file of a save is still being closed).
  const out = join(tmp, 'long');
  const config = tinyStageConfig(out, { train: join(data, 'train_instructions.jsonl'), eval: join(data, 'eval_instructions.jsonl'),
    steps: 70, saveEvery: 10 });
  Object.assign(config.logging, { eval_every: 10, keep_last: 2, tensorboard: true });
  config.data.workers = 1;
  const before = resources();
  const at = new Map<number, ReturnType<typeof resources>>();
  const r = await trainStage(config, owlComponents(), {
    log: (l) => { const m = /^step (\d+)\//.exec(l); if (m && (m[1] === '25' || m[1] === '65')) at.set(Number(m[1]), resources()); },
    warn: () => {},
  });
  t.is(r.steps, 70);
  t.deepEqual(at.get(65), at.get(25), 'resources grew between step 25 and step 65');
  t.deepEqual(readdirSync(join(out, 'checkpoints')).sort(), ['ckpt-60', 'ckpt-70', 'latest']);
  await settledFds(before.fds);
  t.deepEqual(resources(), before, 'the finished run left resources behind');
});

test.serial('resuming again and again in one process holds the same resources after the 6th run as after the 2nd', async (t) => {
  const out = join(tmp, 'resumed');
  const after = new Map<number, ReturnType<typeof resources>>();
  const fds = openFds();
  for (let run = 1; run <= 6; run++) {
    const config = tinyStageConfig(out, { train: join(data, 'train_instructions.jsonl'), eval: join(data, 'eval_instructions.jsonl'),
      steps: 4 * run, saveEvery: 2 });
    Object.assign(config.logging, { eval_every: 2, keep_last: 2, tensorboard: true });
    config.data.workers = 1;
    const r = await trainStage(config, owlComponents(), { resume: run > 1 ? 'auto' : undefined, log: () => {}, warn: () => {} });
    t.is(r.steps, 4 * run);
    if (run === 2 || run === 6) { await settledFds(fds); after.set(run, resources()); } // (the data workers gone)
  }
  t.deepEqual(after.get(6), after.get(2), 'resources grew from run to run');
});

test.serial('a trainStage that fails after building the model releases its weights and data workers (repeated 3 times)', async (t) => {
  // The eval file is missing: the run fails after the model and the training data (with 2 worker threads) exist.
  // Each failed attempt used to keep the model's tensors and both workers (their threads, memory and descriptors).
  const config = tinyStageConfig(join(tmp, 'failing'), { train: join(data, 'train_instructions.jsonl'), eval: join(data, 'missing.jsonl') });
  config.data.workers = 2;
  const attempt = () => t.throwsAsync(trainStage(config, owlComponents(), { log: () => {}, warn: () => {} }), { message: /missing\.jsonl/ });
  const start = openFds();
  await attempt(); // (warm-up: module loading, the tokenizer, sharp's threads)
  const tensors = liveTensors(), fds = await settledFds(start);
  for (let i = 0; i < 3; i++) await attempt();
  t.is(liveTensors(), tensors, 'the failed runs left tensors behind');
  t.true(await settledFds(fds) <= fds, `open descriptors grew from ${fds} to ${openFds()}`);
});

test.serial('a run whose TensorBoard folder cannot be made closes metrics.jsonl (repeated 3 times)', async (t) => {
  const out = join(tmp, 'tb-file');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'tensorboard'), 'a file where the events folder goes');
  const config = tinyStageConfig(out, { train: join(data, 'train_instructions.jsonl') });
  config.logging.tensorboard = true;
  const attempt = () => t.throwsAsync(trainStage(config, owlComponents(), { log: () => {}, warn: () => {} }), { message: /tensorboard/ });
  await attempt();
  const fds = await settledFds(Infinity);
  for (let i = 0; i < 3; i++) await attempt();
  t.true(await settledFds(fds) <= fds, `open descriptors grew from ${fds} to ${openFds()}`);
});

test.serial('a checkpoint whose optimizer file cannot be read releases the weights it had read (repeated 3 times)', async (t) => {
  const mgr = new CheckpointManager(join(tmp, 'ckpts'), safetensorsIO);
  const weights = new Map([['w', keep(tensor([1, 2, 3], [3]))]]), moments = new Map([['m.w', keep(tensor([0, 0, 0], [3]))]]);
  const dir = await mgr.save({ step: 1, stage: 1, config: {}, weights, optimizer: { meta: {}, tensors: moments }, rng: {}, data: null,
    skippedSteps: 0, metrics: { history: [] } });
  for (const x of [...weights.values(), ...moments.values()]) x.dispose();
  // Not a safetensors file, under a manifest that matches it (written by another tool): the load fails after the weights.
  const opt = join(dir, 'optimizer.safetensors');
  writeFileSync(opt, 'not a safetensors file');
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  manifest.files['optimizer.safetensors'] = { bytes: statSync(opt).size, sha256: createHash('sha256').update(readFileSync(opt)).digest('hex') };
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
  const live = liveTensors();
  for (let i = 0; i < 3; i++) await t.throwsAsync(mgr.load(dir), { message: /optimizer\.safetensors/ });
  t.is(liveTensors(), live, 'the failed loads kept the weights they had read');
});

test.serial('data worker pools closed while their workers start leave no descriptor open (8 pools)', async (t) => {
  // A resumed run closes the loader it built before reading (restore() makes another at the saved position): its
  // worker was terminated while it still loaded its modules, and the module files it was opening stayed open in the
  // process — about one descriptor per resume. Closed at 0, 50, …, 350 ms after they start, the workers now finish
  // starting and end by themselves.
  const fds = await settledFds(Infinity);
  for (let i = 0; i < 8; i++) {
    const pool = new PreparePool(1, { resolution: 8, mode: 'eval', maxLength: 48, mediaTokenLength: 3 });
    await new Promise((r) => setTimeout(r, 50 * i));
    pool.close();
  }
  t.true(await settledFds(fds) <= fds, `open descriptors grew from ${fds} to ${openFds()}`);
});
