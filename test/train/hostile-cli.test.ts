// Hostile inputs to a training run and its folder (the CLI and robustness audit of session 24): each case once
// crashed with an internal message, refused a run it should have taken, or ignored a Ctrl-C until the next checkpoint.
import test from 'ava';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../lib/cli/main.ts';
import { tensor } from '../../lib/tensor/index.ts';
import { CheckpointManager, resolveResume, verifyCheckpoint } from '../../lib/train/checkpoint.ts';
import { parseConfigText, totalSteps, validateConfig } from '../../lib/train/config.ts';
import { CheckpointError, ConfigError } from '../../lib/train/errors.ts';
import { sha256File } from '../../lib/train/fsutil.ts';
import type { Components } from '../../lib/train/components.ts';
import { LOCK_FILE, lockRunFolder } from '../../lib/train/run-lock.ts';
import { trainStage } from '../../lib/train/stage.ts';
import { HostAdamW, RegressionData, RegressionModel, fakeIO, hostGradOps, type RegressionBatch } from './helpers/fakes.ts';

const tmp = mkdtempSync(join(tmpdir(), 'owlet-hostile-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const fakeConfig = (out: string, extra = '') => validateConfig(parseConfigText(`
run: { out_dir: ${out}, seed: 3, device: cpu }
model: { preset: mplug-owl-llama-7b }
stage: { id: 1, train: [abstractor] }
data: { train: [{ path: unused.jsonl }], max_length: 4, micro_batch: 3 }
optimizer: { lr: 0.05 }
schedule: { type: constant }
training: { steps: 400 }
logging: { every: 1000, save_every: 0, keep_last: 2, progress: false, tensorboard: false, plots: false }
${extra}`));

const fakeComponents = (): Components<RegressionBatch> & { models: RegressionModel[] } => {
  const models: RegressionModel[] = [];
  return {
    models,
    async createModel() { const m = new RegressionModel(7); models.push(m); return m; },
    async createData(c) { return new RegressionData(37, c.data.micro_batch, c.run.seed); },
    createOptimizer: (groups, o) => new HostAdamW(groups, o.betas, o.eps),
    tensorIO: fakeIO,
    gradOps: hostGradOps,
  };
};

test.serial('a signal during training stops the run after the current step, not at the next checkpoint', async (t) => {
  // A CPU step never lets Node's event loop turn (its kernels run synchronously, its data is ready), and signals
  // arrive through the event loop: owlet train's Ctrl-C handler ran only at the next checkpoint's file I/O —
  // save_every steps later, or (save_every 0) when the run had ended.
  let stop = false;
  const onSignal = () => { stop = true; };
  process.once('SIGUSR2', onSignal);
  const c = fakeComponents();
  try {
    process.kill(process.pid, 'SIGUSR2'); // delivered once the event loop turns
    const r = await trainStage(fakeConfig(join(tmp, 'signal')), c, { log: () => {}, stopRequested: () => stop });
    t.true(stop, 'the signal was handled');
    t.true(r.interrupted, `stopped early (ran ${r.steps}/${r.totalSteps} steps)`);
    t.true(r.steps < 50, `stopped within a few steps of the signal, not at the end (ran ${r.steps} steps)`);
    t.truthy(r.checkpoint, 'with a checkpoint');
  } finally {
    process.off('SIGUSR2', onSignal);
    for (const m of c.models) m.dispose();
  }
});

// A checkpoint's file replaced and its manifest entry rewritten to match (by hand or another tool): it verifies, and
// only its content is wrong.
async function replaceVerified(dir: string, file: string, content: string): Promise<void> {
  writeFileSync(join(dir, file), content);
  const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  m.files[file] = { bytes: statSync(join(dir, file)).size, sha256: await sha256File(join(dir, file)) };
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(m));
}

const payload = (step: number) => ({
  step, stage: 2, config: { run: { name: 'x' } }, weights: new Map([['w', tensor([step, 1, 2])]]),
  optimizer: { meta: { step }, tensors: new Map([['m.w', tensor([0, 0, 0])]]) }, rng: { trainer: [1, 2, 3, step] },
  data: { index: step }, skippedSteps: 0, metrics: { history: [] },
});

test('a manifest that is valid JSON but no manifest (null, an entry null) is skipped like a damaged one, not a TypeError', async (t) => {
  const root = join(tmp, 'manifest-null', 'checkpoints');
  const mgr = new CheckpointManager(root, fakeIO, { keepLast: 3 });
  for (const s of [1, 2, 3]) await mgr.save(payload(s));
  writeFileSync(join(root, 'ckpt-3', 'manifest.json'), 'null\n');
  const m2 = JSON.parse(readFileSync(join(root, 'ckpt-2', 'manifest.json'), 'utf8'));
  m2.files['extra.json'] = null;
  writeFileSync(join(root, 'ckpt-2', 'manifest.json'), JSON.stringify(m2));
  t.deepEqual(await verifyCheckpoint(join(root, 'ckpt-3')), { ok: false, reason: 'manifest.json is not a JSON object' });
  t.deepEqual(await verifyCheckpoint(join(root, 'ckpt-2')), { ok: false, reason: 'manifest entry of extra.json is not { bytes, sha256 }' });
  const warnings: string[] = [];
  t.is(await resolveResume(root, 'auto', (w) => warnings.push(w)), join(root, 'ckpt-1'));
  t.is(warnings.length, 2);
  const e = await t.throwsAsync(resolveResume(root, join(root, 'ckpt-3')), { instanceOf: CheckpointError });
  t.regex(e!.message, /ckpt-3: manifest\.json is not a JSON object$/);
});

test('checkpoint JSON that verifies but does not parse or hold a state is a CheckpointError naming the file', async (t) => {
  const root = join(tmp, 'bad-json', 'checkpoints');
  const mgr = new CheckpointManager(root, fakeIO, { keepLast: 5 });
  const cases: [string, string, RegExp][] = [
    ['trainer_state.json', '{oops', /trainer_state\.json is not valid JSON \(/],
    ['trainer_state.json', 'null', /trainer_state\.json does not hold the step 2 and the stage/],
    ['trainer_state.json', '{}', /trainer_state\.json does not hold the step 3 and the stage/],
    ['config.json', '[1,', /config\.json is not valid JSON/],
    ['metrics.json', '{"history": 5}', /metrics\.json does not hold a list of steps/],
  ];
  for (const [i, [file, content, re]] of cases.entries()) {
    const dir = await mgr.save(payload(i + 1));
    await replaceVerified(dir, file, content);
    t.true((await verifyCheckpoint(dir)).ok);
    const e = await t.throwsAsync(mgr.load(dir), { instanceOf: CheckpointError }, `${file}: ${content}`);
    t.regex(e!.message, new RegExp(`^checkpoint ${dir} is not usable: ${re.source}`));
  }
});

test.serial('a resume whose checkpoint config.json verifies but does not parse names it (and keeps the checkpoint)', async (t) => {
  const out = join(tmp, 'resume-config');
  const c = fakeComponents();
  try {
    const cfg = fakeConfig(out);
    cfg.training.steps = 4;
    cfg.logging.save_every = 2;
    await trainStage(cfg, c, { log: () => {} });
    const ckpt = join(out, 'checkpoints', 'ckpt-4');
    await replaceVerified(ckpt, 'config.json', '{"run": ');
    cfg.training.steps = 6;
    const e = await t.throwsAsync(trainStage(cfg, c, { log: () => {}, resume: 'auto' }), { instanceOf: CheckpointError });
    t.is(e!.message, `checkpoint ${ckpt} is not usable: config.json is not valid JSON (Unexpected end of JSON input)`);
    t.deepEqual(readdirSync(join(out, 'checkpoints')).sort(), ['ckpt-2', 'ckpt-4', 'latest']);
  } finally {
    for (const m of c.models) m.dispose();
  }
});

test('a lock left by an earlier process with this process\'s pid (a restarted container) is taken over; one this process holds is not', (t) => {
  const dir = join(tmp, 'same-pid');
  mkdirSync(dir, { recursive: true });
  const left = { pid: process.pid, host: hostname(), started: '2026-01-01T00:00:00.000Z' };
  writeFileSync(join(dir, LOCK_FILE), JSON.stringify(left) + '\n');
  const release = lockRunFolder(dir);
  const mine = JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8'));
  t.is(mine.pid, process.pid);
  t.not(mine.started, left.started);
  // a second run in this same process is still refused while the first holds the folder
  const e = t.throws(() => lockRunFolder(dir), { instanceOf: ConfigError });
  t.regex(e!.message, new RegExp(`^run folder ${dir} is in use by another owlet run \\(pid ${process.pid} on `));
  release();
  t.false(existsSync(join(dir, LOCK_FILE)));
  lockRunFolder(dir)();
  // a run folder under a file: named, as a config error
  const under = join(tmp, 'a-file');
  writeFileSync(under, 'x');
  t.throws(() => lockRunFolder(join(under, 'run')), { instanceOf: ConfigError, message: /^cannot create the run folder .*a-file\/run: ENOTDIR/ });
});

test('a YAML config whose aliases expand past the parser\'s limit is a config error naming the file', (t) => {
  const lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]'];
  for (let i = 1; i < 12; i++) lines.push(`a${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(', ')}]`);
  const e = t.throws(() => parseConfigText(lines.join('\n'), 'laughs.yaml'), { instanceOf: ConfigError });
  t.regex(e!.message, /^invalid laughs\.yaml: Excessive alias count/);
});

test('grad_accum (given, or derived from global_batch) and epochs too large to run are config errors, not a fatal V8 heap error or a run that never ends', (t) => {
  const raw = (training: string) => parseConfigText(`
run: { out_dir: x }
model: { preset: mplug-owl-llama-7b }
stage: { id: 1, train: [abstractor] }
data: { train: [{ path: a.jsonl }], max_length: 4, micro_batch: 2 }
optimizer: { lr: 0.05 }
schedule: { type: constant }
training: ${training}`);
  t.throws(() => validateConfig(raw('{ steps: 1, grad_accum: 1.0e+9 }')), { instanceOf: ConfigError, message: /training\.grad_accum: at most 1048576 micro-batches per step/ });
  t.throws(() => validateConfig(raw('{ steps: 1, global_batch: 1.0e+15 }')), { instanceOf: ConfigError, message: /training\.global_batch: needs more than 1048576 micro-batches/ });
  t.is(validateConfig(raw('{ steps: 1, grad_accum: 1048576 }')).training.grad_accum, 2 ** 20);
  const c = validateConfig(raw('{ epochs: 1.0e+300 }'));
  t.throws(() => totalSteps(c, 2), { instanceOf: ConfigError, message: /^training\.epochs = 1e\+300 makes 2e\+300 optimizer steps/ });
  t.is(totalSteps(validateConfig(raw('{ epochs: 3 }')), 2), 6);
});

async function cli(...argv: string[]): Promise<{ code: number; err: string[] }> {
  const err: string[] = [];
  const code = await main(argv, { out: () => {}, err: (l) => err.push(l) });
  return { code, err };
}

test('generate, eval and estimate refuse an empty or out-of-range number as bad usage naming the flag, before reading any weight', async (t) => {
  const gen = ['generate', '--checkpoint', join(tmp, 'no-such-model'), '--prompt', 'hi'];
  const ev = ['eval', '--checkpoint', join(tmp, 'no-such-model'), '--questions', 'q.jsonl', '--images', '.', '--out', join(tmp, 'a.jsonl')];
  const cases: [string[], RegExp][] = [
    [[...gen, '--temperature', '-1'], /^owlet: --temperature must be a number >= 0 \(0: greedy\), got '-1'$/],
    [[...gen, '--temperature', ''], /^owlet: --temperature must be a number >= 0 \(0: greedy\), got ''$/],
    [[...gen, '--top-p', '2'], /^owlet: --top-p must be a number in \(0, 1\] \(1: no limit\), got '2'$/],
    [[...gen, '--top-p', '0'], /^owlet: --top-p must be a number in \(0, 1\]/],
    [[...gen, '--top-k', '-3'], /^owlet: --top-k must be an integer >= 0 \(0: no limit\), got '-3'$/],
    [[...gen, '--max-new-tokens', '-5'], /^owlet: --max-new-tokens must be an integer >= 0, got '-5'$/],
    [[...gen, '--seed', '1e300'], /^owlet: --seed must be an integer in \[0, 2\^53\), got '1e300'$/],
    [[...gen, '--seed', '-1'], /^owlet: --seed must be an integer in \[0, 2\^53\)/],
    [[...ev, '--max-new-tokens', '1.5'], /^owlet: --max-new-tokens must be an integer >= 0, got '1\.5'$/],
    [[...ev, '--temperature', 'warm'], /^owlet: --temperature must be a number >= 0/],
    [['estimate', '--config', 'configs/stage2-7b.yaml', '--images-per-sample', ''], /^owlet: --images-per-sample must be an integer >= 0, got ''$/],
  ];
  for (const [argv, re] of cases) {
    const r = await cli(...argv);
    t.is(r.code, 2, argv.join(' '));
    t.is(r.err.length, 1, r.err.join(' / '));
    t.regex(r.err[0] ?? '', re);
  }
});
