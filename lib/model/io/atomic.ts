// Atomic file writes: write `<file>.tmp-<pid>-<random>`, fsync, rename over the target, fsync the directory. A crash leaves
// either the old file or the new one, never half of one. Several files that belong together (the shards of one
// checkpoint) are staged first and renamed into place only once every one of them is complete.
import { randomBytes } from 'node:crypto';
import { closeSync, constants, fsyncSync, openSync, renameSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { writeAll } from './bytes.ts';

/** A complete, fsynced temporary file waiting to be renamed over `path`. */
export interface StagedFile {
  readonly path: string;
  readonly tmp: string;
}

/** Runs `write(fd)` against a fresh temporary file beside `path`; on failure the temporary is removed. */
export function stageFile(path: string, write: (fd: number) => void): StagedFile {
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
  return { path, tmp };
}

/** Moves a staged file into place (the temporary is removed if the rename fails). */
export function commitStaged(s: StagedFile): void {
  try {
    renameSync(s.tmp, s.path);
  } catch (e) {
    rmSync(s.tmp, { force: true }); // (e.g. path is a folder: the full-size temporary would stay behind)
    throw e;
  }
  syncDir(dirname(s.path));
}

/** Removes staged files that will not be committed. */
export function discardStaged(staged: Iterable<StagedFile>): void {
  for (const s of staged) rmSync(s.tmp, { force: true });
}

/** Runs `write(fd)` against a temporary file and moves it over `path` only if `write` returns normally. */
export function writeAtomic(path: string, write: (fd: number) => void): void {
  commitStaged(stageFile(path, write));
}

export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  commitStaged(stageData(path, data));
}

/** Stages a small file (a config) whose contents are at hand. */
export function stageData(path: string, data: string | Uint8Array): StagedFile {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  return stageFile(path, (fd) => writeAll(fd, bytes));
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
