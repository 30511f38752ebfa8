// Merging a LoRA adapter into its base weights (W ← W + s·B·A) and taking it back out; what the released
// mplug-owl-llama-7b checkpoint contains is the merged form (spec §2.1).
import { noGrad, type Tensor } from '../tensor/index.ts';
import type { LoraConfig, OwlModelConfig } from './config.ts';
import type { Params } from './context.ts';
import { loraBaseKey, loraKey } from './params.ts';

function apply(c: OwlModelConfig, l: LoraConfig, p: Params, sign: 1 | -1): void {
  const s = (l.lora_alpha / l.r) * sign;
  noGrad(() => {
    for (let i = 0; i < c.text_config.num_hidden_layers; i++) {
      for (const m of l.target_modules) {
        const w = p.get(loraBaseKey(i, m)), a = p.get(loraKey(i, m, 'A')), b = p.get(loraKey(i, m, 'B'));
        if (!w || !a || !b) throw new Error(`LoRA merge: layer ${i} ${m} is missing its base weight or A/B`);
        (w as Tensor).backend.matmulInto(w.handle, b.handle, a.handle, false, false, s, 1);
      }
    }
  });
}

/** W += (alpha/r)·B·A for every adapted module. The LoRA tensors stay (unmerge subtracts them again). */
export const mergeLora = (c: OwlModelConfig, l: LoraConfig, p: Params): void => apply(c, l, p, 1);
export const unmergeLora = (c: OwlModelConfig, l: LoraConfig, p: Params): void => apply(c, l, p, -1);
