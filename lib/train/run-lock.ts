// One run per run folder at a time. Two runs writing the same folder crashed each other mid-checkpoint (they share
// the ckpt-N.tmp and latest.tmp names) and the second's metrics went to a file the first had replaced (found by the
// concurrency audit of session 9). Rank 0 holds `<out_dir>/.owlet-lock` (pid, host, start time) while it writes; a
// lock left by a process that no longer exists on this host is taken over.
import { closeSync, constants, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { ConfigError } from './errors.ts';

export const LOCK_FILE = '.owlet-lock';

interface Holder { pid: number; host: string; started: string }

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

// The locks this process holds (resolved paths). A lock naming this process's pid and host that is not among them
// was left by an earlier process that had the same pid: a container restarted after a kill runs its command as the
// same pid (often 1) on the same host name, and its resume was refused for good — "in use by pid 1", itself.
const heldHere = new Set<string>();

/** Whether the process that wrote the lock is gone: on this host, and no longer running (or this process's pid
 *  without this process holding it). */
function holderGone(h: Holder, me: Holder, key: string): boolean {
  if (h.host !== me.host || !Number.isInteger(h.pid)) return false;
  return h.pid === me.pid ? !heldHere.has(key) : !alive(h.pid);
}

/** Takes the folder's lock (creating the folder); returns its release. Throws naming the holder when it is taken. */
export function lockRunFolder(dir: string): () => void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) { // (a bare "ENOTDIR: not a directory, mkdir …" for a run folder under a file)
    throw new ConfigError(`cannot create the run folder ${dir}: ${(e as Error).message}`);
  }
  const path = join(dir, LOCK_FILE);
  const key = resolve(path);
  const me: Holder = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
  const release = () => {
    if (!heldHere.delete(key)) return; // (released already)
    try {
      const h = JSON.parse(readFileSync(path, 'utf8')) as Holder;
      if (h.pid === me.pid && h.host === me.host && h.started === me.started && existsSync(path)) rmSync(path, { force: true });
    } catch { /* already gone */ }
  };
  const create = (): boolean => {
    let fd: number;
    try {
      fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      return false;
    }
    try { writeSync(fd, JSON.stringify(me) + '\n'); } finally { closeSync(fd); }
    heldHere.add(key);
    return true;
  };
  if (create()) return release;
  const h = readHolder(path);
  if (h && holderGone(h, me, key)) {
    // Left by a run that ended without releasing it (killed). Two processes taking it over at once both removed
    // "the stale lock" — one of them the other's new one — and both ran (the resume audit of session 10): only the
    // holder of the takeover guard may remove it, after checking under the guard that it is still that stale lock.
    const guard = `${path}.takeover`;
    if (takeGuard(guard)) {
      try {
        const again = readHolder(path);
        if (!existsSync(path) || (again && again.pid === h.pid && again.host === h.host && again.started === h.started)) {
          rmSync(path, { force: true });
          if (create()) return release;
        }
      } finally {
        rmSync(guard, { force: true });
      }
    }
  }
  const now = readHolder(path) ?? h;
  throw new ConfigError(`run folder ${dir} is in use by another owlet run` +
    (now ? ` (pid ${now.pid} on ${now.host}, since ${now.started})` : '') +
    `; wait for it, use another run.out_dir, or delete ${path} if that run is gone`);
}

function readHolder(path: string): Holder | null {
  try { return JSON.parse(readFileSync(path, 'utf8')) as Holder; } catch { return null; /* gone, being written, or not ours */ }
}

/** Creates the takeover guard; false when another process holds it. A guard older than a minute was left by a process
 *  that died taking a lock over (taking over takes milliseconds) and is replaced. */
function takeGuard(guard: string): boolean {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      closeSync(openSync(guard, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let age = 0;
      try { age = Date.now() - statSync(guard).mtimeMs; } catch { continue; /* just released: try again */ }
      if (attempt > 0 || age < 60_000) return false;
      rmSync(guard, { force: true });
    }
  }
  return false;
}
