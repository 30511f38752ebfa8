// Working copies that outlive a forward: under bf16 mixed precision every trained fp32 master is read through a bf16
// copy. Made by a cast at each forward, that is one pass over every master (read 4 bytes, write 2) per step; kept
// here instead, they are made once, and AdamW writes each one in the pass that updates its master (2 more bytes
// written). A forward reads them through castCached (layout.ts), whose backward is the cast's, so gradients reach
// the masters in fp32 exactly as before: the numbers are the same bit for bit (the copy is the master rounded to
// bf16 either way).
//
// The copies are right only while nothing but AdamW (given this store) writes the masters: the trainer hands one out at
// its first step (after the weights were loaded, resumed and broadcast), empties it when a resume writes the weights,
// and takes it back when the run ends or the trainer is disposed.
import { ArgumentError } from './errors.ts';
import { keep } from './scope.ts';
import { noGrad } from './autograd.ts';
import { castMany } from './ops/layout.ts';
import type { DType, Tensor } from './tensor.ts';

export class WorkingCopies {
  private readonly copies = new Map<Tensor, Tensor>();

  constructor(readonly dtype: DType = 'bf16') {
    if (dtype !== 'bf16') throw new ArgumentError(`WorkingCopies: only bf16 copies are kept (AdamW writes them), got ${dtype}`, 'workingCopies');
  }

  /** The copy of each master, made now (one cast for all missing ones) where there is none yet. */
  of(masters: Tensor[]): Tensor[] {
    const missing = masters.filter((m) => !this.copies.has(m));
    if (missing.length) {
      const made = noGrad(() => castMany(missing, this.dtype));
      missing.forEach((m, i) => {
        made[i].name = m.name;
        this.copies.set(m, keep(made[i]));
      });
    }
    return masters.map((m) => this.copies.get(m)!);
  }

  /** The copy of `master`, or null when none was made (AdamW then has none to write). */
  get(master: Tensor): Tensor | null {
    return this.copies.get(master) ?? null;
  }

  get size(): number { return this.copies.size; }

  /** Drops every copy (the masters were written some other way; the next forward makes them again). */
  clear(): void {
    for (const c of this.copies.values()) c.dispose();
    this.copies.clear();
  }

  dispose(): void { this.clear(); }
}
