import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tensor, type Tensor } from '../../lib/tensor/index.ts';
import { CheckpointManager, resolveResume, verifyCheckpoint, type SavePoint } from '../../lib/train/checkpoint.ts';
import { CheckpointError } from '../../lib/train/errors.ts';
import { fakeIO } from './helpers/fakes.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'owlet-ckpt-'));
const payload = (step: number, v = step) => ({
  step, stage: 2, config: { run: { name: 'x' } }, weights: new Map([['language_model.lora_A.weight', tensor([v, v + 0.5, -v])]]),
  optimizer: { meta: { step, hyper: { lr: 1e-3 } }, tensors: new Map([['m.a', tensor([v / 3])], ['v.a', tensor([v / 7])]]) },
  rng: { trainer: [9, 8, 7, step] }, data: { epoch: 0, index: step * 4 }, skippedSteps: step % 2, metrics: { history: [{ step, loss: 1 / step }] },
});

test('save and load round-trip everything; keep-last-N prunes; latest points at the newest', async (t) => {
  const root = join(tmp(), 'checkpoints');
  const mgr = new CheckpointManager(root, fakeIO, { keepLast: 2 });
  for (const s of [10, 20, 30]) await mgr.save(payload(s));
  t.deepEqual(readdirSync(root).sort(), ['ckpt-20', 'ckpt-30', 'latest']);
  t.is(readFileSync(join(root, 'latest'), 'utf8'), 'ckpt-30\n');
  t.is(mgr.latestPointer(), join(root, 'ckpt-30'));
  const c = await mgr.load(join(root, 'ckpt-30'));
  t.is(c.step, 30);
  t.is(c.stage, 2);
  t.deepEqual(c.config, { run: { name: 'x' } });
  t.deepEqual(Array.from(c.weights.get('language_model.lora_A.weight')!.data<'f32'>()), [30, 30.5, -30]);
  t.deepEqual(Array.from(c.optimizer.tensors.get('v.a')!.data<'f32'>()), [Math.fround(30 / 7)]);
  t.deepEqual(c.optimizer.meta, { step: 30, hyper: { lr: 1e-3 } });
  t.deepEqual(c.rng, { trainer: [9, 8, 7, 30] });
  t.deepEqual(c.data, { epoch: 0, index: 120 });
  t.is(c.skippedSteps, 0);
  t.deepEqual(c.metrics, { history: [{ step: 30, loss: 1 / 30 }] });
  const v = await verifyCheckpoint(join(root, 'ckpt-30'));
  t.true(v.ok);
  if (v.ok) t.deepEqual(Object.keys(v.manifest.files).sort(), ['config.json', 'metrics.json', 'optimizer.safetensors', 'trainer_state.json', 'weights.safetensors']);
  // saving a step that already exists replaces it completely
  await mgr.save(payload(30, 99));
  t.deepEqual(Array.from((await mgr.load(join(root, 'ckpt-30'))).weights.get('language_model.lora_A.weight')!.data<'f32'>()), [99, 99.5, -99]);
  t.deepEqual(readdirSync(root).sort(), ['ckpt-20', 'ckpt-30', 'latest']);
});

test('resume auto takes the newest checkpoint that verifies; damaged or partial ones are skipped', async (t) => {
  const root = join(tmp(), 'checkpoints');
  const mgr = new CheckpointManager(root, fakeIO, { keepLast: 5 });
  for (const s of [1, 2, 3, 4]) await mgr.save(payload(s));
  // ckpt-4: one flipped byte in the weights; ckpt-3: manifest gone; a leftover .tmp of step 5
  const w = join(root, 'ckpt-4', 'weights.safetensors');
  const bytes = readFileSync(w); bytes[bytes.length - 1] ^= 0x40; writeFileSync(w, bytes);
  writeFileSync(join(root, 'ckpt-3', 'manifest.json'), '{"format": "owlet-checkpoint", "ver');
  mkdirSync(join(root, 'ckpt-5.tmp'));
  writeFileSync(join(root, 'ckpt-5.tmp', 'config.json'), '{}');
  const warnings: string[] = [];
  t.is(await resolveResume(root, 'auto', (m) => warnings.push(m)), join(root, 'ckpt-2'));
  t.regex(warnings[0], /ckpt-4: weights\.safetensors does not match its sha256/);
  t.regex(warnings[1], /ckpt-3: no readable manifest\.json/);
  // truncation is caught by size before hashing
  writeFileSync(join(root, 'ckpt-2', 'optimizer.safetensors'), 'x');
  t.is(await resolveResume(root, 'auto'), join(root, 'ckpt-1'));
  // an explicit directory must verify
  await t.throwsAsync(resolveResume(root, join(root, 'ckpt-4')), { instanceOf: CheckpointError, message: /sha256/ });
  t.is(await resolveResume(root, join(root, 'ckpt-1')), join(root, 'ckpt-1'));
  // a run folder or checkpoints folder resolves to its newest good checkpoint
  t.is(await resolveResume(root, join(root, '..')), join(root, 'ckpt-1'));
  await t.throwsAsync(new CheckpointManager(root, fakeIO).load(join(root, 'ckpt-4')), { instanceOf: CheckpointError, message: /not usable/ });
  t.is(await resolveResume(join(tmp(), 'none'), 'auto'), null, 'nothing to resume: a fresh start');
  await t.throwsAsync(resolveResume(root, join(root, 'missing')), { instanceOf: CheckpointError, message: /no such directory/ });
  // the next save cleans the stale .tmp
  await mgr.save(payload(6));
  t.false(existsSync(join(root, 'ckpt-5.tmp')));
});

