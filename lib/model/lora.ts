// Merging a LoRA adapter into its base weights (W ← W + s·B·A) and taking it back out; what the released
// mplug-owl-llama-7b checkpoint contains is the merged form (spec §2.1).
import { cast, noGrad, scope, type Tensor } from '../tensor/index.ts';
import { loraScaling, type AdapterConfig } from './config.ts';
import type { Params } from './context.ts';
import { parseLoraKey, loraKey } from './io/keys.ts';

function apply(a: AdapterConfig, p: Params, sign: 1 | -1): number {
  const s = loraScaling(a) * sign;
  let merged = 0;
  noGrad(() => {
    for (const key of p.keys()) {
      const l = parseLoraKey(key);
      if (!l || l.which !== 'A') continue;
      const w = p.get(`${l.module}.weight`), A = p.get(key), B = p.get(loraKey(l.module, 'B'));
      if (!w || !A || !B) throw new Error(`LoRA merge: ${l.module} is missing its base weight or lora_B`);
      if (w.dtype === 'f32' && A.dtype === 'f32' && B.dtype === 'f32') {
        w.backend.matmulInto(w.handle, B.handle, A.handle, false, false, s, 1);
      } else {
        // As PEFT merges a bf16 base: W + s·B·A in fp32, rounded to W's dtype once.
        scope(() => {
          const f32 = (t: Tensor) => (t.dtype === 'f32' ? t : cast(t, 'f32'));
          const wf = cast(w, 'f32');
          w.backend.matmulInto(wf.handle, f32(B).handle, f32(A).handle, false, false, s, 1);
          w.backend.copyInto(w.handle, cast(wf, w.dtype).handle);
        });
      }
      merged++;
    }
  });
  return merged;
}

/** W += scaling·B·A for every adapted module; returns how many were merged. Afterwards run without the adapter. */
export const mergeLora = (a: AdapterConfig, p: Params): number => apply(a, p, 1);
/** Takes a merged adapter back out of the base weights. */
export const unmergeLora = (a: AdapterConfig, p: Params): number => apply(a, p, -1);
