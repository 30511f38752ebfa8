// Data-parallel training end to end on the CPU (gloo over loopback), on a tiny stage-2 run with LoRA and dropout:
// two ranks equal one rank accumulating two micro-batches (same samples, same seeds, weights equal to fp32 reduction
// order); rank 0 alone writes the run folder; a two-rank checkpoint resumes on one rank and a one-rank checkpoint on
// two, both ending where an uninterrupted run ends.
import test from 'ava';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { loadSafetensors } from '../../lib/model/io/index.ts';
import { main } from '../../lib/cli/main.ts';
import type { StepStats } from '../../lib/train/metrics.ts';
import { freePort, tinyRun, type TinyRun } from './helpers/tiny-run.ts';
import { LOCK_FILE, lockRunFolder } from '../../lib/train/run-lock.ts';
import { owlet } from './helpers/cli.ts';

let run: TinyRun;
test.before(async () => { run = await tinyRun(); });
test.after.always(() => rmSync(run.dir, { recursive: true, force: true }));

const out = (name: string) => join(run.dir, name);
const ckpt = (name: string, step: number) => join(out(name), 'checkpoints', `ckpt-${step}`);

/** One process, in this test worker (no torchrun variables: a group of one). */
async function trainAlone(name: string, ...args: string[]): Promise<void> {
  const lines: string[] = [];
  const code = await main(['train', '--config', run.config, '--set', `run.out_dir=${out(name)}`, ...args],
    { out: (l) => lines.push(l), err: (l) => lines.push(l) });
  if (code !== 0) throw new Error(`train ${name} exited ${code}:\n${lines.join('\n')}`);
}

// Gradient buckets of 4 kB (the tiny model's trainable parameters fill about ten), all-reduced during the backward.
const SMALL_BUCKETS = { OWLET_DIST_BUCKET_MB: '0.004' };

async function trainOnTwo(name: string, args: string[] = [], env: Record<string, string> = SMALL_BUCKETS): Promise<string[]> {
  const r = owlet(['launch', '--nproc-per-node', '2', '--master-port', '0', '--', 'train', '--config', run.config,
    '--set', `run.out_dir=${out(name)}`, ...args], env);
  const { code } = await r.done;
  if (code !== 0) throw new Error(`launch ${name} exited ${code}:\n${r.lines.join('\n')}`);
  return r.lines;
}

/** Largest absolute difference between two checkpoints' tensors of one file (weights or optimizer state). */
function maxDiff(a: string, b: string, file = 'weights.safetensors'): number {
  const x = loadSafetensors(join(a, file)), y = loadSafetensors(join(b, file));
  if ([...x.keys()].sort().join() !== [...y.keys()].sort().join()) throw new Error('different tensor names');
  let m = 0;
  for (const [k, t] of x) {
    const u = t.toFloat32(), v = y.get(k)!.toFloat32();
    for (let i = 0; i < u.length; i++) m = Math.max(m, Math.abs(u[i] - v[i]));
    t.dispose(); y.get(k)!.dispose();
  }
  return m;
}

const history = (dir: string) => (JSON.parse(readFileSync(join(dir, 'metrics.json'), 'utf8')) as { history: StepStats[] }).history;
const state = (dir: string) => JSON.parse(readFileSync(join(dir, 'trainer_state.json'), 'utf8'));

test.serial('two ranks × 3 steps end with the weights of one rank accumulating 2 micro-batches over the same samples', async (t) => {
  const lines = await trainOnTwo('two');                 // global_batch 4 = 2 ranks × micro 2 × accumulation 1
  await trainAlone('one');                               // global_batch 4 = 1 rank × micro 2 × accumulation 2
  await trainAlone('half', '--set', 'training.global_batch=2');   // what rank 0 alone would have done: a different run
  const two = history(ckpt('two', 3)), one = history(ckpt('one', 3));
  t.deepEqual(two.map((s) => [s.tokens, s.images, s.counted]), one.map((s) => [s.tokens, s.images, s.counted]), 'the same samples each step');
  two.forEach((s, i) => t.true(Math.abs(s.loss - one[i].loss) < 1e-5 && Math.abs(s.gradNorm - one[i].gradNorm) < 1e-5, `step ${i + 1}`));
  const d = maxDiff(ckpt('two', 3), ckpt('one', 3));
  t.true(d < 2e-6, `weights differ by ${d}`);
  t.true(maxDiff(ckpt('two', 3), ckpt('one', 3), 'optimizer.safetensors') < 1e-7);
  t.true(maxDiff(ckpt('two', 3), ckpt('half', 3)) > 100 * d, 'the comparison can tell runs apart');
  // Overlapped with the backward (above) or after it: the same sums, so the same weights to the last bit.
  await trainOnTwo('two-after', [], { ...SMALL_BUCKETS, OWLET_DIST_OVERLAP: '0' });
  t.is(maxDiff(ckpt('two', 3), ckpt('two-after', 3)), 0);
  t.is(maxDiff(ckpt('two', 3), ckpt('two-after', 3), 'optimizer.safetensors'), 0);
  // The final evaluation: each rank evaluated half of the 4 eval samples, the sums were combined.
  const evalLoss = (name: string) => JSON.parse(readFileSync(join(out(name), 'metrics.jsonl'), 'utf8').trim().split('\n').at(-1)!).eval_loss;
  t.true(Math.abs(evalLoss('two') - evalLoss('one')) < 1e-5, `eval loss ${evalLoss('two')} vs ${evalLoss('one')}`);
  t.deepEqual(state(ckpt('two', 3)).data.ranks.map((p: { rank: number; pos: number }) => [p.rank, p.pos]), [[0, 6], [1, 6]]);

  // Rank 0 alone reports and writes: its lines only, one metrics file, one TensorBoard stream, the exports.
  t.true(lines.includes('[rank 0] data parallel: 2 ranks × micro-batch 2 × accumulation 1 = global batch 4'));
  t.is(lines.filter((l) => /^\[rank 0\] step \d\/3 /.test(l)).length, 3);
  t.false(lines.some((l) => l.startsWith('[rank 1] ')), lines.filter((l) => l.startsWith('[rank 1]')).join('\n'));
  t.is(readFileSync(join(out('two'), 'metrics.jsonl'), 'utf8').trim().split('\n').length, 3);
  t.is(readdirSync(join(out('two'), 'tensorboard')).length, 1);
  t.true(existsSync(join(out('two'), 'final', 'adapter', 'adapter_model.safetensors')));
});

