// `owlet launch` as a user runs it: prefixed output of every rank, a failing rank's exit code and error, a rank killed
// mid-run and Ctrl-C both stop every rank within seconds with no process left behind (so does killing the launcher
// itself), and a node that never starts makes the rendezvous time out naming its ranks.
import test from 'ava';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tinyRun, freePort, type TinyRun } from './helpers/tiny-run.ts';
import { alive, owlet, processesWith, rankPids } from './helpers/cli.ts';

let run: TinyRun;
test.before(async () => { run = await tinyRun(); });
test.after.always(() => rmSync(run.dir, { recursive: true, force: true }));

/** A training run that would take minutes, so it is surely running when the test acts. */
const longTrain = (out: string) => ['train', '--config', run.config, '--set', `run.out_dir=${out}`, '--set', 'training.steps=100000',
  '--set', 'logging.every=20'];

test.serial('every rank runs the command with its output prefixed; the launcher exits 0', async (t) => {
  const r = owlet(['launch', '--nproc-per-node', '2', '--master-port', '0', '--', 'estimate', '--config', 'configs/stage1-7b.yaml']);
  const { code } = await r.done;
  t.is(code, 0, r.lines.join('\n'));
  for (const rank of [0, 1]) t.true(r.lines.some((l) => l.startsWith(`[rank ${rank}] stage 1: training vision, queries, abstractor`)), `rank ${rank}`);
  t.is(rankPids(r.lines).length, 2);
});

test.serial('a rank that fails makes the launcher exit with its code and its error', async (t) => {
  const r = owlet(['launch', '--nproc-per-node', '2', '--master-port', '0', '--', 'train', '--config', 'missing.yaml']);
  const { code } = await r.done;
  t.is(code, 2, 'the rank\'s exit code (a usage error)');
  t.regex(r.lines.at(-1)!, /^owlet: launch: rank [01] exited with code 2: cannot read config 'missing\.yaml': no such file$/);
  t.true(r.lines.some((l) => /^\[rank [01]\] owlet: cannot read config/.test(l)));
});

test.serial('a rank killed mid-run stops the launch within seconds, non-zero, leaving no process behind', async (t) => {
  const marker = `${run.dir}/killed`;
  const r = owlet(['launch', '--nproc-per-node', '2', '--master-port', '0', '--', ...longTrain(marker)]);
  await r.waitFor(/^\[rank 0\] step 20\/100000 /);
  const pids = rankPids(r.lines);
  t.is(pids.length, 2);
  t.is(processesWith(marker).length, 3, 'launcher and two ranks are running');
  const killedAt = Date.now();
  process.kill(pids[1], 'SIGKILL');
  const { code, at } = await r.done;
  t.not(code, 0);
  t.true(at - killedAt < 5000, `the launch ended ${at - killedAt} ms after the kill`);
  t.true(r.lines.some((l) => l === `[launch] rank 1 (pid ${pids[1]}) was killed by SIGKILL: stopping the other 1 rank(s)`), r.lines.join('\n'));
  t.regex(r.lines.at(-1)!, /^owlet: launch: rank 1 was killed by SIGKILL/);
  t.false(alive(pids[0]), 'rank 0 is gone');
  t.deepEqual(processesWith(marker), [], 'no process of this run is left');
});

test.serial('Ctrl-C (SIGINT) reaches every rank; they stop together after a step with a checkpoint; the launcher exits 130', async (t) => {
  const marker = `${run.dir}/interrupted`;
  const r = owlet(['launch', '--nproc-per-node', '2', '--master-port', '0', '--', ...longTrain(marker)]);
  await r.waitFor(/^\[rank 0\] step 20\/100000 /);
  const pids = rankPids(r.lines);
  const sentAt = Date.now();
  r.child.kill('SIGINT');
  const { code, at } = await r.done;
  t.is(code, 130);
  t.true(at - sentAt < 5000, `${at - sentAt} ms`);
  t.regex(r.lines.at(-1)!, /^owlet: launch: interrupted by SIGINT; all 2 rank\(s\) stopped$/);
  t.false(pids.some(alive));
  t.deepEqual(processesWith(marker), []);
  // (rank 0 writes the folder: its checkpoint of the step both ranks stopped at, and how to continue)
  const stopped = r.lines.map((l) => /^\[rank 0\] stopped at step (\d+)\/100000$/.exec(l)).find(Boolean);
  t.truthy(stopped, r.lines.join('\n'));
  t.true(existsSync(join(marker, 'checkpoints', `ckpt-${stopped![1]}`)), `ckpt-${stopped![1]}`);
  t.true(r.lines.some((l) => /^\[rank 0\] stopped: \d+\/100000 steps, checkpoint .*; the same command with --resume auto continues it$/.test(l)));
  t.false(existsSync(join(marker, 'final')), 'no final export of a stopped run');
});

