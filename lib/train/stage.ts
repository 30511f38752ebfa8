// Training one stage from a validated config: the programmatic form of `owlet train`.
import { join } from 'node:path';
import { existsSync, writeFileSync, mkdirSync, statSync } from 'node:fs';
import { noGrad } from '../tensor/index.ts';
import { readCheckpointJson, resolveResume } from './checkpoint.ts';
import type { OwletConfig } from './config-schema.ts';
import { gradAccumFor, modelSizes, totalSteps } from './config.ts';
import type { Components } from './components.ts';
import { estimateMemory, estimateStepFlops } from './estimate.ts';
import { OutOfMemoryError } from '../tensor/errors.ts';
import { CheckpointError, ConfigError } from './errors.ts';
import { lockRunFolder } from './run-lock.ts';
import { resumeConfigChanges, weightsFingerprint } from './resume-check.ts';
import { checkRanksAgree, comparableConfig } from './rank-agreement.ts';
import { gradientSyncSettings } from '../dist/env.ts';
import { applyStage, decayGroups } from './param-groups.ts';
import { makeSchedule } from './schedule.ts';
import { Trainer, type TrainResult } from './trainer.ts';
import type { Batch, Collectives, DataStream, Json, Optimizer } from './types.ts';

export interface TrainStageOptions {
  /** 'auto' (newest complete checkpoint of the run, or a fresh start), a checkpoint directory, or undefined (fresh). */
  resume?: string;
  log?: (line: string) => void;
  warn?: (line: string) => void;
  /** Show a progress bar (default: the config's logging.progress). */
  progress?: boolean;
  /**
   * The process group of a data-parallel run (lib/dist's initProcessGroup()). Every rank calls trainStage with the
   * same config; rank 0 resolves --resume, all start from rank 0's weights, and rank 0 alone writes the run folder.
   */
  dist?: Collectives;
  /** Polled after each step: true stops the run there with a checkpoint, and without the final export. */
  stopRequested?: () => boolean;
}

export interface StageResult extends TrainResult { outDir: string; resumedFrom: string | null; totalSteps: number }

/**
 * Trains the stage a config describes: builds the model, applies the stage (LoRA, which groups train), the data,
 * AdamW with decay groups, the schedule; resumes when asked; runs with logging, evaluation, checkpoints and plots.
 *
 * ```ts
 * import { loadConfig, owlComponents, trainStage } from 'owlet';
 * const config = loadConfig('configs/stage2-7b.yaml', ['training.epochs=1']);
 * const result = await trainStage(config, owlComponents(), { resume: 'auto' });
 * ```
 */
export async function trainStage<B extends Batch>(config: OwletConfig, c: Components<B>, o: TrainStageOptions = {}): Promise<StageResult> {
  if (!config || typeof config !== 'object' || typeof config.run?.out_dir !== 'string') {
    throw new ConfigError('trainStage: the config must be a validated run configuration (loadConfig or validateConfig)');
  }
  if (!c || typeof c.createModel !== 'function') throw new ConfigError('trainStage: the components must be owlComponents() or an object like it');
  const outDir = config.run.out_dir;
  if (existsSync(outDir) && !statSync(outDir).isDirectory()) throw new ConfigError(`run.out_dir ${outDir} is a file, not a folder`);
  // The rank that writes the folder holds it for the whole run (run-lock.ts).
  const release = !o.dist || o.dist.worldSize <= 1 || o.dist.rank === 0 ? lockRunFolder(outDir) : () => {};
  try {
    return await runStage(config, c, o);
  } catch (e) {
    if (e instanceof OutOfMemoryError) throw new OutOfMemoryError(`${e.message} ${memoryAdvice(config)}`, e.op);
    throw e;
  } finally {
    release();
  }
}

/** What the stage needs by `owlet estimate`, and the knobs that lower it: added to a device's out-of-memory error. */
function memoryAdvice(config: OwletConfig): string {
  const e = estimateMemory({ sizes: modelSizes(config), train: config.stage.train, lora: config.stage.lora, dtype: config.model.dtype,
    microBatch: config.data.micro_batch, maxLength: config.data.max_length, recompute: config.model.gradient_checkpointing,
    gradAccum: gradAccumFor(config) });
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
  return `(owlet estimate puts stage ${config.stage.id} at ${gib(e.bytes.total)} per device: weights ${gib(e.bytes.weights + e.bytes.masters)}, ` +
    `gradients + AdamW ${gib(e.bytes.gradients + e.bytes.optimizer)}, activations + logits ${gib(e.bytes.activations + e.bytes.logits)} ` +
    `at data.micro_batch ${config.data.micro_batch} × ${config.data.max_length + 1} tokens; lower data.micro_batch — ` +
    'training.global_batch keeps the batch per step — or data.max_length)';
}

