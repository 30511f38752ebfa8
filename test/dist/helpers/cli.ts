// Runs `node bin/owlet.js …` as a child process with a time bound, collecting its output, and lets a test act on an
// output line as it appears (kill a rank once training runs, …).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';

export interface CliRun {
  child: ChildProcess;
  /** stdout and stderr lines as they came. */
  lines: string[];
  /** Resolves with the first line matching `re` (rejects if the process ends first). */
  waitFor(re: RegExp): Promise<string>;
  /** Resolves when the process has exited: its code (or 128 + signal) and when. */
  done: Promise<{ code: number; at: number }>;
}

export function owlet(args: string[], env: Record<string, string> = {}, limitMs = 120_000): CliRun {
  const child = spawn(process.execPath, ['bin/owlet.js', ...args], { env: { ...process.env, OMP_NUM_THREADS: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const waiters: { re: RegExp; res: (l: string) => void }[] = [];
  const feed = (chunk: string, rest: { s: string }) => {
    rest.s += chunk;
    const parts = rest.s.split('\n');
    rest.s = parts.pop()!;
    for (const l of parts) {
      lines.push(l);
      for (const w of [...waiters]) if (w.re.test(l)) { waiters.splice(waiters.indexOf(w), 1); w.res(l); }
    }
  };
  const o = { s: '' }, e = { s: '' };
  child.stdout!.setEncoding('utf8').on('data', (d: string) => feed(d, o));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => feed(d, e));
  const timer = setTimeout(() => child.kill('SIGKILL'), limitMs);
  const done = new Promise<{ code: number; at: number }>((res) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      for (const rest of [o, e]) if (rest.s) lines.push(rest.s);
      res({ code: code ?? 128 + (signal === 'SIGKILL' ? 9 : 15), at: Date.now() });
    });
  });
  const waitFor = (re: RegExp) => {
    const seen = lines.find((l) => re.test(l));
    if (seen) return Promise.resolve(seen);
    return new Promise<string>((res, rej) => {
      waiters.push({ re, res });
      done.then(() => rej(new Error(`exited before a line matched ${re}:\n${lines.join('\n')}`)));
    });
  };
  return { child, lines, waitFor, done };
}

/** Processes whose command line contains `marker` (ps), other than ps itself. */
export function processesWith(marker: string): string[] {
  const out = execFileSync('ps', ['-eo', 'pid,stat,args'], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.includes(marker) && !/\bps -eo\b/.test(l));
}

export function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

/** The pids `owlet launch` reported for its ranks. */
export function rankPids(lines: string[]): number[] {
  return lines.flatMap((l) => { const m = /^\[launch\] rank \d+ of \d+: pid (\d+)$/.exec(l); return m ? [Number(m[1])] : []; });
}
