// Builds a complete fake training setup (model, data, optimizer, trainer) from a few knobs, the same way every time.
import { applyStage, decayGroups } from '../../../lib/train/param-groups.ts';
import { makeSchedule } from '../../../lib/train/schedule.ts';
import { Trainer, type TrainerOptions } from '../../../lib/train/trainer.ts';
import type { SavePoint } from '../../../lib/train/checkpoint.ts';
import type { Optimizer } from '../../../lib/train/types.ts';
import type { Tensor } from '../../../lib/tensor/index.ts';
import { HostAdamW, RegressionData, RegressionModel, fakeIO, hostGradOps, type RegressionBatch } from './fakes.ts';

export interface Setup {
  model: RegressionModel;
  data: RegressionData;
  trainer: Trainer<RegressionBatch>;
  logs: string[];
  warnings: string[];
}

export function setup(o: Partial<TrainerOptions<RegressionBatch>> & {
  samples?: number; micro?: number; nanSamples?: Set<number>; makeOptimizer?: (trainable: Map<string, Tensor>) => Optimizer;
  checkpointEvery?: number;
  keepLast?: number; onSavePoint?: (p: SavePoint) => void;
  /** Changes the model before the stage is applied (e.g. adds a parameter). */
  prepare?: (model: RegressionModel) => void;
} = {}): Setup {
  const model = new RegressionModel(7);
  o.prepare?.(model);
  const data = new RegressionData(o.samples ?? 37, o.micro ?? 3, 5, o.nanSamples);
  const trainable = applyStage(model, { train: ['abstractor'] });
  const optimizer = o.makeOptimizer?.(trainable) ?? new HostAdamW(decayGroups(trainable, 0.01, ['(^|\\.)bias$']), [0.9, 0.98]);
  const totalSteps = o.totalSteps ?? 9;
  const logs: string[] = [], warnings: string[] = [];
  const trainer = new Trainer<RegressionBatch>({
    model, trainable, data, optimizer, totalSteps, seed: 11, stage: 1, gradAccum: 2, clip: 0.5, gradOps: hostGradOps,
    schedule: makeSchedule({ type: 'linear', lr: 0.05, warmupSteps: 2, totalSteps }),
    logEvery: 2, progress: false, plots: false, log: (l) => logs.push(l), warn: (l) => warnings.push(l),
    checkpoint: o.outDir ? { io: fakeIO, every: o.checkpointEvery ?? 4, keepLast: o.keepLast ?? 2, config: { fake: true },
      onSavePoint: o.onSavePoint } : undefined,
    ...o,
  });
  return { model, data, trainer, logs, warnings };
}

/** The deterministic part of a step record (timings vary). */
export const core = (h: { step: number; loss: number; gradNorm: number; lr: number; skipped: boolean }[]) =>
  h.map(({ step, loss, gradNorm, lr, skipped }) => ({ step, loss, gradNorm, lr, skipped }));
