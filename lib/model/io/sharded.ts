// Sharded checkpoints: `<name>.index.json` = {"metadata": {"total_size": N}, "weight_map": {tensor: shard file}}
// beside the shards (HF's layout, for both safetensors and pytorch_model.bin). The writer splits greedily in the
// given order at a maximum shard size, as HF does; a tensor larger than the limit gets a shard of its own.
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Tensor } from '../../tensor/index.ts';
import { commitStaged, discardStaged, writeFileAtomic, type StagedFile } from './atomic.ts';
import { savedDType, type TensorLoadOptions } from './bytes.ts';
import { numelOf, RUNTIME_SIZE } from './dtypes.ts';
import { CheckpointError } from './errors.ts';
import { SafetensorsFile, stageSafetensorsFile, writeSafetensorsFile, type SafetensorsSaveOptions } from './safetensors.ts';
import { readFromSource, type LoadOptions, type TensorSource } from './source.ts';

export interface ShardIndex {
  metadata: Record<string, unknown>;
  /** tensor name → shard file name (relative to the index's directory). */
  weightMap: Map<string, string>;
}

/** Reads and validates an index file; shard names must be plain file names in the same directory. */
export function readShardIndex(indexPath: string): ShardIndex {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(indexPath, 'utf8'));
  } catch (e) {
    throw new CheckpointError(`cannot read the shard index: ${(e as Error).message}`, { file: indexPath });
  }
  const wm = (json as { weight_map?: unknown })?.weight_map;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) {
    throw new CheckpointError('shard index has no "weight_map" object', { file: indexPath });
  }
  const weightMap = new Map<string, string>();
  for (const [name, shard] of Object.entries(wm as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard === '' || shard.includes('/') || shard.includes('\\') || shard === '..' ||
      shard === '.' || shard.includes('\0')) {
      throw new CheckpointError(`weight_map entry ${JSON.stringify(shard)} is not a shard file name in the same directory`,
        { file: indexPath, tensor: name });
    }
    // (a shard that is itself an index would be opened as one: an index naming itself recursed without end)
    if (shard.endsWith('.index.json')) {
      throw new CheckpointError(`weight_map entry ${JSON.stringify(shard)} is a shard index, not a shard`, { file: indexPath, tensor: name });
    }
    weightMap.set(name, shard);
  }
  const md = (json as { metadata?: unknown }).metadata;
  return { metadata: typeof md === 'object' && md !== null ? { ...(md as Record<string, unknown>) } : {}, weightMap };
}

/** The shard files of an index, in first-use order. */
export function shardFiles(index: ShardIndex): string[] { return [...new Set(index.weightMap.values())]; }

/**
 * A sharded checkpoint as one TensorSource: the index's weight_map, every shard opened (headers read and validated)
 * up front, so missing shards and missing tensors are reported before any tensor data is read.
 */
export class ShardedSource implements TensorSource {
  readonly path: string;
  readonly index: ShardIndex;
  private shards = new Map<string, TensorSource>();

  private constructor(path: string, index: ShardIndex) {
    this.path = path;
    this.index = index;
  }

  static open(indexPath: string, open: (path: string) => TensorSource): ShardedSource {
    const src = new ShardedSource(indexPath, readShardIndex(indexPath));
    const dir = dirname(indexPath);
    try {
      for (const shard of shardFiles(src.index)) {
        const p = join(dir, shard);
        if (!existsSync(p)) {
          const first = [...src.index.weightMap].find(([, s]) => s === shard)![0];
          throw new CheckpointError(`shard ${shard} named by ${basename(indexPath)} does not exist`, { file: p, tensor: first });
        }
        src.shards.set(shard, open(p));
      }
      for (const [n, shard] of src.index.weightMap) {
        const f = src.shards.get(shard)!;
        if (!f.has(n)) throw new CheckpointError(`is listed in ${basename(indexPath)} but missing from this shard`, { file: f.path, tensor: n });
      }
    } catch (e) {
      src.close();
      throw e;
    }
    return src;
  }

  private shard(name: string): TensorSource {
    const s = this.index.weightMap.get(name);
    if (s === undefined) throw new CheckpointError('missing from the weight_map', { file: this.path, tensor: name });
    return this.shards.get(s)!;
  }
  get names(): string[] { return [...this.index.weightMap.keys()]; }
  has(name: string): boolean { return this.index.weightMap.has(name); }
  shapeOf(name: string): readonly number[] { return this.shard(name).shapeOf(name); }
  fileOf(name: string): string { return this.shard(name).path; }
  tensor(name: string, opts?: TensorLoadOptions): Tensor { return this.shard(name).tensor(name, opts); }
  close(): void { for (const f of this.shards.values()) f.close(); }
}

/** Loads a sharded safetensors checkpoint from its index file. */
export function readShardedSafetensors(indexPath: string, opts: LoadOptions = {}): Map<string, Tensor> {
  const src = ShardedSource.open(indexPath, (p) => SafetensorsFile.open(p));
  try {
    return readFromSource(src, opts);
  } finally {
    src.close();
  }
}

