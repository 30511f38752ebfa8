// `owlet launch`: starts this node's ranks of a multi-process run, as torchrun does. Each rank is
// `node bin/owlet.js <command>` with torchrun's variables (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT) set. Node 0's launcher hosts the rendezvous store (a native server on its own threads) for the whole
// run. Each rank's output lines are prefixed with `[rank r]`. Ctrl-C and SIGTERM are forwarded to the ranks. When a
// rank fails, the others are stopped (SIGTERM, then SIGKILL after a grace period) and the launcher exits with that
// rank's exit code and error; it returns only once every rank it started has exited.
import { spawn, type ChildProcess } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import { availableParallelism, constants, networkInterfaces } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { surviveClosedOutput } from '../cli/io.ts';
import { cpuDist } from '../native.ts';
import { OwletError } from '../tensor/errors.ts';
import { UsageError } from '../train/errors.ts';
import { isLoopback, MAX_WORLD_SIZE } from './env.ts';

/** A rank failed (or the launch was interrupted); exitCode is what the launcher exits with. */
export class LaunchError extends OwletError {
  constructor(m: string, readonly exitCode: number) { super(m, 'OWLET_LAUNCH'); }
}

export interface LaunchOptions {
  nprocPerNode: number;
  nnodes?: number;
  nodeRank?: number;
  masterAddr?: string;
  /** The rendezvous store's port on node 0 (0: any free port, single node only). */
  masterPort?: number;
  /** The owlet command each rank runs, e.g. ['train', '--config', 'run.yaml']. */
  command: string[];
  /** Milliseconds between SIGTERM and SIGKILL when stopping ranks after one failed (default 5000). */
  graceMs?: number;
  /** Milliseconds the ranks get to finish their step and save a checkpoint after Ctrl-C or SIGTERM (default 300000;
   *  a second Ctrl-C stops them at once). */
  interruptGraceMs?: number;
  /** Extra environment for the ranks. */
  env?: Record<string, string>;
  /** Output of the ranks (prefixed lines) and of the launcher. */
  out?: (line: string) => void;
  err?: (line: string) => void;
}

interface Rank {
  rank: number;
  child: ChildProcess;
  exited: Promise<void>;
  code: number | null;
  signal: NodeJS.Signals | null;
  lastErr: string[];
  /** 1 for the first rank to exit, 2 for the next… (Infinity while it runs). */
  exitOrder: number;
}

/** A rank's last stderr lines kept to explain its failure: enough for a Node.js crash report (error line, ten stack
 *  frames, the error's properties, the version line). */
const ERR_LINES_KEPT = 40;
/** The last line of a Node.js crash report (an uncaught exception or unhandled rejection): it explains nothing. */
const NODE_VERSION_LINE = /^Node\.js v\d/;
/** The error line of a Node.js crash report: `Error: …`, `TypeError [ERR_X]: …`, `Uncaught RangeError: …`. */
const CRASH_ERROR_LINE = /^(?:Uncaught )?(?:[A-Za-z_$][\w$]*)?(?:Error|Exception)(?: \[\w+\])?: /;

/** The line that says why a rank failed: owlet's own error line, else the error line of a crash report (an uncaught
 *  exception's report ends with the Node.js version, which was reported as the rank's error), else none. */
function failureLine(lines: string[]): string | undefined {
  const owlet = lines.findLast((l) => l.startsWith('owlet:'));
  return owlet ?? lines.findLast((l) => CRASH_ERROR_LINE.test(l));
}

const BIN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'owlet.js');

function check(o: LaunchOptions): Required<Pick<LaunchOptions, 'nnodes' | 'nodeRank' | 'masterAddr' | 'masterPort' | 'graceMs'>> {
  const n = { nnodes: o.nnodes ?? 1, nodeRank: o.nodeRank ?? 0, masterAddr: o.masterAddr ?? '127.0.0.1', masterPort: o.masterPort ?? 29500, graceMs: o.graceMs ?? 5000 };
  const int = (v: number, name: string, min: number, max = Number.MAX_SAFE_INTEGER) => {
    if (!Number.isInteger(v) || v < min || v > max) throw new UsageError(`launch: ${name} must be an integer in [${min}, ${max}], got ${v}`);
  };
  int(o.nprocPerNode, '--nproc-per-node', 1, 1024);
  int(n.nnodes, '--nnodes', 1);
  int(n.nodeRank, '--node-rank', 0, n.nnodes - 1);
  if (n.nnodes * o.nprocPerNode > MAX_WORLD_SIZE) {
    throw new UsageError(`launch: --nnodes ${n.nnodes} × --nproc-per-node ${o.nprocPerNode} is more than ${MAX_WORLD_SIZE} ranks`);
  }
  int(n.masterPort, '--master-port', n.nnodes === 1 ? 0 : 1, 65535);
  if (!n.masterAddr) throw new UsageError('launch: --master-addr is empty');
  if (!o.command.length) throw new UsageError('launch: give the owlet command to run after --, e.g. owlet launch --nproc-per-node 2 -- train --config run.yaml');
  if (o.command[0] === 'launch') throw new UsageError('launch: the command to run cannot be launch itself');
  // Only train joins the process group: N copies of eval, demo or dump would each do all the work into one output
  // (the answers file held every answer N times).
  if (['eval', 'demo', 'dump'].includes(o.command[0])) {
    throw new UsageError(`launch: ${o.command[0]} does not share its work among processes (train does); run it on its own`);
  }
  return n;
}

