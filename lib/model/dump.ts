// `owlet dump`: one forward and backward of a batch in the official format, writing logits, loss and the gradient
// of every trainable tensor of the stage under its official (or PEFT) name — what the parity fixtures hold.
import { existsSync, statSync } from 'node:fs';
import { dirname, relative, resolve, isAbsolute } from 'node:path';
import { ArgumentError, backward, scope, type Tensor } from '../tensor/index.ts';
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

// Where the dump goes must be a file of its own: a folder would get DIR/model.safetensors, and inside the model's or the
// adapter's folder that replaces the weights with the gradients (found by the CLI audit: exit 0, model lost).
function checkOut(o: DumpOptions): void {
  const out = resolve(o.out);
  if (existsSync(out) && statSync(out).isDirectory()) {
    throw new ArgumentError(`dump: --out ${o.out} is a folder; name the file to write (e.g. ${o.out}/dump.safetensors)`, 'dump');
  }
  for (const [what, dir] of [['model', o.modelDir], ['adapter', o.adapterDir]] as const) {
    if (!dir) continue;
    const rel = relative(resolve(dir), out);
    if (!rel.startsWith('..') && !isAbsolute(rel)) {
      throw new ArgumentError(`dump: --out ${o.out} is inside the ${what} folder ${dir}; write the dump elsewhere`, 'dump');
    }
  }
  const parent = dirname(out);
  if (!existsSync(parent) || !statSync(parent).isDirectory()) {
    throw new ArgumentError(`dump: the folder of --out ${o.out} does not exist`, 'dump');
  }
}

/** `owlet dump`: one forward and backward of an official batch file, writing the logits, the loss and the gradients
 *  of the stage's trained groups to `out` (safetensors) — the parity check against the official code. */
export function dump(o: DumpOptions): DumpResult {
  checkOut(o);
  const model = loadModel(o.modelDir, { adapterDir: o.adapterDir });
  try {
    return scope(() => {
      const batch = loadBatch(o.batchFile);
      model.setTrainable(STAGE_GROUPS[o.stage]);
      const { logits, loss, countedTokens } = model.forward(batch, { training: false });
      // (a loss that reaches no trained weight — stage 1 on a text-only batch — has no gradients to write, as the
      // trainer skips its backward; the logits and loss are still dumped)
      if (loss.requiresGrad) backward(loss);
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
