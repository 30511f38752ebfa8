// owlet train --config F [--set k=v]… [--resume auto|DIR]: validates everything first, then trains the stage.
import { existsSync } from 'node:fs';
import { initProcessGroup } from '../../dist/process-group.ts';
import { owlComponents } from '../../train/owl-components.ts';
import { loadConfig } from '../../train/config.ts';
import { UsageError } from '../../train/errors.ts';
import { trainStage } from '../../train/stage.ts';
import type { CliIO } from '../io.ts';

export interface TrainArgs { config: string; set: string[]; resume?: string; progress?: boolean }

/** Returns the exit code: 0, or 130 / 143 when Ctrl-C / SIGTERM stopped the run (with a checkpoint). */
export async function trainCommand(a: TrainArgs, io: CliIO): Promise<number> {
  const config = loadConfig(a.config, a.set);
  if (a.resume !== undefined && a.resume !== 'auto' && !existsSync(a.resume)) {
    throw new UsageError(`--resume '${a.resume}': no such directory (use auto or a checkpoint directory)`);
  }
  // Joins the other ranks when started by owlet launch / torchrun / srun (RANK, WORLD_SIZE, …); alone otherwise.
  const dist = initProcessGroup();
  // Ctrl-C or SIGTERM (a scheduler's preemption; owlet launch forwards both to every rank): the run stops after its
  // current step with a checkpoint, and --resume auto continues it exactly. A second one stops at once, losing the
  // steps since the last checkpoint, as a kill does — a second one a second or more later: a Ctrl-C at the terminal
  // reaches the ranks of owlet launch twice, from the terminal and forwarded by the launcher.
  let stop: NodeJS.Signals | null = null, stopAt = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stop) {
      if (Date.now() - stopAt < 1000) return;
      io.err(`owlet: ${signal} again: stopping now, without a checkpoint`);
      process.exit(signal === 'SIGINT' ? 130 : 143);
    }
    stop = signal;
    stopAt = Date.now();
    if (dist.rank === 0) io.err(`owlet: ${signal}: stopping after this step with a checkpoint (${signal === 'SIGINT' ? 'Ctrl-C' : signal} again stops now)`);
  };
  const onInt = () => onSignal('SIGINT'), onTerm = () => onSignal('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  try {
    const r = await trainStage(config, owlComponents(), { resume: a.resume, log: io.out, warn: io.err, progress: a.progress, dist,
      stopRequested: () => stop !== null });
    if (r.interrupted) {
      if (dist.rank === 0) {
        io.out(`stopped: ${r.steps}/${r.totalSteps} steps${r.checkpoint ? `, checkpoint ${r.checkpoint}` : ''}; ` +
          'the same command with --resume auto continues it');
      }
      return stop === 'SIGTERM' ? 143 : 130;
    }
    if (dist.rank === 0 && r.steps > r.totalSteps) {
      io.out(`done: nothing to train (resumed at step ${r.steps}, past training.steps = ${r.totalSteps}); run folder ${r.outDir}`);
    } else if (dist.rank === 0) {
      io.out(`done: ${r.steps}/${r.totalSteps} steps, ${r.skipped.length} skipped; run folder ${r.outDir}` +
        (r.checkpoint ? `; last checkpoint ${r.checkpoint}` : ''));
    }
    return 0;
  } finally {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    dist.close();
  }
}