/**
 * Before a resume: refuses a configuration that changes what the checkpoint's weights mean (LoRA's r, alpha or targets,
 * the trained groups; the architecture is refused by the parameters' shapes) or other base weights than it was trained
 * on; returns every other setting that changed, named once the resume succeeded (a new learning rate or step
 * count is then a choice seen, not an accident). Checkpoints written before
 * the comparison existed have no base-weights identity: not checked.
 */
function checkResumeConfig(dir: string, config: OwletConfig, baseWeights: string | null): string[] {
  const file = join(dir, 'config.json');
  if (!existsSync(file)) return []; // (the checkpoint's own integrity check names a missing file)
  const saved = readCheckpointJson(dir, 'config.json') as Json & { provenance?: { base_weights?: string | null } };
  if (typeof saved !== 'object' || saved === null || Array.isArray(saved)) {
    throw new CheckpointError(`checkpoint ${dir} is not usable: config.json does not hold a run configuration`);
  }
  const was = saved.provenance?.base_weights ?? null;
  if (was && baseWeights && was !== baseWeights) {
    throw new CheckpointError(`model.weights ${config.model.weights} is not the base model checkpoint ${dir} was trained on ` +
      `(its files differ: identity ${baseWeights} now, ${was} then): resume with the original, or start a new run from ` +
      "the checkpoint's weights");
  }
  const { refused, changed } = resumeConfigChanges(saved, config as unknown as Json);
  if (refused.length) {
    throw new ConfigError(`cannot resume ${dir} with another ${refused.length === 1 ? 'setting' : 'settings'} of what its weights ` +
      `are: ${refused.join('; ')} (its trained weights would mean something else); resume with the checkpoint's, or start a new run`);
  }
  return changed;
}

// At most this often (ms) a batch read lets the event loop turn: nothing a step would notice.
const TURN_MS = 10;

/**
 * Makes each batch read let Node's event loop turn first (at most every TURN_MS). Signals — Ctrl-C, a scheduler's
 * SIGTERM — reach the process only when the loop turns, and a CPU step never lets it: its kernels run synchronously
 * and the batches it awaits are ready (prepared on this thread, or prefetched), so its promises resolve as
 * microtasks. owlet train's Ctrl-C then waited for the next checkpoint's file I/O (save_every steps later, or the
 * end of the run) instead of stopping after the current step.
 */
function letEventLoopTurn<B extends Batch>(data: DataStream<B>): DataStream<B> {
  const next = data.next.bind(data);
  let last = -Infinity;
  data.next = async () => {
    if (performance.now() - last >= TURN_MS) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      last = performance.now();
    }
    return next();
  };
  return data;
}

