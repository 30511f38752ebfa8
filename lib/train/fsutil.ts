// Durable file writes: the pieces atomic checkpoints and pointers are built from. A file is durable once its data
// was fsync'ed; a rename is durable once the directory holding it was fsync'ed.
import { closeSync, createReadStream, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname } from 'node:path';

/** Flushes a file's (or directory's) data and metadata to the disk. Any descriptor of the inode will do. */
export function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try { fsyncSync(fd); } finally { closeSync(fd); }
}

/** Writes the whole content and fsyncs it (not atomic by itself: pair with a rename). */
export function writeFileDurable(path: string, data: string | Uint8Array): void {
  const fd = openSync(path, 'w');
  try {
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } finally { closeSync(fd); }
}

/** Replaces `path` atomically: write `path.tmp`, fsync, rename over, fsync the directory. */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.tmp`;
  writeFileDurable(tmp, data);
  renameSync(tmp, path);
  fsyncPath(dirname(path));
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 22 })) h.update(chunk as Buffer);
  return h.digest('hex');
}