/**
 * Why `addr` seems not to lead to this machine, or null. Node 0's launcher serves the rendezvous, so --master-addr
 * must be one of its own addresses; another one (a typo, the address of another node) left the ranks to time out
 * after 300 s with "the process that hosts it … is not running", though the launcher hosting it was running. Only a
 * warning: an address translated to this machine (NAT) is on none of its interfaces and still works.
 */
async function notThisMachine(addr: string): Promise<string | null> {
  let found: string[];
  try {
    found = (await lookup(addr, { all: true })).map((a) => a.address);
  } catch (e) {
    return `--master-addr ${addr} does not resolve (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): the ranks ` +
      'cannot reach the rendezvous this node serves';
  }
  const mine = Object.values(networkInterfaces()).flatMap((l) => (l ?? []).map((i) => i.address));
  if (found.some((a) => mine.includes(a) || isLoopback(a) || a === '0.0.0.0' || a === '::')) return null;
  return `--master-addr ${addr} (${found.join(', ')}) is none of this machine's addresses (${mine.join(', ')}), yet this ` +
    'node (--node-rank 0) serves the rendezvous there: its ranks reach it only if that address leads here (NAT); give ' +
    "node 0's own address";
}

/** Starts this node's ranks and waits for them; resolves when all exited 0, else rejects with LaunchError. */
export async function launch(o: LaunchOptions): Promise<void> {
  const n = check(o);
  const out = o.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const err = o.err ?? ((l: string) => process.stderr.write(l + '\n'));
  const world = n.nnodes * o.nprocPerNode;

  if (n.nodeRank === 0 && !isLoopback(n.masterAddr)) {
    const why = await notThisMachine(n.masterAddr);
    if (why) err(`[launch] warning: ${why}`);
  }
  // Node 0 hosts the store before any rank starts (a port of 0 becomes a real one here).
  let port = n.masterPort;
  let hosted: number | null = null;
  if (n.nodeRank === 0) {
    hosted = cpuDist().storeServerStart(isLoopback(n.masterAddr) ? n.masterAddr : '', n.masterPort);
    port = hosted;
  }

  // CPU ranks share the cores: each gets its part unless the user chose (torchrun sets OMP_NUM_THREADS=1).
  const threads = String(Math.max(1, Math.floor(availableParallelism() / o.nprocPerNode)));
  const ranks: Rank[] = [];
  let failure: Rank | null = null;
  let interrupted: NodeJS.Signals | null = null;
  let killTimer: NodeJS.Timeout | null = null;
  let exits = 0;

  const stopAll = (signal: NodeJS.Signals, graceMs = n.graceMs) => {
    for (const r of ranks) if (r.code === null && r.signal === null) r.child.kill(signal);
    if (!killTimer) {
      killTimer = setTimeout(() => {
        for (const r of ranks) {
          if (r.code === null && r.signal === null) {
            err(`[launch] rank ${r.rank} (pid ${r.child.pid}) did not stop within ${graceMs} ms: SIGKILL`);
            r.child.kill('SIGKILL');
          }
        }
      }, graceMs);
    }
  };
  // A user's Ctrl-C or a scheduler's SIGTERM: forwarded, and the ranks (owlet train) stop together after their
  // current step with a checkpoint, which may take a while; a second one kills them at once.
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) {
      err(`[launch] ${signal} again: SIGKILL to ${ranks.filter((r) => r.code === null && r.signal === null).length} rank(s)`);
      for (const r of ranks) if (r.code === null && r.signal === null) r.child.kill('SIGKILL');
      return;
    }
    err(`[launch] ${signal}: the ${ranks.length} rank(s) stop after their current step with a checkpoint (${signal === 'SIGINT' ? 'Ctrl-C' : signal} again kills them)`);
    interrupted = signal;
    stopAll(signal, o.interruptGraceMs ?? 300_000);
  };
  const onInt = () => onSignal('SIGINT');
  const onTerm = () => onSignal('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  // (a launch piped into `head`: its EPIPE crashed the launcher, and the ranks, finding it gone, stopped without a checkpoint)
  const unguardOutput = surviveClosedOutput();

  try {
    for (let local = 0; local < o.nprocPerNode; local++) {
      const rank = n.nodeRank * o.nprocPerNode + local;
      const env: Record<string, string | undefined> = {
        ...process.env, ...o.env,
        RANK: String(rank), LOCAL_RANK: String(local), WORLD_SIZE: String(world), LOCAL_WORLD_SIZE: String(o.nprocPerNode),
        GROUP_RANK: String(n.nodeRank), MASTER_ADDR: n.masterAddr, MASTER_PORT: String(port),
        OWLET_STORE_HOSTED: '1', OWLET_LAUNCHER_PID: String(process.pid),
      };
      if (o.nprocPerNode > 1) {
        env.OMP_NUM_THREADS ??= threads;
        env.OPENBLAS_NUM_THREADS ??= env.OMP_NUM_THREADS;
      }
      const child = spawn(process.execPath, [BIN, ...o.command], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      const r: Rank = { rank, child, code: null, signal: null, lastErr: [], exitOrder: Infinity, exited: Promise.resolve() };
      const prefix = `[rank ${rank}] `;
      const lines = new Promise<void>((res) => {
        let open = 2;
        const done = () => { if (--open === 0) res(); };
        createInterface({ input: child.stdout! }).on('line', (l) => out(prefix + l)).on('close', done);
        createInterface({ input: child.stderr! }).on('line', (l) => {
          err(prefix + l);
          if (l.trim()) { r.lastErr.push(l); if (r.lastErr.length > ERR_LINES_KEPT) r.lastErr.shift(); }
        }).on('close', done);
      });
      const exit = new Promise<void>((res) => {
        child.on('error', (e) => { err(`[launch] rank ${rank}: cannot start: ${e.message}`); r.code = 127; res(); });
        child.on('exit', (code, signal) => {
          r.code = code;
          r.signal = signal;
          r.exitOrder = ++exits;
          if ((code !== 0 || signal) && !failure && !interrupted) {
            failure = r;
            const others = ranks.filter((x) => x !== r && x.code === null && x.signal === null).length;
            err(`[launch] rank ${rank} (pid ${child.pid}) ${signal ? `was killed by ${signal}` : `exited with code ${code}`}` +
              (others ? `: stopping the other ${others} rank(s)` : ''));
            stopAll('SIGTERM');
          }
          res();
        });
      });
      r.exited = Promise.all([exit, lines]).then(() => undefined);
      ranks.push(r);
      err(`[launch] rank ${rank} of ${world}: pid ${child.pid}`);
      if (interrupted) break;
    }
    await Promise.all(ranks.map((r) => r.exited));
  } finally {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    unguardOutput();
    if (killTimer) clearTimeout(killTimer);
    if (hosted !== null) cpuDist().storeServerStop(hosted);
  }

  if (interrupted) {
    throw new LaunchError(`launch: interrupted by ${interrupted}; all ${ranks.length} rank(s) stopped`, 128 + (constants.signals[interrupted] ?? 2));
  }
  // The first rank to exit is not always the one that failed first: a rank whose own error closes its connections
  // makes another one fail its collective ("another rank exited or crashed") and that one may exit sooner. Report a
  // rank's own error when some rank has one.
  const blamesAnother = (r: Rank) => r.lastErr.some((l) => l.includes('another rank exited or crashed'));
  const own = (r: Rank) => r.code !== 0 && r.code !== null && !blamesAnother(r) && failureLine(r.lastErr) !== undefined;
  const first = failure as Rank | null;
  const f = first && blamesAnother(first) ? ranks.find((r) => r !== first && own(r)) ?? first : first;
  if (f) {
    const why = f.signal ? `was killed by ${f.signal}` : `exited with code ${f.code}`;
    const last = failureLine(f.lastErr) ?? f.lastErr.filter((l) => !NODE_VERSION_LINE.test(l)).at(-1);
    const code = f.code && f.code > 0 && f.code < 256 ? f.code : f.signal ? 128 + (constants.signals[f.signal] ?? 9) : 1;
    // (a rank blaming "another rank" whose own exit was quiet, say with code 0 in the middle of a run: name that one)
    const before = blamesAnother(f) ? ranks.filter((r) => r !== f && r.exitOrder < f.exitOrder) : [];
    const earlier = before.length ? `; before it, ${before.slice(0, 4).map((r) => `rank ${r.rank} ${r.signal ? `was killed by ${r.signal}` : `exited with code ${r.code}`}`).join(', ')}` : '';
    throw new LaunchError(`launch: rank ${f.rank} ${why}${last ? `: ${last.replace(/^owlet: /, '')}` : ''}${earlier}`, code);
  }
}
