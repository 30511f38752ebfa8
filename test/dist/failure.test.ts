// Failures of a multi-process run that must end it within seconds, not after the 30-minute operation timeout: a rank
// that stops before an exchange the others wait in (a model that failed to load on one node), and ranks that reach
// different exchanges (--resume given to some ranks only). The small exchanges (gather, shareFromRoot) once went
// through the store, whose reads wait for a key until the operation timeout; they now ride on gloo collectives.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, tinyRun, type TinyRun } from './helpers/tiny-run.ts';
import { owlet } from './helpers/cli.ts';
import { runWorkerRanks } from './helpers/worker-ranks.ts';
import { GlooProcessGroup } from '../../lib/dist/process-group.ts';
import { readDistEnv } from '../../lib/dist/env.ts';
import { launch } from '../../lib/dist/launch.ts';
import { UsageError } from '../../lib/train/errors.ts';
import { DistributedError } from '../../lib/tensor/errors.ts';

interface Result { ok?: Record<string, unknown>; error?: { name: string; op: string; message: string }; opMs?: number | null }

/** Two ranks of the exchange worker (rank 0 hosts the store, as under torchrun), with a 20 s operation timeout. */
async function twoRanks(scenario: string, envOf: (rank: number) => Record<string, string> = () => ({})): Promise<Result[]> {
  return runWorkerRanks<Result>({
    worker: 'test/dist/helpers/exchange-worker.ts', scenario, ranks: [0, 1], timeoutMs: 60_000, silent: {}, // (the rank that exits on purpose)
    env: (rank, port) => ({ RANK: String(rank), WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port),
      OWLET_DIST_TIMEOUT: '20', OMP_NUM_THREADS: '1', ...envOf(rank) }),
  });
}

test.serial('gather and shareFromRoot carry any text between ranks, byte for byte', async (t) => {
  const rs = await twoRanks('exchanges');
  for (const [r, res] of rs.entries()) {
    t.falsy(res.error, JSON.stringify(res.error));
    t.deepEqual(res.ok, {
      a: r === 0 ? ['ab', 'ünïcødé → 🦉 and some more text'] : null,
      b: r === 0 ? ['', 'x'] : null,
      s: JSON.stringify({ path: '/runs/é/ckpt-3', n: 1e-300 }),
      e: '',
    });
  }
});

test.serial('a rank that stopped before an exchange makes the others fail at once, not after the operation timeout', async (t) => {
  const [r0] = await twoRanks('peer-gone');
  t.is(r0.error?.name, 'DistributedError');
  t.is(r0.error?.op, 'gather');
  t.regex(r0.error!.message, /^gather: allreduce on rank 0 of 2: .*another rank exited or crashed/);
  t.true(r0.opMs! < 5000, `failed after ${r0.opMs} ms (the operation timeout is 20 s)`);
});

test.serial('ranks at different exchanges all stop at once, naming where each one is', async (t) => {
  const rs = await twoRanks('out-of-step');
  for (const [r, res] of rs.entries()) {
    t.is(res.error?.name, 'DistributedError', JSON.stringify(res));
    t.is(res.error!.message, `${r === 0 ? 'shareFromRoot' : 'gather'} on rank ${r} of 2: the ranks are out of step — rank 0 is at ` +
      'shareFromRoot #0, rank 1 at gather #0 (do all ranks run the same command? e.g. --resume given to some ranks only)');
    t.true(res.opMs! < 5000, `rank ${r} failed after ${res.opMs} ms`);
  }
});

// Nodes launched with different --nproc-per-node (or --nnodes) give their ranks different WORLD_SIZEs: each waited
// the rendezvous timeout (300 s) for ranks that do not exist, or for the others' mesh, and then named neither.
test.serial('ranks started with different WORLD_SIZEs stop at the rendezvous at once, naming both sizes', async (t) => {
  const rs = await twoRanks('exchanges', (rank) => ({ WORLD_SIZE: rank === 0 ? '3' : '2', OWLET_RENDEZVOUS_TIMEOUT: '20' }));
  for (const [r, res] of rs.entries()) {
    t.is(res.error?.op, 'rendezvous', JSON.stringify(res));
    const [mine, theirs] = r === 0 ? [3, 2] : [2, 3];
    t.regex(res.error!.message, new RegExp(`^rendezvous on rank ${r} of ${mine}: rank ${1 - r} \\(.* pid \\d+\\) was started with ` +
      `WORLD_SIZE=${theirs}, this rank with ${mine}: every rank of a run needs the same WORLD_SIZE \\(owlet launch: the same ` +
      '--nnodes and --nproc-per-node on every node\\)$'));
  }
});

