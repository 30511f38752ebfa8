// What a forward pass needs besides inputs: the parameters by official key, train/eval mode, and a seeded source of
// dropout seeds (its state is saved in checkpoints so a resumed run draws the same masks).
import { ArgumentError, reshape, add, zeros, type Tensor } from '../tensor/index.ts';

export type Params = Map<string, Tensor>;

export class ForwardContext {
  constructor(readonly params: Params, readonly training: boolean, private seedState: number = 0x9e3779b9) {}

  get(key: string): Tensor {
    const t = this.params.get(key);
    if (!t) throw new ArgumentError(`model parameter '${key}' is missing`, 'model');
    return t;
  }
  opt(key: string): Tensor | null { return this.params.get(key) ?? null; }

  /** Next dropout seed (splitmix-style 53-bit stream). */
  nextSeed(): number {
    this.seedState = (this.seedState + 0x6d2b79f5) >>> 0;
    let z = this.seedState;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    z = (z ^ (z >>> 16)) >>> 0;
    return z * 2097152 + (this.seedState & 0x1fffff);
  }
  get rngState(): number { return this.seedState; }
}

/** A [1, n, d] parameter repeated over a batch of N as [N, n, d] (gradient summed back over the batch). */
export function expandBatch(p: Tensor, N: number): Tensor {
  const n = p.shape[p.ndim - 2], d = p.shape[p.ndim - 1];
  const z = zeros([N, n, d], { device: p.device });
  const flat = reshape(p, [n, d]);
  const y = add(z, flat);
  z.dispose();
  flat.dispose();
  return y;
}
