// owlet dump --model DIR [--adapter DIR] --batch FILE --stage 1|2 --out FILE
import { dump } from '../../model/dump.ts';
import type { CliIO } from '../io.ts';

export function dumpCommand(o: { model: string; adapter?: string; batch: string; stage: string; out: string }, io: CliIO): void {
  const r = dump({ modelDir: o.model, adapterDir: o.adapter, batchFile: o.batch, stage: Number(o.stage) as 1 | 2, out: o.out });
  io.out(`loss ${r.loss.toPrecision(8)} over ${r.countedTokens} tokens; wrote logits, loss and ${r.gradients} gradients to ${o.out}`);
}
