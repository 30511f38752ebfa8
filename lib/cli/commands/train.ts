// owlet train --config F [--set k=v]… [--resume auto|DIR]: validates everything first, then trains the stage.
import { existsSync } from 'node:fs';
import { initProcessGroup } from '../../dist/process-group.ts';
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
  // Joins the other ranks when started by owlet launch / torchrun / srun (RANK, WORLD_SIZE, …); alone otherwise.
  const dist = initProcessGroup();
  try {
    const r = await trainStage(config, owlComponents(), { resume: a.resume, log: io.out, warn: io.err, progress: a.progress, dist });
    if (dist.rank === 0 && r.steps > r.totalSteps) {
      io.out(`done: nothing to train (resumed at step ${r.steps}, past training.steps = ${r.totalSteps}); run folder ${r.outDir}`);
    } else if (dist.rank === 0) {
      io.out(`done: ${r.steps}/${r.totalSteps} steps, ${r.skipped.length} skipped; run folder ${r.outDir}` +
        (r.checkpoint ? `; last checkpoint ${r.checkpoint}` : ''));
    }
  } finally {
    dist.close();
  }
}
