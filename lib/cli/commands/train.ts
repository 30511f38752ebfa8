// owlet train --config F [--set k=v]… [--resume auto|DIR]: validates everything first, then trains the stage.
import { existsSync } from 'node:fs';
import { owlComponents } from '../../train/owl-components.ts';
import { loadConfig } from '../../train/config.ts';
import { UsageError } from '../../train/errors.ts';
import { trainStage } from '../../train/stage.ts';
import type { CliIO } from '../io.ts';

export interface TrainArgs { config: string; set: string[]; resume?: string; progress?: boolean }

export async function trainCommand(a: TrainArgs, io: CliIO): Promise<void> {
  const config = loadConfig(a.config, a.set);
  if (a.resume !== undefined && a.resume !== 'auto' && !existsSync(a.resume)) {
    throw new UsageError(`--resume '${a.resume}': no such directory (use auto or a checkpoint directory)`);
  }
  const components = owlComponents();
  const r = await trainStage(config, components, { resume: a.resume, log: io.out, warn: io.err, progress: a.progress });
  io.out(`done: ${r.steps}/${r.totalSteps} steps, ${r.skipped.length} skipped; run folder ${r.outDir}` +
    (r.checkpoint ? `; last checkpoint ${r.checkpoint}` : ''));
}
