// Fresh parameters (spec §4.7): linear/conv/embedding weights N(0, 0.02), biases 0, norms 1/0, class/position
// embeddings and vit_eos truncated-normal(0.02), query_tokens zeros (as the official code; `queryInit: 'normal'`
// breaks their symmetry earlier — a documented deviation), LoRA A kaiming-uniform (PEFT: U(±1/sqrt(K))), B zeros.
import { tensor, type Tensor } from '../tensor/index.ts';
import type { AdapterConfig, OwlConfig } from './config.ts';
import type { Params } from './context.ts';
import { loraSpecs, paramSpecs, type ParamSpec } from './params.ts';

export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function normal(r: () => number): number {
  const u = Math.max(r(), 1e-12), v = r();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

export function initTensor(spec: ParamSpec, r: () => number, std = 0.02): Tensor {
  const n = spec.shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  switch (spec.init) {
    case 'ones': data.fill(1); break;
    case 'zeros': break;
    case 'normal': for (let i = 0; i < n; i++) data[i] = std * normal(r); break;
    case 'trunc_normal':
      for (let i = 0; i < n; i++) { let z; do z = normal(r); while (Math.abs(z) > 2); data[i] = std * z; }
      break;
    case 'kaiming_uniform': {
      const bound = 1 / Math.sqrt(spec.shape[spec.shape.length - 1]);
      for (let i = 0; i < n; i++) data[i] = (2 * r() - 1) * bound;
      break;
    }
  }
  const t = tensor(data, spec.shape);
  t.name = spec.name;
  return t;
}

export interface InitOptions {
  seed?: number;
  std?: number;
  queryInit?: 'zeros' | 'normal';
  /** Takes each fresh CPU f32 tensor as it is made and returns the one to keep (e.g. on a device, in bf16), so a
   *  large model never exists twice. */
  place?: (t: Tensor) => Tensor;
}

export function initParams(c: OwlConfig, o: InitOptions = {}): Params {
  const r = seededRandom(o.seed ?? 0);
  const out: Params = new Map();
  try {
    for (const s of paramSpecs(c)) {
      const spec = s.name === 'query_tokens' && o.queryInit === 'normal' ? { ...s, init: 'normal' as const } : s;
      const t = initTensor(spec, r, o.std ?? c.initializerRange);
      out.set(s.name, o.place ? o.place(t) : t);
    }
  } catch (e) {
    for (const t of out.values()) t.dispose(); // e.g. the device ran out of memory half-way
    throw e;
  }
  return out;
}

export function initLora(c: OwlConfig, a: AdapterConfig, into: Params, seed = 1): void {
  const r = seededRandom(seed);
  for (const s of loraSpecs(c, a)) into.set(s.name, initTensor(s, r, c.initializerRange));
}
