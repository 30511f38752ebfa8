// Runs ranks of a test worker script as separate processes and collects the JSON line each prints last: the harness
// of the process-group and failure tests (rank 0 hosts the store, as under torchrun or srun).
import { spawn } from 'node:child_process';
import { freePort } from './tiny-run.ts';

export interface WorkerRanks<R> {
  /** The worker script, run through tsx with `scenario` as its argument. */
  worker: string;
  scenario: string;
  ranks: number[];
  /** Each rank's variables besides the process's own (MASTER_PORT is a free port found here). */
  env: (rank: number, port: number) => Record<string, string>;
  /** A rank that runs longer fails the call (killed), as a hang. */
  timeoutMs: number;
  /** What a rank that prints nothing (exits on purpose) gives. */
  silent: R;
}

export async function runWorkerRanks<R>(o: WorkerRanks<R>): Promise<R[]> {
  const port = await freePort();
  return Promise.all(o.ranks.map((rank) => new Promise<R>((res, rej) => {
    const child = spawn(process.execPath, ['--import', 'tsx', o.worker, o.scenario], {
      env: { ...process.env, ...o.env(rank, port) }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '', err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const timer = setTimeout(() => { child.kill('SIGKILL'); rej(new Error(`rank ${rank} hung: ${out} ${err}`)); }, o.timeoutMs);
    child.on('close', () => {
      clearTimeout(timer);
      const line = out.trim().split('\n').pop() ?? '';
      if (!line) { res(o.silent); return; }
      try { res(JSON.parse(line) as R); } catch { rej(new Error(`rank ${rank} printed no result: ${out} ${err}`)); }
    });
  })));
}