async function runStage<B extends Batch>(config: OwletConfig, c: Components<B>, o: TrainStageOptions): Promise<StageResult> {
  const sizes = modelSizes(config);
  const outDir = config.run.out_dir;
  const dist = o.dist && o.dist.worldSize > 1 ? o.dist : undefined;
  const shard = { rank: dist?.rank ?? 0, worldSize: dist?.worldSize ?? 1 };
  const main = shard.rank === 0;
  const log = main ? o.log ?? console.log : () => {};
  const gradAccum = gradAccumFor(config, shard.worldSize);
  let resumePath = o.resume && main ? await resolveResume(join(outDir, 'checkpoints'), o.resume, o.warn) : null;
  if (dist && o.resume) resumePath = dist.shareFromRoot(main ? resumePath ?? '' : undefined) || null;
  const model = await c.createModel(config, sizes);
  // Released in the finally below, whichever of them exist when the stage ends or fails.
  let data: DataStream<B> | undefined, evalData: DataStream<B> | undefined;
  let optimizer: Optimizer | undefined, trainer: Trainer<B> | undefined;
  try {
    const trainable = applyStage(model as never, { train: config.stage.train, lora: config.stage.lora });
    if (dist) {
      checkRanksAgree(dist, {
        config: comparableConfig(config),
        parameters: [...model.parameters()].map(([n, t]) => `${n} [${t.shape.join(',')}]${t.requiresGrad ? ' trained' : ''}`),
        gradientSync: gradientSyncSettings(),
      });
    }
    if (model.describe) log(model.describe());
    data = letEventLoopTurn(await c.createData(config, 'train', model, shard));
    if (data.describe) log(data.describe());
    const steps = totalSteps(config, data.microBatchesPerEpoch, gradAccum);
    optimizer = c.createOptimizer(decayGroups(trainable, config.optimizer.weight_decay, config.optimizer.no_decay), config.optimizer);
    const schedule = makeSchedule({ type: config.schedule.type, lr: config.optimizer.lr, warmupSteps: config.schedule.warmup_steps,
      totalSteps: steps, minLr: config.schedule.min_lr });
    let evaluate: ConstructorParameters<typeof Trainer<B>>[0]['evaluate'];
    if (config.data.eval.length && c.evaluate) {
      evalData = letEventLoopTurn(await c.createData(config, 'eval', model, shard));
      const ev = evalData;
      const start = ev.position();
      evaluate = {
        every: config.logging.eval_every,
        run: async () => { ev.restore(start); return noGrad(() => c.evaluate!(model, ev, config.logging.eval_batches, dist)); },
      };
    }
    // FLOPs and peak FLOP/s of all ranks together (the step's token counts are summed over the ranks).
    const flops = shard.worldSize * estimateStepFlops({ sizes, train: config.stage.train, lora: config.stage.lora,
      microBatch: config.data.micro_batch, maxLength: config.data.max_length, gradAccum });
    if (dist) {
      log(`data parallel: ${shard.worldSize} ranks × micro-batch ${config.data.micro_batch} × accumulation ${gradAccum} = ` +
        `global batch ${shard.worldSize * config.data.micro_batch * gradAccum}`);
    }
    // The frozen base weights are not in the checkpoints: their identity is, so that a resume over other ones is refused.
    const baseWeights = config.model.weights ? weightsFingerprint(config.model.weights) : null;
    trainer = new Trainer<B>({
      model, trainable, data, optimizer, schedule, totalSteps: steps, seed: config.run.seed, stage: config.stage.id,
      gradAccum, clip: config.training.clip, maxSkippedSteps: config.training.max_skipped_steps, dist,
      outDir, checkpoint: { io: c.tensorIO, every: config.logging.save_every, keepLast: config.logging.keep_last,
        config: { ...config, provenance: { base_weights: baseWeights } } as unknown as Json },
      evaluate, logEvery: config.logging.every, tensorboard: config.logging.tensorboard, plots: config.logging.plots,
      progress: o.progress ?? config.logging.progress,
      peakFlops: config.logging.peak_flops === undefined ? undefined : config.logging.peak_flops * shard.worldSize,
      flopsPerStep: () => flops, gradOps: c.gradOps, log: o.log, warn: o.warn, stopRequested: o.stopRequested,
    });
    if (resumePath) {
      const changed = checkResumeConfig(resumePath, config, baseWeights);
      await trainer.resumeFrom(resumePath);
      if (changed.length) log(`resuming with changed settings (checkpoint → now): ${changed.join('; ')}`);
      log(`resumed from ${resumePath} at step ${trainer.step}/${steps}`);
    }
    if (main) {
      // (after the check that the folder holds no newer checkpoints: a refused run must not touch the folder)
      await trainer.checkOutDir();
      mkdirSync(outDir, { recursive: true });
      writeFileSync(join(outDir, 'config.json'), JSON.stringify(config, null, 1) + '\n');
    }
    // Every rank starts from rank 0's weights (fresh initialisation, loaded files and resumed state alike).
    if (dist) noGrad(() => dist.broadcast([...model.parameters().values()], 0));
    const r = await trainer.run();
    if (c.exportFinal && main && !r.interrupted) await c.exportFinal(model, config, join(outDir, 'final'));
    return { ...r, outDir, resumedFrom: resumePath, totalSteps: steps };
  } finally {
    // (on every exit, a failure before the run included: a config or data error after the model was built — an
    // unreadable eval file — left its weights and the data's worker threads behind on each attempt of a process
    // that retries)
    if (trainer) trainer.dispose(); else optimizer?.dispose?.();
    data?.close?.();
    evalData?.close?.();
    // The model was built here and is not returned: its weights live on only in the exported files.
    for (const p of model.parameters().values()) p.dispose();
  }
}
