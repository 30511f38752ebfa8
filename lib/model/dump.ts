// `owlet dump`: one forward and backward of a batch in the official format, writing logits, loss and the gradient
// of every trainable tensor of the stage under its official (or PEFT) name — what the parity fixtures hold.
import { backward, scope, type Tensor } from '../tensor/index.ts';
import { saveSafetensors } from './io/index.ts';
import { loadBatch, loadModel } from './load.ts';
import type { GroupName } from './params.ts';

export const STAGE_GROUPS: Record<1 | 2, GroupName[]> = {
  1: ['vision', 'queries', 'abstractor'],
  2: ['queries', 'abstractor', 'lora'],
};

export interface DumpOptions {
  modelDir: string;
  adapterDir?: string | null;
  batchFile: string;
  stage: 1 | 2;
  out: string;
}

export interface DumpResult { loss: number; gradients: number; countedTokens: number }

export function dump(o: DumpOptions): DumpResult {
  const model = loadModel(o.modelDir, { adapterDir: o.adapterDir });
  try {
    return scope(() => {
      const batch = loadBatch(o.batchFile);
      model.setTrainable(STAGE_GROUPS[o.stage]);
      const { logits, loss, countedTokens } = model.forward(batch, { training: false });
      backward(loss);
      const out = new Map<string, Tensor>([['logits', logits], ['loss', loss]]);
      let n = 0;
      for (const [k, p] of model.trainable()) {
        if (p.grad) { out.set(k, p.grad); n++; }
      }
      saveSafetensors(o.out, out);
      return { loss: loss.item(), gradients: n, countedTokens };
    });
  } finally {
    for (const p of model.params.values()) p.dispose();
  }
}