test.serial('a two-rank checkpoint resumes on one rank, and a one-rank checkpoint on two, like an uninterrupted run', async (t) => {
  await trainAlone('straight', '--set', 'training.steps=5');
  await trainAlone('two', '--set', 'training.steps=5', '--resume', 'auto'); // saved by 2 ranks at step 3
  t.true(maxDiff(ckpt('two', 5), ckpt('straight', 5)) < 2e-6);
  t.deepEqual(state(ckpt('two', 5)).data, { ...state(ckpt('straight', 5)).data, pos: 8, base: 12 },
    'one rank continues the global stream at sample 12 = 3 steps × 4');
  const lines = await trainOnTwo('one', ['--set', 'training.steps=5', '--resume', 'auto']); // saved by 1 rank at step 3
  t.true(lines.some((l) => /^\[rank 0\] resumed from .*ckpt-3 at step 3\/5$/.test(l)));
  t.true(maxDiff(ckpt('one', 5), ckpt('straight', 5)) < 2e-6);
  t.deepEqual(history(ckpt('one', 5)).map((s) => s.tokens), history(ckpt('straight', 5)).map((s) => s.tokens));
});

test.serial('ranks that do not run the same configuration stop together, naming the difference', async (t) => {
  // (torchrun-style: each rank started on its own, rank 1 with a learning rate the other does not have)
  const port = String(await freePort());
  const env = (rank: number) => ({ RANK: String(rank), WORLD_SIZE: '2', LOCAL_RANK: String(rank), LOCAL_WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: port });
  const args = ['train', '--config', run.config, '--set', `run.out_dir=${out('mismatch')}`];
  const r0 = owlet(args, env(0)), r1 = owlet([...args, '--set', 'optimizer.lr=0.5'], env(1));
  const [a, b] = await Promise.all([r0.done, r1.done]);
  for (const [r, done] of [[r0, a], [r1, b]] as const) {
    t.not(done.code, 0);
    t.true(r.lines.some((l) => /the ranks do not run the same configuration — rank 1: config\.optimizer\.lr: 0\.001 on rank 0, 0\.5 there/.test(l)), r.lines.join('\n'));
  }
  t.false(existsSync(join(out('mismatch'), 'checkpoints')), 'nothing trained');
});

test.serial('one run folder, one run: a second run on a folder in use is refused, naming the holder', async (t) => {
  const dir = out('locked');
  const release = lockRunFolder(dir);
  try {
    const lines: string[] = [];
    const code = await main(['train', '--config', run.config, '--set', `run.out_dir=${dir}`], { out: (l) => lines.push(l), err: (l) => lines.push(l) });
    t.is(code, 2);
    t.regex(lines.join('\n'), new RegExp(`run folder .*locked is in use by another owlet run \\(pid ${process.pid} on `));
    t.false(existsSync(join(dir, 'config.json')), 'the refused run wrote nothing');
  } finally {
    release();
  }
  t.false(existsSync(join(dir, LOCK_FILE)));
  // a lock left by a process that no longer exists (killed) is taken over
  writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: 2 ** 22 + 12345, host: hostname(), started: 'then' }));
  await trainAlone('locked', '--set', 'training.steps=1');
  t.false(existsSync(join(dir, LOCK_FILE)), 'released at the end');
});

// Two processes taking one stale lock over at once both removed "the stale lock" — one of them the other's fresh one —
// and both ran (resume audit, 3 of 30 trials): only the holder of the takeover guard removes it, after checking under
// the guard that it is still that stale lock.
test.serial('a stale lock is taken over by one process only: not while another holds the takeover guard', (t) => {
  const dir = out('stale-guard'), lock = join(dir, LOCK_FILE), guard = `${lock}.takeover`;
  mkdirSync(dir, { recursive: true });
  const stale = JSON.stringify({ pid: 2 ** 22 + 12345, host: hostname(), started: 'then' });
  writeFileSync(lock, stale);
  writeFileSync(guard, ''); // another process is taking it over right now
  t.throws(() => lockRunFolder(dir), { message: /is in use by another owlet run \(pid 4206649 on .*since then\)/ });
  t.is(readFileSync(lock, 'utf8'), stale, 'the lock was not removed');
  // a guard a minute old was left by a process that died while taking over: replaced
  const old = new Date(Date.now() - 120_000);
  utimesSync(guard, old, old);
  const release = lockRunFolder(dir);
  t.is(JSON.parse(readFileSync(lock, 'utf8')).pid, process.pid);
  t.false(existsSync(guard));
  // now held by a live process (this one): refused, and nothing removed
  t.throws(() => lockRunFolder(dir), { message: new RegExp(`in use by another owlet run \\(pid ${process.pid} `) });
  release();
  t.false(existsSync(lock));
});