test('a failure at any point of a save leaves the previous checkpoint loadable and resumable', async (t) => {
  const points: SavePoint[] = ['file:config.json', 'file:trainer_state.json', 'file:weights.safetensors',
    'file:optimizer.safetensors', 'file:metrics.json', 'manifest', 'renamed', 'latest'];
  for (const at of points) {
    const root = join(tmp(), 'checkpoints');
    let armed = false;
    const mgr = new CheckpointManager(root, fakeIO, {
      keepLast: 1,
      onSavePoint: (p) => { if (armed && p === at) throw new Error(`injected failure at ${p}`); },
    });
    await mgr.save(payload(1));
    armed = true;
    await t.throwsAsync(mgr.save(payload(2)), { message: new RegExp(`injected failure at ${at}`) });
    const picked = await resolveResume(root, 'auto');
    const completed = at === 'renamed' || at === 'latest';
    t.is(picked, join(root, completed ? 'ckpt-2' : 'ckpt-1'), `failure at ${at}`);
    const prev = await mgr.load(join(root, 'ckpt-1'));
    t.deepEqual(Array.from(prev.weights.get('language_model.lora_A.weight')!.data<'f32'>()), [1, 1.5, -1], `previous intact (${at})`);
    if (!completed) t.is(mgr.latestPointer(), join(root, 'ckpt-1'));
  }
});

test('SIGKILL in the middle of a save: the previous checkpoint stays valid and resume picks it', async (t) => {
  const root = join(tmp(), 'checkpoints');
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/train/helpers/save-then-hang.ts', root], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  child.stderr.on('data', (d) => { err += d; });
  const exited = new Promise<{ code: number | null; signal: string | null }>((res) => child.on('exit', (code, signal) => res({ code, signal })));
  await new Promise<void>((res, rej) => {
    child.stdout.on('data', (d) => { out += d; if (out.includes('MIDWAY')) res(); });
    child.on('exit', () => rej(new Error(`child exited before MIDWAY: ${out} ${err}`)));
  });
  child.kill('SIGKILL');
  const { signal } = await exited;
  t.is(signal, 'SIGKILL');
  t.false(out.includes('DONE'));
  t.true(existsSync(join(root, 'ckpt-2.tmp', 'weights.safetensors')), 'the killed save left a partial .tmp');
  t.false(existsSync(join(root, 'ckpt-2')));
  const picked = await resolveResume(root, 'auto');
  t.is(picked, join(root, 'ckpt-1'));
  const c = await new CheckpointManager(root, fakeIO).load(picked!);
  t.is(c.step, 1);
  t.deepEqual(Array.from(c.weights.get('w')!.data<'f32'>()), [1, 2, 3]);
  t.deepEqual(c.rng, { trainer: [1, 2, 3, 1] });
  t.is(readFileSync(join(root, 'latest'), 'utf8'), 'ckpt-1\n');
});

test('a save the file system fails (a full disk) names the checkpoint, removes its partial copy, and says what is intact', async (t) => {
  const root = join(tmp(), 'checkpoints');
  let full = false;
  const io = {
    ...fakeIO,
    save(path: string, tensors: Map<string, Tensor>, meta?: Record<string, string>) {
      if (full) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      return fakeIO.save(path, tensors, meta);
    },
  };
  const mgr = new CheckpointManager(root, io as typeof fakeIO, { keepLast: 3 });
  await mgr.save(payload(1));
  full = true;
  await t.throwsAsync(mgr.save(payload(2)), {
    instanceOf: CheckpointError,
    message: /^saving checkpoint ckpt-2 in .*checkpoints failed: ENOSPC: no space left on device, write; ckpt-1 is intact \(resume from it with --resume auto\)$/,
  });
  t.deepEqual(readdirSync(root).sort(), ['ckpt-1', 'latest']);
});