// A GLOO_SOCKET_IFNAME this machine does not have failed only once every rank had arrived (here: after the rendezvous
// timeout, rank 1 never comes), with gloo's "ifa != nullptr. Unable to find address for: nosuch0".
test.serial('a GLOO_SOCKET_IFNAME that is not an interface of this machine is refused before the rendezvous, naming those it has', async (t) => {
  const env = { GLOO_SOCKET_IFNAME: 'nosuch0', OWLET_RENDEZVOUS_TIMEOUT: '2' };
  const d = { rank: 0, localRank: 0, worldSize: 2, localWorldSize: 2, masterAddr: '127.0.0.1', masterPort: await freePort() };
  const started = Date.now();
  const e = t.throws(() => GlooProcessGroup.connect(d, { env }), { instanceOf: DistributedError });
  t.regex(e!.message, /^GLOO_SOCKET_IFNAME=nosuch0: this machine has no network interface of that name \(it has: .*\blo\b.*\); give one of them/);
  t.true(Date.now() - started < 1000);
});

// The native side holds the world size in an int: WORLD_SIZE=2^32+2 joined a world of 2 there while this side sized its
// exchanges for 4 billion ranks ("Invalid typed array length: 12884901894"), and --nnodes 40000 × 2 started ranks
// told so.
test('a world of more than 65536 ranks is refused, by hand and by the launcher', async (t) => {
  const env = { RANK: '0', MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500' };
  t.is(readDistEnv({ ...env, WORLD_SIZE: '65536' })!.worldSize, 65536);
  for (const w of ['65537', '4294967298']) {
    t.throws(() => readDistEnv({ ...env, WORLD_SIZE: w }), { instanceOf: DistributedError, message: `WORLD_SIZE=${w} is not an integer in [1, 65536]` });
  }
  await t.throwsAsync(launch({ nprocPerNode: 2, nnodes: 40000, nodeRank: 1, masterAddr: '10.0.0.1', command: ['train'], err: () => {}, out: () => {} }),
    { instanceOf: UsageError, message: 'launch: --nnodes 40000 × --nproc-per-node 2 is more than 65536 ranks' });
});

// The same two failures through owlet train, its ranks started by hand (torchrun-style: no launcher to stop the others).
let run: TinyRun;
test.before(async () => { run = await tinyRun(); });
test.after.always(() => rmSync(run.dir, { recursive: true, force: true }));

async function trainPair(name: string, args0: string[], args1: string[], configs = [run.config, run.config]) {
  const port = String(await freePort());
  const env = (rank: number) => ({ RANK: String(rank), WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: port, OWLET_DIST_TIMEOUT: '60' });
  const base = (rank: number) => ['train', '--config', configs[rank], '--set', `run.out_dir=${join(run.dir, name)}`];
  const r0 = owlet([...base(0), ...args0], env(0)), r1 = owlet([...base(1), ...args1], env(1));
  const [d0, d1] = await Promise.all([r0.done, r1.done]);
  return [{ ...d0, lines: r0.lines }, { ...d1, lines: r1.lines }];
}

test.serial('owlet train: a rank whose weights fail to load stops the rank waiting for it within seconds', async (t) => {
  const bad = join(run.dir, 'bad.safetensors');
  writeFileSync(bad, 'not a safetensors file');
  const [r0, r1] = await trainPair('bad-weights', [], ['--set', `model.weights=${bad}`]);
  t.is(r1.code, 1);
  t.regex(r1.lines.at(-1)!, /^owlet: .*bad\.safetensors/);
  t.is(r0.code, 1);
  t.regex(r0.lines.at(-1)!, /^owlet: gather: allreduce on rank 0 of 2: .*another rank exited or crashed/);
  t.true(r0.at - r1.at < 10_000, `rank 0 ended ${r0.at - r1.at} ms after rank 1 (its operation timeout is 60 s)`);
});

test.serial('owlet train: --resume given to one rank only stops both ranks at once, saying so', async (t) => {
  const [r0, r1] = await trainPair('resume-one', ['--resume', 'auto'], []);
  for (const [r, d] of [r0, r1].entries()) {
    t.is(d.code, 1);
    t.regex(d.lines.at(-1)!, new RegExp(`^owlet: \\w+ on rank ${r} of 2: the ranks are out of step — rank 0 is at shareFromRoot #0, ` +
      'rank 1 at gather #0 \\(.*--resume given to some ranks only\\)$'));
  }
  t.true(Math.abs(r0.at - r1.at) < 10_000);
});

// Two nodes whose copies of a data file differ (same name, so the configs agree) count different epochs in steps:
// rank 0 went on into the last checkpoint's exchange while rank 1 began its next step, and gloo aborted rank 1 on the
// mismatched message sizes (SIGABRT, "terminate called … op.preamble.length <= op.nbytes").
test.serial('owlet train: ranks whose data files differ in length stop together before training, naming the step counts', async (t) => {
  const text = readFileSync(join(run.dir, 'data', 'train_text.jsonl'), 'utf8').split('\n').slice(0, 10).join('\n') + '\n';
  mkdirSync(join(run.dir, 'node1'), { recursive: true });
  writeFileSync(join(run.dir, 'node1', 'train_text.jsonl'), text);
  const byEpochs = (config: string) => config.replace('training: { steps: 3,', 'training: { epochs: 1,');
  const tiny = readFileSync(run.config, 'utf8');
  const configs = [join(run.dir, 'node0.yaml'), join(run.dir, 'node1.yaml')];
  writeFileSync(configs[0], byEpochs(tiny));
  writeFileSync(configs[1], byEpochs(tiny).replace(join(run.dir, 'data', 'train_text.jsonl'), join(run.dir, 'node1', 'train_text.jsonl')));
  const [r0, r1] = await trainPair('data-differs', [], [], configs);
  for (const d of [r0, r1]) {
    t.is(d.code, 1, d.lines.join('\n'));
    t.is(d.lines.at(-1), 'owlet: the ranks would not take the same steps (does every node have the same data files? the same ' +
      'checkpoints?) — rank 1: training steps: 8 on rank 0, 3 there');
  }
});

// The launcher's one-line verdict named the last line the failed rank printed, which for an uncaught exception is
// Node's "Node.js v20.x" (found by the launcher audit): it names the crash report's error line now.
test.serial('owlet launch: a rank that crashes with an uncaught exception is reported by its error, not the Node version', async (t) => {
  const crash = join(process.cwd(), 'test', 'dist', 'helpers', 'crash-rank.mjs');
  const r = owlet(['launch', '--nproc-per-node', '2', '--master-port', '0', '--', 'estimate', '--config', 'configs/stage1-7b.yaml'],
    { NODE_OPTIONS: `--import ${crash}` });
  const { code } = await r.done;
  t.is(code, 1, r.lines.join('\n'));
  t.true(r.lines.some((l) => /^\[rank 1\] Node\.js v\d/.test(l)), 'the rank printed a Node.js crash report');
  t.is(r.lines.at(-1), 'owlet: launch: rank 1 exited with code 1: TypeError: injected crash of rank 1');
});

// A rank that left with code 0 in the middle of a run made the others fail ("another rank exited or crashed"), and the
// launcher reported only the rank that blamed another, without saying which one had left.
test.serial('owlet launch: a rank that left quietly (code 0) mid-run is named beside the error of the rank it stranded', async (t) => {
  const out = join(run.dir, 'quit');
  const r = owlet(['launch', '--nproc-per-node', '2', '--master-port', '0', '--', 'train', '--config', run.config,
    '--set', `run.out_dir=${out}`, '--set', 'training.steps=100000', '--set', 'logging.every=1'],
  { NODE_OPTIONS: `--import ${join(process.cwd(), 'test', 'dist', 'helpers', 'quit-rank.mjs')}`, QUIT_WHEN_EXISTS: join(out, 'metrics.jsonl') });
  const { code } = await r.done;
  t.is(code, 1, r.lines.join('\n'));
  t.regex(r.lines.at(-1)!, /^owlet: launch: rank 0 exited with code 1: .*another rank exited or crashed: see its own error\); before it, rank 1 exited with code 0$/);
});

