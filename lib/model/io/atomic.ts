// Atomic file writes: write `<file>.tmp-<pid>-<random>`, fsync, rename over the target, fsync the directory. A crash leaves
// either the old file or the new one, never half of one.
import { randomBytes } from 'node:crypto';
import { closeSync, constants, fsyncSync, openSync, renameSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { writeAll } from './bytes.ts';

/** Runs `write(fd)` against a temporary file and moves it over `path` only if `write` returns normally. */
export function writeAtomic(path: string, write: (fd: number) => void): void {
  // A name no one can guess and exclusive creation: a file or symlink planted at the temporary name is never written
  // through (it was `<file>.tmp-<pid>`, opened with 'w', which follows a symlink and overwrote its target).
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | (constants.O_NOFOLLOW ?? 0), 0o644);
  let ok = false;
  try {
    write(fd);
    fsyncSync(fd);
    ok = true;
  } finally {
    closeSync(fd);
    if (!ok) rmSync(tmp, { force: true });
  }
  try {
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true }); // (e.g. path is a folder: the full-size temporary would stay behind)
    throw e;
  }
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
