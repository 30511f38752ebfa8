// The training loop. One optimizer step = `gradAccum` micro-batches, each forward + backward with its loss scaled by
// 1/gradAccum (so the step's gradient is the mean of the micro-batch means, as the HF Trainer does), then the global
// gradient norm, clipping, and one optimizer update at lr = schedule(steps taken so far).
//
// A step whose loss or gradient norm is not finite is reported with its sample ids and skipped: gradients dropped, no
// update. Its remaining micro-batches are still drawn (data position and RNG stay aligned with the step count), and
// the step still counts towards the schedule. More than maxSkippedSteps such steps stop the run with TrainingError.
//
// Determinism: everything random in a step comes from the trainer's seeded RNG (one kernel seed per micro-batch) or
// the data stream's own state; a checkpoint stores both, with the trainable weights and the optimizer state, so a
// resumed run continues bit-for-bit like one that was never interrupted.
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { backward, clearTape, full, keep, noGrad, scope, type Tensor } from '../tensor/index.ts';
import { CheckpointManager, type SavePoint } from './checkpoint.ts';
import { CheckpointError, TrainingError } from './errors.ts';
import { clipGlobalNorm, nativeGradOps, zeroGrads } from './grad-ops.ts';
import { IntervalMeter, MetricsWriter, formatRecord, readRecords, type LogRecord, type StepStats } from './metrics.ts';
import { writePlots } from './plots.ts';
import { Progress } from './progress.ts';
import { Rng } from './rng.ts';
import type { Schedule } from './schedule.ts';
import type { Batch, DataStream, GradOps, Json, Optimizer, TensorFileIO, TrainableModel } from './types.ts';

export interface SkippedStep { step: number; reason: string; sampleIds: string[] }

export interface TrainerOptions<B extends Batch> {
  model: TrainableModel<B>;
  /** The parameters that train (applyStage's result); their .grad is what the optimizer reads. */
  trainable: Map<string, Tensor>;
  data: DataStream<B>;
  optimizer: Optimizer;
  schedule: Schedule;
  totalSteps: number;
  seed: number;
  stage?: number;
  gradAccum?: number;
  /** Global-norm clip (0: off). */
  clip?: number;
  maxSkippedSteps?: number;
  gradOps?: GradOps;
  /** Run folder: metrics.jsonl, tensorboard/, plots/, checkpoints/. Without it nothing is written. */
  outDir?: string;
  checkpoint?: {
    io: TensorFileIO;
    /** Save every N steps (0: only at the end). */
    every: number;
    keepLast?: number;
    /** The resolved run configuration, stored in every checkpoint. */
    config: Json;
    onSavePoint?: (p: SavePoint) => void | Promise<void>;
  };
  evaluate?: { every: number; run: (step: number) => Promise<Record<string, number>> };
  logEvery?: number;
  tensorboard?: boolean;
  plots?: boolean;
  progress?: boolean;
  peakFlops?: number;
  flopsPerStep?: (s: { tokens: number; images: number }) => number;
  /** Peak device bytes since the previous call (default: the backend's allocator counters). */
  peakMemory?: () => number | null;
  /** Log lines (default stdout); while a progress bar is shown they go through the bar instead. */
  log?: (line: string) => void;
  warn?: (line: string) => void;
}

export interface TrainResult {
  steps: number;
  history: StepStats[];
  skipped: SkippedStep[];
  records: LogRecord[];
  checkpoint: string | null;
}

interface StoredMetrics { history: StepStats[]; skipped: SkippedStep[] }

export class Trainer<B extends Batch = Batch> {
  /** Optimizer steps taken (including skipped ones). */
  step = 0;
  readonly history: StepStats[] = [];
  readonly skipped: SkippedStep[] = [];
  private readonly o: TrainerOptions<B>;
  private readonly rng: Rng;
  private readonly gradOps: GradOps;
  private readonly gradAccum: number;
  private readonly params: Tensor[];
  private readonly lossScale: Tensor;
  private readonly ckpt: CheckpointManager | null;
  private resumedFrom: number | undefined;

  constructor(o: TrainerOptions<B>) {
    this.o = o;
    this.gradAccum = o.gradAccum ?? 1;
    if (!Number.isInteger(this.gradAccum) || this.gradAccum < 1) throw new TrainingError(`gradAccum must be an integer >= 1, got ${o.gradAccum}`);
    if (!Number.isInteger(o.totalSteps) || o.totalSteps < 1) throw new TrainingError(`totalSteps must be an integer >= 1, got ${o.totalSteps}`);
    if (o.trainable.size === 0) throw new TrainingError('no trainable parameters: stage.train selects nothing');
    this.rng = new Rng(o.seed);
    this.gradOps = o.gradOps ?? nativeGradOps;
    this.params = [...o.trainable.values()];
    const device = this.params[0].device;
    this.lossScale = keep(full([1], 1 / this.gradAccum, { device }));
    this.ckpt = o.outDir && o.checkpoint
      ? new CheckpointManager(join(o.outDir, 'checkpoints'), o.checkpoint.io, { keepLast: o.checkpoint.keepLast, onSavePoint: o.checkpoint.onSavePoint })
      : null;
  }

