// One interface over every kind of checkpoint (a safetensors file, a torch.save zip, a sharded set of either): a
// table of contents that can be checked before anything is read, and per-tensor reads.
import type { Tensor } from '../../tensor/index.ts';
import type { TensorLoadOptions } from './bytes.ts';
import { CheckpointError } from './errors.ts';
import { checkExpected, type ExpectOptions } from './expect.ts';

export interface TensorSource {
  /** The file (or index file) this source reads. */
  readonly path: string;
  readonly names: string[];
  has(name: string): boolean;
  shapeOf(name: string): readonly number[];
  /** The file holding `name` (a shard for sharded sources). */
  fileOf(name: string): string;
  tensor(name: string, opts?: TensorLoadOptions): Tensor;
  close(): void;
}

export interface LoadOptions extends TensorLoadOptions, ExpectOptions {
  /** Load only the tensors for which this returns true (the others are never read). Sees the final names. */
  filter?: (name: string) => boolean;
}

/** Runs `read` for each name; if one fails, the tensors already read are disposed before the error propagates. */
export function readMany(names: Iterable<[string, string]>, read: (name: string) => Tensor): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  try {
    for (const [raw, name] of names) {
      const t = read(raw);
      t.name = name;
      out.set(name, t);
    }
  } catch (e) {
    for (const t of out.values()) t.dispose();
    throw e;
  }
  return out;
}

/**
 * Reads the tensors of `src`, renamed by `rename` (null: skip the tensor without reading it), filtered, and checked
 * against `expected` under their final names before any data is read.
 */
export function readFromSource(src: TensorSource, opts: LoadOptions = {},
  rename: (raw: string) => string | null = (n) => n): Map<string, Tensor> {
  const pairs: [string, string][] = [];
  const seen = new Map<string, string>();
  for (const raw of src.names) {
    const name = rename(raw);
    if (name === null || (opts.filter && !opts.filter(name))) continue;
    const prev = seen.get(name);
    if (prev !== undefined) {
      throw new CheckpointError(`holds both '${prev}' and '${raw}', which name the same tensor`,
        { file: src.fileOf(raw), tensor: name });
    }
    seen.set(name, raw);
    pairs.push([raw, name]);
  }
  checkExpected(new Map(pairs.map(([raw, name]) => [name, { shape: src.shapeOf(raw), file: src.fileOf(raw) }])), opts, src.path);
  const out = readMany(pairs, (raw) => src.tensor(raw, opts));
  // Weights of a model or an adapter (what `expected` describes) are floats: an integer tensor of the right shape used
  // to load and fail at the first forward with an error that named no file.
  if (opts.expected) {
    const bad = [...out].find(([name, t]) => opts.expected!.has(name) && t.dtype !== 'f32' && t.dtype !== 'bf16' && t.dtype !== 'f16');
    if (bad) {
      for (const t of out.values()) t.dispose();
      throw new CheckpointError(`is ${bad[1].dtype}; a weight must be a float tensor`, { file: src.fileOf(seen.get(bad[0])!), tensor: bad[0] });
    }
  }
  return out;
}