/** Runs owlet with `args`, closing its stdout after the first output as `head -n 1` does; asserts that the run still
 *  ended with exit 0, no EPIPE, and its step-4 checkpoint in `out`. */
async function trainsOnWithStdoutClosed(t: ExecutionContext, args: string[], out: string): Promise<void> {
  const child = spawn(process.execPath, ['bin/owlet.js', ...args], { env: { ...process.env, OMP_NUM_THREADS: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  child.stdout.once('data', () => child.stdout.destroy()); // head -n 1
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const code = await new Promise<number | null>((res) => child.on('close', (c) => res(c)));
  clearTimeout(timer);
  t.is(code, 0, err);
  t.false(err.includes('EPIPE'), err);
  t.true(existsSync(join(out, 'checkpoints', 'ckpt-4')), 'the run trained to its end and saved');
}

// `owlet launch … | head`: once head had its lines, the launcher's next write failed with EPIPE, an unhandled 'error'
// event crashed it, and its ranks, finding it gone, stopped without a checkpoint. The run now goes on to its end.
test.serial('owlet launch: a closed stdout (piped into head) drops the lines, not the run', async (t) => {
  const out = join(run.dir, 'headless');
  await trainsOnWithStdoutClosed(t, ['launch', '--nproc-per-node', '2', '--master-port', '0', '--', 'train', '--config', run.config,
    '--set', `run.out_dir=${out}`, '--set', 'training.steps=4'], out);
});

// The same without the launcher: `owlet train … | head` ended the training run itself at the first write after head
// exited (the CLI now drops output to a closed stdout instead).
test.serial('owlet train: a closed stdout (piped into head) drops the lines, not the run', async (t) => {
  const out = join(run.dir, 'headless-train');
  await trainsOnWithStdoutClosed(t, ['train', '--config', run.config, '--set', `run.out_dir=${out}`, '--set', 'training.steps=4',
    '--set', 'logging.save_every=2'], out);
});
