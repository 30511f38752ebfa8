// A few real training steps on the owl-tiny fixture: the fixture's batch repeated as the data stream, the real model
// (OwlTrainable), AdamW (OwlOptimizer), decay groups, schedule and Trainer, for stage 1 (vision, queries, abstractor)
// or stage 2 (queries, abstractor and the fixture's LoRA adapter). Used by test/train/mixed-precision.test.ts on the
// CPU and by scripts/gpu/train-check.ts to put CPU and CUDA (f32, bf16) losses side by side.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { loadBatch, type MplugOwl } from '../../lib/model/index.ts';
import { validateConfig } from '../../lib/train/config.ts';
import type { OwletConfig } from '../../lib/train/config-schema.ts';
import { OwlOptimizer, OwlTrainable, type OwlTrainBatch } from '../../lib/train/owl-components.ts';
import { applyStage, decayGroups } from '../../lib/train/param-groups.ts';
import { makeSchedule } from '../../lib/train/schedule.ts';
import { Trainer } from '../../lib/train/trainer.ts';
import type { Collectives, DataStream, Json } from '../../lib/train/types.ts';

/** The owl-tiny fixture: beside the repository (../shared) or beside a worktree's parent (../../shared). */
export function owlTinyDir(): string | null {
  const root = join(import.meta.dirname, '../..');
  for (const d of [join(root, '../shared/fixtures/owl-tiny'), join(root, '../../shared/fixtures/owl-tiny')]) {
    if (existsSync(join(d, 'model.safetensors'))) return d;
  }
  return null;
}

export const TINY_STAGES = {
  1: { train: ['vision', 'queries', 'abstractor'] as const },
  2: { train: ['queries', 'abstractor', 'lora'] as const },
};

/** A run config for owl-tiny: its sizes and weights (and for stage 2 its adapter), on `device` in `dtype`. */
export function tinyConfig(fx: string, stage: 1 | 2, device: string, dtype: 'f32' | 'bf16', seed = 11): OwletConfig {
  return validateConfig({
    run: { name: `tiny-${stage}`, out_dir: 'unused', seed, device },
    model: { config: fx, weights: fx, ...(stage === 2 ? { adapter: fx } : {}), dtype },
    stage: { id: stage, train: [...TINY_STAGES[stage].train], ...(stage === 2 ? { lora: { r: 4, alpha: 8, dropout: 0, targets: ['q_proj', 'v_proj'] } } : {}) },
    data: { train: [{ path: 'unused.jsonl' }], max_length: 47, micro_batch: 3 },
    optimizer: { lr: 2e-3, weight_decay: 0.01 },
    schedule: { type: 'linear', warmup_steps: 0 },
    training: { steps: 4, grad_accum: 2, clip: 1 },
  });
}

/** The fixture's batch, over and over (the trainer's dispose of a micro-batch keeps it; close() releases it). */
export class RepeatStream implements DataStream<OwlTrainBatch> {
  private readonly batch: OwlTrainBatch;
  constructor(fx: string, device: string) {
    const owl = loadBatch(join(fx, 'batch.safetensors'), device);
    let tokens = 0;
    for (let i = 0; i < owl.inputIds.length; i++) if (owl.inputIds[i] !== 0) tokens++;
    this.batch = { owl, sampleIds: ['a', 'b', 'c'], tokens, images: owl.pixelValues?.shape[0] ?? 0 };
  }
  async next(): Promise<OwlTrainBatch> { return this.batch; }
  position(): Json { return null; }
  restore(): void {}
  close(): void { this.batch.owl.pixelValues?.dispose(); }
}

export interface StepsResult { losses: number[]; gradNorms: number[]; weights: Map<string, Float32Array>; ms: number[] }

/** Trains `steps` optimizer steps of `config` on `model` with the repeated fixture batch; disposes the model.
 *  `dist`: the process group of a data-parallel run (scripts/gpu/nccl-check.ts: NCCL at world size 1). */
export async function trainTinySteps(model: MplugOwl, config: OwletConfig, fx: string, steps: number, dist?: Collectives): Promise<StepsResult> {
  const m = new OwlTrainable(model, config.run.seed, config.model.gradient_checkpointing);
  const trainable = applyStage(m as never, { train: config.stage.train, lora: config.stage.lora });
  const data = new RepeatStream(fx, model.device);
  const optimizer = new OwlOptimizer(decayGroups(trainable, config.optimizer.weight_decay, config.optimizer.no_decay), config.optimizer);
  const schedule = makeSchedule({ type: config.schedule.type, lr: config.optimizer.lr, warmupSteps: config.schedule.warmup_steps, totalSteps: steps });
  const trainer = new Trainer({ model: m, trainable, data, optimizer, schedule, totalSteps: steps, seed: config.run.seed,
    gradAccum: config.training.grad_accum, clip: config.training.clip, dist });
  const r: StepsResult = { losses: [], gradNorms: [], weights: new Map(), ms: [] };
  try {
    // (trainSteps: on a GPU each step is queued before the previous one's results are read, as run() does)
    for (const s of await trainer.trainSteps(steps)) {
      r.losses.push(s.loss);
      r.gradNorms.push(s.gradNorm);
      r.ms.push(s.ms);
    }
    for (const [k, p] of trainable) r.weights.set(k, p.toFloat32());
  } finally {
    trainer.dispose();
    data.close();
    for (const p of model.params.values()) p.dispose();
  }
  return r;
}
