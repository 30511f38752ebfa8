// Checks a checkpoint's table of contents against the keys and shapes a model expects, before any data is read, so a
// wrong checkpoint fails in milliseconds with the file and tensor named.
import { CheckpointError } from './errors.ts';

export interface ExpectOptions {
  /** Expected tensor names and shapes. */
  expected?: ReadonlyMap<string, readonly number[]>;
  /** Names that may be absent although expected (e.g. a trainable part the caller initialises itself). */
  allowMissing?: (name: string) => boolean;
  /** Fail on tensors the file holds that are not expected (default: they are ignored). */
  strict?: boolean;
}

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/**
 * `available` maps each name to its shape and the file that holds it. Throws a CheckpointError naming the file and the
 * tensor for the first problem; lists how many more there are so one run shows the scale of a mismatch.
 */
export function checkExpected(available: ReadonlyMap<string, { shape: readonly number[]; file: string }>,
  opts: ExpectOptions, what: string): void {
  const { expected } = opts;
  if (!expected) return;
  const problems: { msg: string; file: string; tensor: string }[] = [];
  for (const [name, shape] of expected) {
    const got = available.get(name);
    if (!got) {
      if (!opts.allowMissing?.(name)) problems.push({ msg: `missing (expected shape ${fmt(shape)})`, file: what, tensor: name });
      continue;
    }
    if (got.shape.length !== shape.length || got.shape.some((d, i) => d !== shape[i])) {
      problems.push({ msg: `has shape ${fmt(got.shape)} but the config expects ${fmt(shape)}`, file: got.file, tensor: name });
    }
  }
  if (opts.strict) {
    for (const [name, got] of available) {
      if (!expected.has(name)) problems.push({ msg: 'is not a tensor of this model (unexpected key)', file: got.file, tensor: name });
    }
  }
  if (problems.length) {
    const p = problems[0];
    const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''}: ` +
      problems.slice(1, 4).map((q) => q.tensor).join(', ') + (problems.length > 4 ? ', …' : '') + ')' : '';
    throw new CheckpointError(p.msg + more, { file: p.file, tensor: p.tensor });
  }
}