  private progress: Progress | null = null;

  private warn(line: string): void {
    if (this.progress) this.progress.log(line);
    else (this.o.warn ?? ((l: string) => process.stderr.write(l + '\n')))(line);
  }

  /** Restores weights, optimizer, RNG, data position, step and metrics from a checkpoint directory. */
  async resumeFrom(dir: string): Promise<void> {
    if (!this.o.checkpoint) throw new CheckpointError('resume needs the checkpoint options (the tensor IO)');
    const mgr = this.ckpt ?? new CheckpointManager(dir, this.o.checkpoint.io);
    const c = await mgr.load(dir);
    try {
      if (this.o.stage !== undefined && c.stage !== this.o.stage) {
        throw new CheckpointError(`checkpoint ${dir} is from stage ${c.stage}, this run is stage ${this.o.stage}`);
      }
      const missing = [...this.o.trainable.keys()].filter((n) => !c.weights.has(n));
      if (missing.length) throw new CheckpointError(`checkpoint ${dir} lacks trainable weights: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''}`);
      noGrad(() => {
        for (const [name, p] of this.o.trainable) {
          const src = c.weights.get(name)!;
          if (src.shape.join(',') !== p.shape.join(',') || src.dtype !== p.dtype) {
            throw new CheckpointError(`checkpoint ${dir}: ${name} is ${src.describe()}, the model has ${p.describe()}`);
          }
          p.backend.copyInto(p.handle, src.handle);
        }
      });
      this.o.optimizer.importState(c.optimizer);
      const rng = c.rng as { trainer?: number[] };
      if (!rng?.trainer) throw new CheckpointError(`checkpoint ${dir} has no trainer RNG state`);
      this.rng.restore(rng.trainer);
      this.o.data.restore(c.data);
      this.step = c.step;
      const m = c.metrics as unknown as StoredMetrics;
      this.history.splice(0, this.history.length, ...(m.history ?? []));
      this.skipped.splice(0, this.skipped.length, ...(m.skipped ?? []));
      this.resumedFrom = c.step;
    } finally {
      for (const t of c.weights.values()) t.dispose();
      for (const t of c.optimizer.tensors.values()) t.dispose(); // importState copied what it keeps
    }
  }

  /** Saves a checkpoint of the current state now; returns its directory. */
  async save(): Promise<string> {
    if (!this.ckpt || !this.o.checkpoint) throw new CheckpointError('saving needs outDir and the checkpoint options');
    const opt = this.o.optimizer.exportState();
    return this.ckpt.save({
      step: this.step, stage: this.o.stage ?? 0, config: this.o.checkpoint.config, weights: this.o.trainable,
      optimizer: opt, rng: { trainer: this.rng.state() }, data: this.o.data.position(), skippedSteps: this.skipped.length,
      metrics: { history: this.history, skipped: this.skipped } as unknown as Json,
    });
  }

  /** One optimizer step over gradAccum micro-batches. */
  async trainStep(): Promise<StepStats> {
    const step = this.step + 1;
    const lr = this.o.schedule(this.step);
    const t0 = performance.now();
    zeroGrads(this.params);
    let bad = null as string | null;
    let lossSum = 0, tokens = 0, images = 0, counted = 0, correct = 0, hasCorrect = true;
    const ids: string[] = [];
    for (let micro = 0; micro < this.gradAccum; micro++) {
      const batch = await this.o.data.next();
      const seed = this.rng.nextSeed();
      try {
        ids.push(...batch.sampleIds);
        tokens += batch.tokens;
        images += batch.images;
        if (bad) continue;
        scope(() => {
          const out = this.o.model.forward(batch, { step, micro, seed, training: true });
          const l = out.loss.item();
          counted += out.counted;
          if (out.correct === undefined) hasCorrect = false; else correct += out.correct;
          if (!Number.isFinite(l)) { bad = `loss is ${l} in micro-batch ${micro}`; clearTape(); return; }
          lossSum += l;
          backward(out.loss, this.lossScale);
        });
      } finally {
        batch.dispose?.();
      }
    }
    let gradNorm = NaN;
    const grads = this.params.flatMap((p) => (p.grad ? [p.grad] : []));
    if (!bad) {
      gradNorm = clipGlobalNorm(this.gradOps, grads, this.o.clip ?? 0);
      if (!Number.isFinite(gradNorm)) bad = `gradient norm is ${gradNorm}`;
    }
    if (bad) {
      zeroGrads(this.params);
      const s: SkippedStep = { step, reason: bad, sampleIds: ids };
      this.skipped.push(s);
      this.warn(`step ${step} skipped (${bad}); samples: ${ids.join(', ')}`);
      const max = this.o.maxSkippedSteps ?? 10;
      if (this.skipped.length > max) {
        this.step = step;
        throw new TrainingError(`stopping at step ${step}: ${this.skipped.length} non-finite steps exceed training.max_skipped_steps=${max} ` +
          `(last: ${bad}; samples ${ids.join(', ')})`);
      }
    } else {
      noGrad(() => this.o.optimizer.step(lr));
      zeroGrads(this.params);
    }
    this.step = step;
    const stats: StepStats = {
      step, loss: bad ? NaN : lossSum / this.gradAccum, gradNorm, lr, ms: performance.now() - t0, tokens, images, counted,
      skipped: bad !== null,
    };
    if (hasCorrect) stats.correct = correct;
    if (this.o.flopsPerStep) stats.flops = this.o.flopsPerStep({ tokens, images });
    this.history.push(stats);
    return stats;
  }