test.serial('a launcher killed outright (SIGKILL) does not leave its ranks running', async (t) => {
  const marker = `${run.dir}/orphans`;
  const r = owlet(['launch', '--nproc-per-node', '2', '--master-port', '0', '--', ...longTrain(marker)]);
  await r.waitFor(/^\[rank 0\] step 20\/100000 /);
  const pids = rankPids(r.lines);
  r.child.kill('SIGKILL');
  await r.done;
  const until = Date.now() + 5000;
  while (pids.some(alive) && Date.now() < until) await new Promise((res) => setTimeout(res, 100));
  t.false(pids.some(alive), 'the ranks noticed their launcher was gone and stopped');
  t.deepEqual(processesWith(marker), []);
});

test.serial('a node that never starts: the rendezvous times out naming its ranks, and the launch fails', async (t) => {
  const port = await freePort();
  const r = owlet(['launch', '--nproc-per-node', '1', '--nnodes', '2', '--node-rank', '0', '--master-port', String(port), '--',
    'train', '--config', run.config, '--set', `run.out_dir=${run.dir}/lonely`], { OWLET_RENDEZVOUS_TIMEOUT: '1.5' });
  const { code } = await r.done;
  t.is(code, 1);
  t.regex(r.lines.at(-1)!, new RegExp(`^owlet: launch: rank 0 exited with code 1: rendezvous on rank 0 of 2: timed out after 1\\.5 s: ` +
    `rank 1 of 2 did not arrive \\(store 127\\.0\\.0\\.1:${port}\\)$`));
});

// One process (no launcher): SIGTERM, as a scheduler preempts, stops after the step with a checkpoint; --resume auto
// then ends exactly where an uninterrupted run ends (same final weights, bit for bit, and the same records).
test.serial('owlet train alone: SIGTERM stops after a step with a checkpoint (exit 143), and the resume ends as an uninterrupted run', async (t) => {
  const train = (out: string) => ['train', '--config', run.config, '--set', `run.out_dir=${out}`, '--set', 'training.steps=30',
    '--set', 'logging.every=1', '--set', 'logging.save_every=0', '--set', 'logging.progress=false'];
  const straightDir = `${run.dir}/straight`, stoppedDir = `${run.dir}/stopped`;
  const straight = owlet(train(straightDir));
  t.is((await straight.done).code, 0, straight.lines.join('\n'));
  const r = owlet(train(stoppedDir));
  await r.waitFor(/^step 3\/30 /);
  r.child.kill('SIGTERM');
  // (a second signal right after the first is the same interrupt: a terminal's Ctrl-C reaches the ranks of owlet
  // launch twice, directly and forwarded)
  setTimeout(() => r.child.kill('SIGTERM'), 100);
  const { code } = await r.done;
  t.is(code, 143, r.lines.join('\n'));
  const at = Number(/^stopped at step (\d+)\/30$/.exec(r.lines.find((l) => l.startsWith('stopped at step'))!)![1]);
  t.true(at >= 3 && at < 30 && existsSync(join(stoppedDir, 'checkpoints', `ckpt-${at}`)), `stopped at ${at}`);
  const resumed = owlet([...train(stoppedDir), '--resume', 'auto']);
  t.is((await resumed.done).code, 0, resumed.lines.join('\n'));
  t.deepEqual(readFileSync(join(stoppedDir, 'final', 'model.safetensors')), readFileSync(join(straightDir, 'final', 'model.safetensors')));
  const rows = (dir: string) => readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => {
    const { step, loss, grad_norm, lr } = JSON.parse(l) as Record<string, number>;
    return { step, loss, grad_norm, lr };
  });
  t.deepEqual(rows(stoppedDir), rows(straightDir));
});

// --master-addr that is not this machine's while this node (node 0) serves the rendezvous: the ranks waited out the
// rendezvous timeout and blamed a host that "is not running". The launcher now warns first, naming both sides.
test.serial('node 0 with a --master-addr that is none of its addresses: the launcher warns before the ranks time out', async (t) => {
  const r = owlet(['launch', '--nproc-per-node', '2', '--master-addr', '192.0.2.7', '--master-port', String(await freePort()), '--',
    'train', '--config', run.config, '--set', `run.out_dir=${run.dir}/elsewhere`], { OWLET_RENDEZVOUS_TIMEOUT: '1.5' });
  const { code } = await r.done;
  t.is(code, 1);
  t.true(r.lines.some((l) => /^\[launch\] warning: --master-addr 192\.0\.2\.7 \(192\.0\.2\.7\) is none of this machine's addresses \(.*127\.0\.0\.1.*\), yet this node \(--node-rank 0\) serves the rendezvous there/.test(l)),
    r.lines.join('\n'));
});
