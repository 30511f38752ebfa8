// What a forward pass needs besides inputs: the parameters by official key, the LoRA adapter (if any), train/eval
// mode, and a seeded source of dropout seeds (its state is saved in checkpoints so a resumed run draws the same masks).
import { ArgumentError, add, linear, loraLinear, reshape, zeros, type Tensor } from '../tensor/index.ts';
import type { AdapterConfig } from './config.ts';
import { loraScaling } from './config.ts';
import { isLoraTarget, loraKey } from './io/keys.ts';

export type Params = Map<string, Tensor>;

export class ForwardContext {
  constructor(readonly params: Params, readonly training: boolean, readonly adapter: AdapterConfig | null = null,
    private seedState: number = 0x9e3779b9) {}

  get(key: string): Tensor {
    const t = this.params.get(key);
    if (!t) throw new ArgumentError(`model parameter '${key}' is missing`, 'model');
    return t;
  }

  /** The official module `name` (e.g. `language_model.model.layers.3.self_attn.q_proj`) applied to x: a plain
   *  linear (+ bias when the module has one), or a LoRA linear when the adapter targets that module. */
  linear(x: Tensor, name: string): Tensor {
    const w = this.get(`${name}.weight`), b = this.params.get(`${name}.bias`) ?? null;
    const a = this.adapter;
    if (!a || !isLoraTarget(a, name)) return linear(x, w, b);
    const y = loraLinear(x, w, this.get(loraKey(name, 'A')), this.get(loraKey(name, 'B')), loraScaling(a), {
      dropoutP: this.training ? a.loraDropout : 0, seed: this.nextSeed(),
    });
    if (!b) return y;
    const yb = add(y, b);
    y.dispose();
    return yb;
  }

  /** Next dropout seed (a 53-bit counter-hash stream). */
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
  const z = zeros([N, n, d], { device: p.device, dtype: p.dtype });
  const flat = reshape(p, [n, d]);
  const y = add(z, flat);
  z.dispose();
  flat.dispose();
  return y;
}