  private defaultPeakMemory(): number | null {
    const be = this.params[0].backend;
    const dev = this.params[0].device;
    try {
      const peak = be.memory(dev).peakBytes;
      be.resetPeakMemory(dev);
      return peak;
    } catch { return null; }
  }

  /** Refuses to write into a run folder that holds checkpoints this run did not start from. */
  private checkFolder(): void {
    if (!this.ckpt) return;
    const newer = this.ckpt.list().filter((c) => c.step > this.step);
    if (newer.length) {
      throw new CheckpointError(`${this.ckpt.root} already holds ${newer.map((c) => `ckpt-${c.step}`).join(', ')}, newer than ` +
        `this run's starting step ${this.step}; resume with --resume auto, or use another run.out_dir`);
    }
  }

  /** Trains until totalSteps, with logging, evaluation, checkpoints and plots. */
  async run(): Promise<TrainResult> {
    const o = this.o;
    this.checkFolder();
    const logEvery = o.logEvery ?? 10;
    const writer = o.outDir ? new MetricsWriter(o.outDir, { tensorboard: o.tensorboard ?? true, resumeStep: this.resumedFrom }) : null;
    const meter = new IntervalMeter(o.peakFlops);
    const progress = o.progress ? new Progress({ total: o.totalSteps, start: this.step }) : null;
    this.progress = progress;
    // With a bar on screen, lines go through it (so a redraw cannot overwrite them); otherwise to the caller's log.
    const log = (line: string) => (progress ? progress.log(line) : o.log ? o.log(line) : process.stdout.write(line + '\n'));
    const records: LogRecord[] = [];
    let lastCheckpoint: string | null = null;
    let evalMetrics: Record<string, number> | undefined;
    const emit = () => {
      const r = meter.flush(o.peakMemory ? o.peakMemory() : this.defaultPeakMemory(), evalMetrics);
      evalMetrics = undefined;
      if (!r) return;
      records.push(r);
      writer?.write(r);
      log(formatRecord(r, o.totalSteps));
    };
    try {
      while (this.step < o.totalSteps) {
        const s = await this.trainStep();
        meter.add(s);
        progress?.update(this.step, Number.isFinite(s.loss) ? `loss ${s.loss.toFixed(4)}` : 'skipped');
        const last = this.step === o.totalSteps;
        if (o.evaluate && ((o.evaluate.every > 0 && this.step % o.evaluate.every === 0) || last)) {
          evalMetrics = await noGrad(() => o.evaluate!.run(this.step));
        }
        if (this.step % logEvery === 0 || last || evalMetrics) emit();
        if (this.ckpt && ((o.checkpoint!.every > 0 && this.step % o.checkpoint!.every === 0) || last)) {
          lastCheckpoint = await this.save();
          log(`saved ${lastCheckpoint}`);
        }
      }
    } finally {
      emit();
      progress?.stop();
      this.progress = null;
      writer?.close();
    }
    if (o.outDir && (o.plots ?? true) && writer) {
      await writePlots(readRecords(writer.jsonlPath), join(o.outDir, 'plots'));
    }
    return { steps: this.step, history: this.history, skipped: this.skipped, records, checkpoint: lastCheckpoint };
  }

  /** Releases the trainer's own tensors (not the model's). */
  dispose(): void {
    this.lossScale.dispose();
    this.o.optimizer.dispose?.();
  }
}
