// What a resume compares with the checkpoint it continues (resume audit of session 10): the configuration — changes
// to what the trained weights mean are refused, every other change is named — and the frozen base weights, which a
// checkpoint does not hold (a base model replaced between the runs was trained on silently).
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { findCheckpoint } from '../model/io/checkpoint.ts';
import { mapConfigPaths } from './config.ts';
import type { Json } from './types.ts';

const SAMPLE = 1 << 20;

/**
 * An identity of the weights at `pathOrDir` (a file, a shard index, or a folder holding either) read from disk
 * cheaply: each file's size and its first and last MiB (the header and data from both ends). Two different exports
 * differ there; the same file moved or copied does not.
 */
export function weightsFingerprint(pathOrDir: string): string {
  const path = existsSync(pathOrDir) && statSync(pathOrDir).isDirectory() ? findCheckpoint(pathOrDir) : pathOrDir;
  const files = path.endsWith('.index.json')
    ? [...new Set(Object.values((JSON.parse(readFileSync(path, 'utf8')) as { weight_map: Record<string, string> }).weight_map))]
      .sort().map((f) => join(dirname(path), f))
    : [path];
  const h = createHash('sha256');
  for (const f of files) {
    const size = statSync(f).size, fd = openSync(f, 'r');
    try {
      h.update(`${size}\n`);
      for (const at of size <= 2 * SAMPLE ? [0] : [0, size - SAMPLE]) {
        const buf = Buffer.alloc(Math.min(size, size <= 2 * SAMPLE ? size : SAMPLE));
        readSync(fd, buf, 0, buf.length, at);
        h.update(buf);
      }
    } finally {
      closeSync(fd);
    }
  }
  return h.digest('hex').slice(0, 16);
}

// Settings whose change would make the checkpoint's weights mean something else: refused on resume. (stage.id, the
// architecture — the parameters' shapes —, the base weights' files and the data's records have their own checks, by
// content: a path may change with the same thing behind it.)
const REFUSED = ['stage.train', 'stage.lora.r', 'stage.lora.alpha', 'stage.lora.targets'];
// Settings that change nothing a run computes.
const IGNORED = ['run.out_dir', 'run.name', 'logging.progress', 'logging.plots', 'logging.tensorboard', 'provenance'];

function flatten(v: Json, prefix: string, out: Map<string, string>): void {
  if (Array.isArray(v) && v.some((x) => x && typeof x === 'object')) { // lists of objects (data files): by index
    v.forEach((x, i) => flatten(x as Json, `${prefix}.${i}`, out));
  } else if (v && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) flatten(x as Json, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out.set(prefix, JSON.stringify(v ?? null));
  }
}

const under = (key: string, roots: readonly string[]) => roots.some((r) => key === r || key.startsWith(`${r}.`));

/** The settings that differ between the checkpoint's configuration and this run's: refused ones and the others. */
export function resumeConfigChanges(saved: Json, now: Json): { refused: string[]; changed: string[] } {
  // (files compared as absolute paths: a run's config may name them relative to the working folder, the demo's absolute)
  const a = new Map<string, string>(), b = new Map<string, string>();
  flatten(mapConfigPaths(saved, (p) => resolve(p)), '', a);
  flatten(mapConfigPaths(now, (p) => resolve(p)), '', b);
  const refused: string[] = [], changed: string[] = [];
  for (const key of [...new Set([...a.keys(), ...b.keys()])].sort()) {
    const x = a.get(key) ?? 'unset', y = b.get(key) ?? 'unset';
    if (x === y || under(key, IGNORED)) continue;
    (under(key, REFUSED) ? refused : changed).push(`${key}: ${x} → ${y}`);
  }
  return { refused, changed };
}