/** `model.safetensors` → `model-00002-of-00005.safetensors` (HF's shard naming). */
export function shardName(path: string, i: number, n: number): string {
  const base = basename(path);
  const dot = base.lastIndexOf('.');
  const [stem, ext] = dot > 0 ? [base.slice(0, dot), base.slice(dot)] : [base, ''];
  const pad = (k: number) => String(k).padStart(5, '0');
  return `${stem}-${pad(i)}-of-${pad(n)}${ext}`;
}

/** Splits names into shards of at most `maxBytes` (greedy, in order). */
export function planShards(sizes: [string, number][], maxBytes: number): string[][] {
  if (!(maxBytes > 0)) throw new CheckpointError(`maxShardBytes must be positive, got ${maxBytes}`);
  const shards: string[][] = [];
  let cur: string[] = [], curBytes = 0;
  for (const [name, size] of sizes) {
    if (cur.length && curBytes + size > maxBytes) {
      shards.push(cur);
      cur = [];
      curBytes = 0;
    }
    cur.push(name);
    curBytes += size;
  }
  if (cur.length || !shards.length) shards.push(cur);
  return shards;
}

export interface ShardedSaveOptions extends SafetensorsSaveOptions {
  /** Split into shards of at most this many data bytes; without it (or when everything fits) one file is written. */
  maxShardBytes?: number;
}

/**
 * Writes `tensors` to `path` (a file such as dir/model.safetensors, or a directory: its model.safetensors), sharded with `path.index.json` when they exceed
 * `maxShardBytes`. Each file is written atomically and the index last; a stale single file or index of the other
 * layout at the same path is removed afterwards so a directory never holds two conflicting checkpoints.
 * Returns the files written.
 */
export function saveSafetensors(path: string, tensors: ReadonlyMap<string, Tensor>, opts: ShardedSaveOptions = {}): string[] {
  if (existsSync(path) && statSync(path).isDirectory()) path = join(path, 'model.safetensors');
  const sizes: [string, number][] = [...tensors].map(([n, t]) => [n, numelOf(t.shape) * RUNTIME_SIZE[savedDType(t, opts.dtype)]]);
  const plan = opts.maxShardBytes === undefined ? [[...tensors.keys()]] : planShards(sizes, opts.maxShardBytes);
  const indexPath = `${path}.index.json`;
  if (plan.length === 1) {
    writeSafetensorsFile(path, tensors, opts);
    if (existsSync(indexPath)) rmSync(indexPath);
    removeOtherShards(path, [path]);
    return [path];
  }
  const dir = dirname(path);
  // Every new shard is written in full under a temporary name before anything of the old checkpoint is touched: a
  // save that fails half-way (disk full, a bad tensor) leaves the previous checkpoint as it was. (It used to replace
  // shards one by one, so such a failure destroyed a good checkpoint already on disk.)
  const weightMap: Record<string, string> = {};
  const staged: StagedFile[] = [];
  try {
    // (a folder in the way would only fail at the rename, with the old checkpoint already half replaced)
    for (const f of [indexPath, ...plan.map((_, i) => join(dir, shardName(path, i + 1, plan.length)))]) {
      if (existsSync(f) && !statSync(f).isFile()) throw new CheckpointError('is in the way and is not a regular file', { file: f });
    }
    plan.forEach((names, i) => {
      const file = shardName(path, i + 1, plan.length);
      const target = join(dir, file);
      staged.push(stageSafetensorsFile(target, names.map((n) => [n, tensors.get(n)!]), opts));
      for (const n of names) weightMap[n] = file;
    });
  } catch (e) {
    discardStaged(staged);
    throw e;
  }
  // The old index goes first: an interruption during the renames must leave a set that fails to load (no index), not
  // an old index over a mix of new and old shards that loads without a word.
  if (existsSync(indexPath)) rmSync(indexPath);
  const written: string[] = [];
  try {
    for (const s of staged) {
      commitStaged(s);
      written.push(s.path);
    }
  } catch (e) {
    discardStaged(staged);
    throw e;
  }
  const total = sizes.reduce((a, [, s]) => a + s, 0);
  const sortedMap = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  // (the files' own metadata, e.g. "format": "pt", is in every shard; transformers' index holds only total_size)
  writeFileAtomic(indexPath, JSON.stringify({ metadata: { total_size: total }, weight_map: sortedMap }, null, 2) + '\n');
  written.push(indexPath);
  if (existsSync(path)) rmSync(path);
  removeOtherShards(path, written);
  return written;
}

/** Removes the shards of `path` (stem-NNNNN-of-NNNNN.ext) that an earlier save left and this one did not write. */
function removeOtherShards(path: string, written: string[]): void {
  const mine = new Set(written.map((f) => basename(f)));
  const pattern = new RegExp(`^${escapeRegExp(shardName(path, 1, 1)).replace('00001-of-00001', '\\d{5}-of-\\d{5}')}$`);
  for (const f of readdirSync(dirname(path))) if (pattern.test(f) && !mine.has(f)) rmSync(join(dirname(path), f));
}

function escapeRegExp(s: string): string { return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }
