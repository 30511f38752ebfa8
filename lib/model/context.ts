// What a forward pass needs besides inputs: the parameters by official key, the LoRA adapter (if any), train/eval
// mode, a seeded source of dropout seeds (its state is saved in checkpoints so a resumed run draws the same masks),
// and the compute dtype: with one set, a parameter stored in another floating dtype (an fp32 master of a trained
// weight under bf16 mixed precision) is read through a cast, made once per forward and reused however often the
// weight is used, so its gradient comes back through the cast's backward in the master's dtype. The copies of one
// layer's weights are made together in one multi-tensor cast (one launch instead of ~16, and one for their
// gradients), at the layer's first read, so the gradients still become final layer by layer (the overlapped
// all-reduce starts its buckets as they do). With a store of working copies kept between forwards (a training run's,
// working-copies.ts), the copies are taken from there (castCached: made once, rewritten by AdamW) instead of cast anew.
import {
  ArgumentError, add, cast, castCached, castMany, linear, loraLinear, quickGelu, quickGeluLinear, reshape, zeros, type DType, type Tensor,
  type WorkingCopies,
} from '../tensor/index.ts';
import type { AdapterConfig } from './config.ts';
import { loraScaling } from './config.ts';
import { PEFT_PREFIX, isLoraTarget, loraKey } from './io/keys.ts';

export type Params = Map<string, Tensor>;

const FLOATS: readonly DType[] = ['f32', 'bf16', 'f16'];

// The layer a parameter belongs to (`…layers.3.`, LoRA matrices under their module's layer), or null.
const LAYER = /^(.*?\.layers\.\d+\.)/;
function layerOf(key: string): string | null {
  return LAYER.exec(key.startsWith(PEFT_PREFIX) ? key.slice(PEFT_PREFIX.length) : key)?.[1] ?? null;
}

export class ForwardContext {
  /** Working copies in the compute dtype, by key (they belong to the scope the forward runs in). */
  private readonly working = new Map<string, Tensor>();
  /** Parameter keys by layer, made at the first working copy of this forward. */
  private layers: Map<string, string[]> | null = null;

  constructor(readonly params: Params, readonly training: boolean, readonly adapter: AdapterConfig | null = null,
    private seedState: number = 0x9e3779b9, readonly computeDtype: DType | null = null,
    private readonly kept: WorkingCopies | null = null) {}

  /** The parameter `key` as the forward computes with it (a cached working copy when its storage dtype differs). */
  get(key: string): Tensor {
    const t = this.params.get(key);
    if (!t) throw new ArgumentError(`model parameter '${key}' is missing`, 'model');
    return this.working.get(key) ?? this.computeCopy(key, t);
  }

  /** The working copies made so far (a checkpointed layer's recomputation reads them again in the backward). */
  workingCopies(): Tensor[] {
    return [...this.working.values()];
  }

  /** Like get, or null when the model has no such parameter (optional biases). */
  maybe(key: string): Tensor | null {
    return this.params.has(key) ? this.get(key) : null;
  }

  private computeCopy(key: string, t: Tensor): Tensor {
    const d = this.computeDtype;
    if (!d || !this.needsCopy(t)) return t;
    const layer = layerOf(key);
    const kept = this.kept?.dtype === d ? this.kept : null;
    if (layer === null) {
      const w = kept ? castCached([t], kept)[0] : cast(t, d);
      this.working.set(key, w);
      return w;
    }
    const keys = (this.keysByLayer().get(layer) ?? [key]).filter((k) => !this.working.has(k) && this.needsCopy(this.params.get(k)!));
    const masters = keys.map((k) => this.params.get(k)!);
    const copies = kept ? castCached(masters, kept) : castMany(masters, d);
    keys.forEach((k, i) => this.working.set(k, copies[i]));
    return this.working.get(key)!;
  }

  private keysByLayer(): Map<string, string[]> {
    if (this.layers) return this.layers;
    this.layers = new Map();
    for (const k of this.params.keys()) {
      const l = layerOf(k);
      if (l === null) continue;
      const ks = this.layers.get(l);
      if (ks) ks.push(k);
      else this.layers.set(l, [k]);
    }
    return this.layers;
  }

  private needsCopy(t: Tensor): boolean {
    return t.dtype !== this.computeDtype && FLOATS.includes(t.dtype);
  }

  /** The official module `name` (e.g. `language_model.model.layers.3.self_attn.q_proj`) applied to x: a plain
   *  linear (+ bias when the module has one), or a LoRA linear when the adapter targets that module. */
  linear(x: Tensor, name: string): Tensor {
    const w = this.get(`${name}.weight`), b = this.maybe(`${name}.bias`);
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

  /** linear(quickGelu(h)) through module `name`, with quickGelu(h) recomputed in the backward rather than kept
   *  (quickGeluLinear); a module the adapter targets takes the plain path. */
  quickGeluLinear(h: Tensor, name: string): Tensor {
    if (this.adapter && isLoraTarget(this.adapter, name)) return this.linear(quickGelu(h), name);
    return quickGeluLinear(h, this.get(`${name}.weight`), this.maybe(`${name}.bias`));
  }

  /** Makes now the working copies of the parameters of module `prefix` (official keys under it and their LoRA
   *  matrices, PEFT-named): a checkpointed block runs its forward without grad, so a cast made inside would be
   *  neither recorded nor kept. */
  materialize(prefix: string): void {
    if (!this.computeDtype) return;
    const peft = PEFT_PREFIX + prefix;
    for (const k of this.params.keys()) if (k.startsWith(prefix) || k.startsWith(peft)) this.get(k);
  }

  /** fn as a block whose calls after the first draw the same dropout seeds as the first did (a checkpointed block's
   *  recomputation must drop the same units); such a replay leaves the seed stream where it found it. */
  replayingSeeds<A extends unknown[], R>(fn: (...a: A) => R): (...a: A) => R {
    let entry: number | null = null;
    return (...a: A): R => {
      if (entry === null) {
        entry = this.seedState;
        return fn(...a);
      }
      const now = this.seedState;
      this.seedState = entry;
      try { return fn(...a); } finally { this.seedState = now; }
    };
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

/** `result`, after disposing `ts`: intermediates that no backward reads (a projection before RoPE, a residual branch
 *  once added) are released at once instead of living, with the forward's scope, until the backward has run. The tape
 *  keeps its own handles on what it saves, so this frees memory only where nothing needs the values. */
export function released<T>(result: T, ...ts: Tensor[]): T {
  for (const t of ts) t.dispose();
  return result;
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
