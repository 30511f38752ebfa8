// One run per run folder at a time. Two runs writing the same folder crashed each other mid-checkpoint (they share
// the ckpt-N.tmp and latest.tmp names) and the second's metrics went to a file the first had replaced (found by the
// concurrency audit of session 9). Rank 0 holds `<out_dir>/.owlet-lock` (pid, host, start time) while it writes; a
// lock left by a process that no longer exists on this host is taken over.
import { closeSync, constants, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from './errors.ts';

export const LOCK_FILE = '.owlet-lock';

interface Holder { pid: number; host: string; started: string }

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

/** Takes the folder's lock (creating the folder); returns its release. Throws naming the holder when it is taken. */
export function lockRunFolder(dir: string): () => void {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, LOCK_FILE);
  const me: Holder = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
  for (let attempt = 0; attempt < 2; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let h: Holder | null = null;
      try { h = JSON.parse(readFileSync(path, 'utf8')) as Holder; } catch { /* being written, or not ours: held */ }
      if (h && h.host === me.host && Number.isInteger(h.pid) && !alive(h.pid) && attempt === 0) {
        rmSync(path, { force: true }); // left by a run that ended without releasing it (killed)
        continue;
      }
      throw new ConfigError(`run folder ${dir} is in use by another owlet run` +
        (h ? ` (pid ${h.pid} on ${h.host}, since ${h.started})` : '') +
        `; wait for it, use another run.out_dir, or delete ${path} if that run is gone`);
    }
    writeSync(fd, JSON.stringify(me) + '\n');
    closeSync(fd);
    return () => {
      try {
        const h = JSON.parse(readFileSync(path, 'utf8')) as Holder;
        if (h.pid === me.pid && h.host === me.host && existsSync(path)) rmSync(path, { force: true });
      } catch { /* already gone */ }
    };
  }
  throw new ConfigError(`run folder ${dir}: could not take its lock ${path}`);
}
