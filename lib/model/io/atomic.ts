// Atomic file writes: write `<file>.tmp-<pid>`, fsync, rename over the target, fsync the directory. A crash leaves
// either the old file or the new one, never half of one.
import { closeSync, fsyncSync, openSync, renameSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { writeAll } from './bytes.ts';

/** Runs `write(fd)` against a temporary file and moves it over `path` only if `write` returns normally. */
export function writeAtomic(path: string, write: (fd: number) => void): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  let ok = false;
  try {
    write(fd);
    fsyncSync(fd);
    ok = true;
  } finally {
    closeSync(fd);
    if (!ok) rmSync(tmp, { force: true });
  }
  renameSync(tmp, path);
  syncDir(dirname(path));
}

export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  writeAtomic(path, (fd) => writeAll(fd, bytes));
}

/** Makes the rename durable; some filesystems refuse fsync on a directory, which only costs durability. */
function syncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch { /* best effort */ } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
