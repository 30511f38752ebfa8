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
//
// On a GPU, one process: the step loop (run(), trainSteps()) queues step N+1's forward and backward before it reads
// step N's results, which come back through a queued read that waits for step N's update only — the device always has
// the next step's work while the host waits and prepares the step after (stepLoop). Not past a step that a
// checkpoint, an evaluation or the end follows; the numbers are those of steps run one after another.
//
// Data parallelism (`dist`, W ranks): every rank runs gradAccum micro-batches of its own shard, then the step's
// statistics and the gradients are all-reduced (averaged over ranks) before clipping, so every rank applies the same
// update and the weights stay identical. Rank r's micro-batch k is the step's micro-batch k·W + r: it reads that
// micro-batch of the global stream (the data stream interleaves ranks) and uses that seed (all ranks draw all W ×
// gradAccum seeds). So W ranks with accumulation A train like one rank with accumulation W·A, up to the order of
// fp32 sums. Whether a step is skipped is decided from the all-reduced statistics, so all ranks skip together. Rank 0
// alone writes checkpoints (with every rank's data position), metrics, TensorBoard and plots. When the process group
// offers it (dist.gradientReducer), the gradients are all-reduced in buckets during the backward of the last
// micro-batch, each bucket as soon as its gradients are final (lib/dist/grad-reducer.ts), instead of after it.
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { WorkingCopies, backward, full, keep, noGrad, readLater, scope, type QueuedRead, type Tensor } from '../tensor/index.ts';
import { CheckpointManager, type SavePoint } from './checkpoint.ts';
import { CheckpointError, TrainingError } from './errors.ts';
import { clipCoefficient, nativeGradOps, stepControlValues, zeroGrads } from './grad-ops.ts';
import { IntervalMeter, MetricsWriter, formatRecord, readRecords, type LogRecord, type StepStats } from './metrics.ts';
import { writePlots } from './plots.ts';
import { Progress } from './progress.ts';
import { checkRanksAgree } from './rank-agreement.ts';
import { Rng } from './rng.ts';
import type { Schedule } from './schedule.ts';
import { readCount, type Batch, type Collectives, type DataStream, type DeferredCount, type GradOps, type GradientSync, type Json, type Optimizer,
  type TensorFileIO, type TrainableModel } from './types.ts';

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
  /** The process group of a data-parallel run (absent: this process trains alone). */
  dist?: Collectives;
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
  /** Polled after each step (on every rank; with several ranks they stop together, at the first step any asked):
   *  true stops the run there with a checkpoint (Ctrl-C, SIGTERM: lib/cli/commands/train.ts). */
  stopRequested?: () => boolean;
  logEvery?: number;
  tensorboard?: boolean;
  plots?: boolean;
  progress?: boolean;
  peakFlops?: number;
  flopsPerStep?: (s: { tokens: number; images: number }) => number;
  /** Peak device bytes since the previous call (default: the backend's allocator counters). */
  peakMemory?: () => number | null;
  /** Queue each step's forward and backward before reading the previous step's results, where that gives the same
   *  numbers (Trainer.stepLoop). Default: on a device that runs the queued work asynchronously (CUDA), where the
   *  host's time per step then hides behind the device's; on the CPU, whose kernels have finished when they return,
   *  it would only show each step's results one step later. true: wherever it gives the same numbers; false: never.
   *  OWLET_PIPELINE=0 turns it off for every trainer. */
  pipeline?: boolean;
  /** Log lines (default stdout); while a progress bar is shown they go through the bar instead. */
  log?: (line: string) => void;
  warn?: (line: string) => void;
}

export interface TrainResult {
  steps: number;
  /** Stopped by stopRequested before totalSteps (a checkpoint of the last step was saved when saving). */
  interrupted: boolean;
  history: StepStats[];
  skipped: SkippedStep[];
  records: LogRecord[];
  checkpoint: string | null;
}

interface StoredMetrics { history: StepStats[]; skipped: SkippedStep[] }

/** A step between its queueing and its results (Trainer.queueStep, queueUpdate, finishStep). */
interface QueuedStep {
  step: number;
  t0: number;
  /** Host time spent queueing the step (forward, backward, update), without its waits for the device's results. */
  queueMs: number;
  ids: string[];
  tokens: number;
  images: number;
  counted: number;
  /** Known before the update: a micro-batch with no counted token. */
  bad: string | null;
  /** Each micro-batch's loss (and accuracy count), still on the device. */
  pending: { loss: Tensor; correct?: number | DeferredCount }[];
  /** The control block and the losses, queued for reading behind the update (applied steps). */
  results: QueuedRead | null;
  /** The update is queued already, under the device's control block. */
  applied: boolean;
}

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
  /** Writes checkpoints (rank 0 of a data-parallel run; null on the others and without outDir/checkpoint). */
  private readonly ckpt: CheckpointManager | null;
  /** Checkpoints are due (every rank takes part: rank 0 gathers the data positions). */
  private readonly saving: boolean;
  private readonly rank: number;
  private readonly worldSize: number;
  /** The overlapped gradient all-reduce of a data-parallel run (null: allReduceMean after the backward). */
  private readonly gradSync: GradientSync | null;
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
    this.rank = o.dist?.rank ?? 0;
    this.worldSize = o.dist?.worldSize ?? 1;
    this.gradSync = o.dist && this.worldSize > 1 ? o.dist.gradientReducer?.(this.params) ?? null : null;
    this.saving = !!(o.outDir && o.checkpoint);
    this.ckpt = o.outDir && o.checkpoint && this.rank === 0
      ? new CheckpointManager(join(o.outDir, 'checkpoints'), o.checkpoint.io, { keepLast: o.checkpoint.keepLast, onSavePoint: o.checkpoint.onSavePoint })
      : null;
  }

  private progress: Progress | null = null;
  /** The working copies' store: undefined until the first step, null when none is kept. */
  private copies: WorkingCopies | null | undefined = undefined;
  private outDirChecked = false;
  /** When the previous step's results came back (performance.now()): a step queued before then is timed from it. */
  private lastFinished = 0;

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
      // (and the other way round: weights it trained that this model has not — another architecture, e.g. fewer
      // layers — were only found by the optimizer's state, named after an internal call)
      const extra = [...c.weights.keys()].filter((n) => !this.o.trainable.has(n));
      if (extra.length) {
        throw new CheckpointError(`checkpoint ${dir} trained weights this model does not train or does not have (another ` +
          `architecture or fewer trained groups): ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ', …' : ''}`);
      }
      noGrad(() => {
        for (const [name, p] of this.o.trainable) {
          const src = c.weights.get(name)!;
          if (src.shape.join(',') !== p.shape.join(',') || src.dtype !== p.dtype) {
            throw new CheckpointError(`checkpoint ${dir}: ${name} is ${src.describe()}, the model has ${p.describe()}`);
          }
          // The checkpoint is read into host memory; a parameter on a device takes it through one upload.
          const from = src.backend === p.backend ? src : src.to(p.device);
          try { p.backend.copyInto(p.handle, from.handle); } finally { if (from !== src) from.dispose(); }
        }
      });
      this.copies?.clear();  // (copies of the weights before; the next forward makes them again)
      this.o.optimizer.importState(c.optimizer);
      const rng = c.rng as { trainer?: number[] };
      if (!rng?.trainer) throw new CheckpointError(`checkpoint ${dir} has no trainer RNG state`);
      this.rng.restore(rng.trainer);
      this.restoreData(c.data, dir);
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

  /**
   * The data position a checkpoint stores: the stream's own alone; with W ranks `{ world, ranks }`, every rank's
   * position in rank order, so a resumed run continues each rank exactly (same W) or maps them onto its own world.
   */
  private restoreData(saved: Json, dir: string): void {
    const data = this.o.data, W = this.worldSize;
    const ranks = saved && typeof saved === 'object' && !Array.isArray(saved) && Array.isArray(saved.ranks) ? saved.ranks : null;
    const positions = ranks ?? [saved];
    if (positions.length === 1 && W === 1) data.restore(positions[0]);
    else if (data.restoreFrom) data.restoreFrom(positions, this.rank, W);
    else if (positions.length === W) data.restore(positions[this.rank]);
    else {
      throw new CheckpointError(`checkpoint ${dir} was saved by ${positions.length} rank(s) and this run has ${W}: its data stream ` +
        'cannot map positions onto another world size');
    }
  }

  /** Saves a checkpoint of the current state now; returns its directory (null on ranks other than 0, which only
   *  contribute their data position). Every rank of a data-parallel run calls it. */
  async save(): Promise<string | null> {
    if (!this.saving || !this.o.checkpoint) throw new CheckpointError('saving needs outDir and the checkpoint options');
    let data: Json = this.o.data.position();
    if (this.worldSize > 1) {
      const all = this.o.dist!.gather(JSON.stringify(data));
      data = all ? { world: this.worldSize, ranks: all.map((p) => JSON.parse(p) as Json) } : null;
    }
    if (!this.ckpt) return null;
    const opt = this.o.optimizer.exportState();
    return this.ckpt.save({
      step: this.step, stage: this.o.stage ?? 0, config: this.o.checkpoint.config, weights: this.o.trainable,
      optimizer: opt, rng: { trainer: this.rng.state() }, data, skippedSteps: this.skipped.length,
      metrics: { history: this.history, skipped: this.skipped } as unknown as Json,
    });
  }

  /** One optimizer step over gradAccum micro-batches: queued, then its results read (run() and trainSteps() queue the
   *  next step's forward and backward before reading them, where they may). */
  async trainStep(): Promise<StepStats> {
    const q = await this.queueStep(this.step + 1);
    this.queueUpdate(q);
    return this.finishStep(q);
  }

  /**
   * Runs up to `count` steps (never past totalSteps) as run() does, without its logging, checkpoints and evaluations,
   * and returns their statistics. Each step's forward and backward are queued before the previous step's results are
   * read (see run()) where the pipeline option allows it (by default on a GPU) and the step can be (one process, an
   * optimizer and gradient reductions under the device's step control). A step's `ms` is the time since the previous step's results came
   * back: the steps' throughput.
   */
  async trainSteps(count: number): Promise<StepStats[]> {
    if (!Number.isInteger(count) || count < 0) throw new TrainingError(`trainSteps: count must be an integer >= 0, got ${count}`);
    const last = Math.min(this.o.totalSteps, this.step + count), out: StepStats[] = [];
    if (last <= this.step) return out;
    await this.stepLoop((n) => n >= last, async (s) => { out.push(s); return s.step >= last; });
    return out;
  }

  /**
   * The step loop of run() and trainSteps(): step N's forward and backward, then its update, are queued; when step N
   * is not a boundary (`boundary(N)`: a checkpoint, an evaluation or the end follows it, which must see step N's state
   * alone — the data position, the RNG) and its update was queued under the device's own control (no wait for the
   * gradient norm), step N+1's forward and backward are queued too before step N's results (losses, norm, whether it
   * was skipped) are read. Those come back through a queued read (readLater) that waits for step N's update only, so
   * the device has step N+1's work in hand while the host waits, and then while the host queues step N+2: the host's
   * own time per step (JS, N-API, launches) hides behind the device's instead of adding to it at every step start.
   * The numbers are those of steps run one after another, bit for bit: step N+1's forward reads the weights step N's
   * update wrote (the device runs them in order), its seeds and batches are drawn in the same order, and its own
   * update is queued only after step N's results are known (AdamW's step count after a skipped step).
   * `after(stats, queuedAhead)` handles each finished step in order and returns true to stop; when it does while
   * step N+1 is queued, that step is finished first (and handed to `after` too).
   */
  private async stepLoop(boundary: (step: number) => boolean, after: (s: StepStats, queuedAhead: boolean) => Promise<boolean>): Promise<void> {
    let ahead: QueuedStep | null = null;
    let failedAhead: unknown = null;  // step N+1 failed while being queued: thrown once step N is finished
    try {
      while (this.step < this.o.totalSteps) {
        const q: QueuedStep = ahead ?? await this.queueStep(this.step + 1);
        ahead = null;
        this.queueUpdate(q);
        if (q.applied && this.pipelining && q.step < this.o.totalSteps && !boundary(q.step)) {
          try { ahead = await this.queueStep(q.step + 1); } catch (e) { failedAhead = e; }
        }
        const s = this.finishStep(q);
        if (failedAhead !== null) {
          // (step N is handled as if step N+1 were queued — no checkpoint from a state that has drawn step N+1's
          // data and seeds — and step N+1's error is the run's, as it would have been one step later)
          await after(s, true);
          throw failedAhead;
        }
        if (await after(s, ahead !== null) && !ahead) return;
      }
    } finally {
      if (ahead) this.releaseStep(ahead, true);
    }
  }

  /** Whether the step loop may queue a step's forward and backward before reading the previous step's results: in
   *  one process (the ranks of a data-parallel run agree on every step's statistics first), as the pipeline option
   *  says, unless OWLET_PIPELINE=0. Read at each step. */
  private get pipelining(): boolean {
    if (this.worldSize !== 1 || this.gradSync || process.env.OWLET_PIPELINE === '0') return false;
    return this.o.pipeline ?? this.queuesAsync;
  }

  /** Whether the trained weights live where queued work runs asynchronously (a GPU); on the CPU an op's kernels have
   *  finished when it returns. */
  private get queuesAsync(): boolean {
    return this.params[0].backend.backend !== 'cpu';
  }

  /** A step's forward and backward over its gradAccum micro-batches, queued: the losses (and accuracy counts) stay on
   *  the device. */
  private async queueStep(step: number): Promise<QueuedStep> {
    this.attachWorkingCopies();
    const q: QueuedStep = { step, t0: performance.now(), queueMs: 0, ids: [], tokens: 0, images: 0, counted: 0, bad: null,
      pending: [], results: null, applied: false };
    zeroGrads(this.params);
    const W = this.worldSize;
    const seeds = Array.from({ length: this.gradAccum * W }, () => this.rng.nextSeed());
    // Each micro-batch's loss (and accuracy count) stays on the device until every backward is queued: reading it
    // after its forward would make the host wait for the device there, and the device then wait for the host to
    // queue the backward. A non-finite loss is found after the fact; its backward has run, and the step is skipped
    // (gradients zeroed) as before.
    try {
      for (let micro = 0; micro < this.gradAccum; micro++) {
        const batch = await this.o.data.next();
        for (const line of this.o.data.takeWarnings?.() ?? []) this.warn(line);
        const seed = seeds[micro * W + this.rank];
        try {
          q.ids.push(...batch.sampleIds);
          q.tokens += batch.tokens;
          q.images += batch.images;
          scope(() => {
            const out = this.o.model.forward(batch, { step, micro, seed, training: true });
            q.counted += out.counted;
            // The official loss is a mean over the counted tokens: NaN for none, which skips the step here as any
            // non-finite loss does (a loss of 0 would let AdamW's momentum and weight decay move the weights anyway).
            if (out.counted === 0 && !q.bad) q.bad = `no token of micro-batch ${micro} counts in the loss (its samples have no answer to learn)`;
            q.pending.push({ loss: keep(out.loss.share()), correct: out.correct });
            const sync = micro === this.gradAccum - 1 ? this.gradSync?.backwardOptions() : undefined;
            const opts = this.lowPrecisionGrads ? { ...sync, lowPrecisionLeafGrads: true } : sync;
            // A loss that reaches no trained weight (stage 1 trains the vision side, and a micro-batch of text-only
            // samples never reaches it) adds no gradient: its loss counts, its backward — which would throw — is
            // skipped (the overlapped all-reduce then starts every bucket in finish(), as for unused parameters).
            if (out.loss.requiresGrad) backward(out.loss, this.lossScale, opts);
          });
        } finally {
          batch.dispose?.();
        }
      }
    } catch (e) {
      this.releaseStep(q, false);
      throw e;
    }
    q.queueMs = performance.now() - q.t0;
    return q;
  }

  /**
   * One process with a native backend: the norm, clipping's coefficient and whether to skip are computed on the
   * device and the optimizer is queued behind them, then the losses and that control block are queued for reading,
   * so the step's one wait for the device (finishStep) comes after everything it queued — the "no
   * synchronisation inside a step". Otherwise nothing is queued here: finishStep reduces, clips and updates.
   */
  private queueUpdate(q: QueuedStep): void {
    const grads = this.params.flatMap((p) => (p.grad ? [p.grad] : []));
    const opt = this.o.optimizer;
    if (q.bad || this.worldSize !== 1 || this.gradSync || grads.length === 0 || !this.gradOps.stepControl || !opt.stepControlled || !opt.undoStep) return;
    const t0 = performance.now();
    let control: Tensor | null = null;
    try {
      control = this.gradOps.stepControl(grads, q.pending.map((p) => p.loss), this.o.clip ?? 0);
      noGrad(() => opt.stepControlled!(this.o.schedule(q.step - 1), control!));
      zeroGrads(this.params);
      q.results = readLater([control, ...q.pending.map((p) => p.loss)]);
      for (const p of q.pending) if (typeof p.correct === 'object') p.correct.prefetch?.();
      q.applied = true;
    } catch (e) {
      this.releaseStep(q, true);  // (the step will not be finished: its losses, counts and gradients go)
      throw e;
    } finally {
      control?.dispose();
      q.queueMs += performance.now() - t0;
    }
  }

  /** Reads a queued step's results back (waiting for its update only), skips or applies it, records it. */
  private finishStep(q: QueuedStep): StepStats {
    const { step } = q;
    const lr = this.o.schedule(step - 1);
    const W = this.worldSize;
    let bad = q.bad;
    let lossSum = 0, correct = 0, hasCorrect = true;
    let { tokens, images, counted } = q;
    const takeLosses = (losses: number[]) => {
      losses.forEach((l, micro) => {
        if (!Number.isFinite(l) && !bad) bad = `loss is ${l} in micro-batch ${micro}`;
        lossSum += l;
        const c = q.pending[micro].correct;
        if (c === undefined) hasCorrect = false; else correct += readCount(c);
      });
    };
    let gradNorm = NaN, gradScale = 1;
    try {
      if (q.applied) {
        const [control, ...losses] = q.results!.take();
        q.results = null;
        const c = stepControlValues(control as BigInt64Array);
        takeLosses(losses.map((l) => (l as Float32Array)[0]));
        gradNorm = c.norm;
        if (c.skip) {
          this.o.optimizer.undoStep!();
          bad ??= `gradient norm is ${gradNorm}`;
        } else if (bad) {
          throw new TrainingError(`step ${step}: ${bad} but the device's control block did not skip the update (a backend bug)`);
        }
      } else {
        takeLosses(q.pending.map((p) => p.loss.item()));
      }
    } finally {
      this.releaseStep(q, false);
    }
    // Every rank finishes the overlapped reduction, even one whose step went bad (the collectives must match).
    const hadGrad = this.gradSync?.finish();
    if (W > 1) {
      const g = this.reduceStepStats([lossSum, tokens, images, counted, correct, hasCorrect ? 0 : 1], bad, hadGrad);
      [lossSum, tokens, images, counted, correct] = g.sums;
      hasCorrect = g.sums[5] === 0;
      bad = g.bad;
    }
    const grads = this.params.flatMap((p) => (p.grad ? [p.grad] : []));
    if (!bad && !q.applied) {
      if (W > 1 && !this.gradSync) this.o.dist!.allReduceMean(grads);
      // Clipping's coefficient goes to the optimizer, which multiplies each gradient as it reads it (the same numbers
      // as scaling them in place first, without that pass over every gradient).
      gradNorm = Math.sqrt(this.gradOps.sumSquares(grads));
      gradScale = clipCoefficient(gradNorm, this.o.clip ?? 0);
      if (!Number.isFinite(gradNorm)) bad = `gradient norm is ${gradNorm}`;
    }
    if (bad) {
      // (an applied step's gradients were dropped when its update was queued; the parameters may hold the next
      // step's by now)
      if (!q.applied) zeroGrads(this.params);
      const s: SkippedStep = { step, reason: bad, sampleIds: q.ids };
      this.skipped.push(s);
      this.warn(`step ${step} skipped (${bad}); samples: ${q.ids.join(', ')}`);
      const max = this.o.maxSkippedSteps ?? 10;
      if (this.skipped.length > max) {
        this.step = step;
        throw new TrainingError(`stopping at step ${step}: ${this.skipped.length} non-finite steps exceed training.max_skipped_steps=${max} ` +
          `(last: ${bad}; samples ${q.ids.join(', ')})`);
      }
    } else if (!q.applied) {
      noGrad(() => this.o.optimizer.step(lr, gradScale));
      zeroGrads(this.params);
    }
    this.step = step;
    // (from the previous step's results when this step was queued before they came back: the time per step)
    const now = performance.now();
    const ms = now - Math.max(q.t0, this.lastFinished);
    this.lastFinished = now;
    const stats: StepStats = {
      step, loss: bad ? NaN : lossSum / (this.gradAccum * W), gradNorm, lr, ms, tokens, images, counted,
      skipped: bad !== null,
    };
    if (hasCorrect) stats.correct = correct;
    // (on the CPU the kernels run inside the queueing calls: the host's time is the whole step, nothing to tell apart)
    if (q.applied && this.queuesAsync) stats.queueMs = q.queueMs;
    if (this.o.flopsPerStep) stats.flops = this.o.flopsPerStep({ tokens, images });
    this.history.push(stats);
    return stats;
  }

  /** Drops what a queued step still holds on the device: its losses, counts and queued read (and, for a step that
   *  will not be finished, its gradients). */
  private releaseStep(q: QueuedStep, abandoned: boolean): void {
    for (const p of q.pending) {
      p.loss.dispose();
      if (typeof p.correct === 'object') p.correct.dispose();
    }
    q.pending = [];
    q.results?.drop();
    q.results = null;
    if (abandoned) zeroGrads(this.params);
  }

  /**
   * Sums the step's statistics over the ranks, with one flag per rank for a non-finite loss and one per parameter for
   * "has a gradient": a parameter with a gradient on some rank gets zeros where it has none (every rank must reduce
   * the same list); one with a gradient nowhere stays without (the optimizer leaves it alone). `hadGrad`: which
   * parameters had a gradient before the overlapped reduction gave every one of them a (zero) gradient.
   */
  private reduceStepStats(stats: number[], bad: string | null, hadGrad?: boolean[]): { sums: number[]; bad: string | null } {
    const W = this.worldSize, n = stats.length;
    const local = [...stats, ...Array.from({ length: W }, (_, r) => (r === this.rank && bad ? 1 : 0)),
      ...this.params.map((p, i) => ((hadGrad ? hadGrad[i] : p.grad) ? 1 : 0))];
    const g = this.o.dist!.allReduceNumbers(local);
    const badRanks = g.slice(n, n + W).flatMap((v, r) => (v > 0 ? [r] : []));
    if (!bad && !badRanks.length) {
      this.params.forEach((p, i) => {
        const anywhere = g[n + W + i] > 0;
        if (!p.grad && anywhere) p.grad = keep(full([...p.shape], 0, { dtype: p.dtype, device: p.device }));
        else if (p.grad && !anywhere) { p.grad.dispose(); p.grad = null; } // zeros from the overlapped reduction
      });
    }
    const list = (rs: number[]) => `${rs.length > 1 ? 'ranks' : 'rank'} ${rs.join(', ')}`;
    if (bad) bad = `${bad} on rank ${this.rank}`;
    else if (badRanks.length) bad = `non-finite loss on ${list(badRanks)}`;
    return { sums: g.slice(0, n), bad };
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

  /** Refuses to write into a run folder that holds intact checkpoints this run did not start from (it would
   *  overwrite them); damaged newer ones, which nothing can resume from, are moved aside instead. */
  async checkOutDir(): Promise<void> {
    // (once: trainStage checks before writing config.json, and run() need not hash the newer checkpoints again)
    if (!this.ckpt || this.outDirChecked) return;
    const newer = await this.ckpt.newerIntact(this.step, (m) => this.warn(m));
    if (newer.length) {
      const names = newer.map((c) => `ckpt-${c.step}`).join(', ');
      throw new CheckpointError(`${this.ckpt.root} already holds ${names}, newer than this run's starting step ${this.step}: ` +
        `continue from the newest with --resume auto; to start over or go back to an older checkpoint, first move ${names} ` +
        `out of that folder, or use another run.out_dir`);
    }
    this.outDirChecked = true;
  }

  /**
   * The ranks' step counts come from what each one read for itself: training.epochs over its own copy of the data
   * (files that differ between nodes under the same names pass the config comparison), and the checkpoint it resumed.
   * Ranks that disagreed went on into different collectives — one into the last checkpoint's exchange while another
   * began its next step — and gloo aborted a process on the mismatched message sizes (SIGABRT, "op.preamble.length
   * <= op.nbytes"). Every rank stops with the same error instead.
   */
  private checkRanksTakeTheSameSteps(): void {
    checkRanksAgree(this.o.dist!, { 'training steps': this.o.totalSteps, 'resumed at step': this.step,
      'training micro-batches per epoch and rank': this.o.data.microBatchesPerEpoch ?? null },
      'would not take the same steps (does every node have the same data files? the same checkpoints?)');
  }

  /** Trains until totalSteps, with logging, evaluation, checkpoints and plots. */
  async run(): Promise<TrainResult> {
    const o = this.o;
    const main = this.rank === 0; // the rank that writes and reports
    if (this.worldSize > 1) this.checkRanksTakeTheSameSteps();
    if (main) await this.checkOutDir();
    const logEvery = o.logEvery ?? 10;
    const writer = o.outDir && main ? new MetricsWriter(o.outDir, { tensorboard: o.tensorboard ?? true, resumeStep: this.resumedFrom }) : null;
    const meter = new IntervalMeter(o.peakFlops);
    const progress = o.progress && main ? new Progress({ total: o.totalSteps, start: this.step }) : null;
    this.progress = progress;
    // With a bar on screen, lines go through it (so a redraw cannot overwrite them); otherwise to the caller's log.
    const log = (line: string) => (!main ? undefined : progress ? progress.log(line) : o.log ? o.log(line) : process.stdout.write(line + '\n'));
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
    const evalAt = (step: number) => !!o.evaluate && ((o.evaluate.every > 0 && step % o.evaluate.every === 0) || step === o.totalSteps);
    let evalPending = false; // a step's record waits for its evaluation: not written if the evaluation fails
    let interrupted = false;
    const evaluate = async () => { evalMetrics = await noGrad(() => o.evaluate!.run(this.step)); };
    const save = async () => {
      const saved = await this.save();
      if (saved) { lastCheckpoint = saved; log(`saved ${saved}`); }
    };
    const saveAt = (step: number) => this.saving && ((o.checkpoint!.every > 0 && step % o.checkpoint!.every === 0) || step === o.totalSteps);
    // A stop asked while the next step is queued ahead takes effect after that step (its data and seeds are drawn).
    let stopping = false;
    try {
      if (this.resumedFrom !== null) await this.catchUpRecords(writer, meter, logEvery, evalAt, evaluate, emit);
      await this.stepLoop((step) => stopping || saveAt(step) || evalAt(step), async (s, queuedAhead) => {
        meter.add(s);
        progress?.update(this.step, Number.isFinite(s.loss) ? `loss ${s.loss.toFixed(4)}` : 'skipped');
        const last = this.step === o.totalSteps;
        const evalNow = evalAt(this.step);
        // A step's record goes out before the checkpoint that covers it (an interruption in between would lose it
        // for good: a resume keeps the records up to its checkpoint's step) — except at an evaluation, whose record
        // waits for it; the checkpoint comes before the evaluation, which must not cost the steps just trained when
        // it fails (unreadable eval data).
        if ((this.step % logEvery === 0 || last) && !evalNow) emit();
        const saveNow = saveAt(this.step);
        if (saveNow) await save();
        if (evalNow) {
          evalPending = true;
          await evaluate();
          evalPending = false;
          emit();
        }
        if (!last && (stopping || this.stopAsked())) {
          if (queuedAhead) {
            stopping = true;
            return true;
          }
          // A checkpoint of this step unless one was just saved; the steps since the last record stay unrecorded
          // (the resume replays them from the checkpoint's history into the records an uninterrupted run writes).
          if (this.saving && !saveNow) await save();
          interrupted = true;
          log(`stopped at step ${this.step}/${o.totalSteps}`);
          return true;
        }
        return false;
      });
    } finally {
      // (a failed evaluation leaves its step's record unwritten: the resume from the checkpoint that covers the step
      // evaluates it again and writes the record then, instead of keeping one without its evaluation)
      if (!evalPending && !interrupted) emit();
      progress?.stop();
      this.progress = null;
      writer?.close();
      this.releaseWorkingCopies();
    }
    if (o.outDir && (o.plots ?? true) && writer) {
      await writePlots(readRecords(writer.jsonlPath), join(o.outDir, 'plots'));
    }
    return { steps: this.step, interrupted, history: this.history, skipped: this.skipped, records, checkpoint: lastCheckpoint };
  }

  /** Whether the backward may leave the trained weights' gradients in the compute dtype (the bf16 gradients of
   *  their working copies, BackwardOptions.lowPrecisionLeafGrads): in one process, when the optimizer and the
   *  gradient reductions read them and OWLET_LOWP_GRADS is not 0. That skips a cast of every trained weight's
   *  gradient to fp32 and halves what the norm and AdamW read; the numbers are the same bit for bit (bf16 -> f32 is
   *  exact, and a second micro-batch's gradient is summed in fp32 as before). Across ranks the gradients are reduced
   *  in fp32, as the reference's data parallelism does. Read at each step. */
  private get lowPrecisionGrads(): boolean {
    return this.worldSize === 1 && !this.gradSync && process.env.OWLET_LOWP_GRADS !== '0' &&
      this.o.optimizer.readsLowPrecisionGrads === true && this.gradOps.readsLowPrecisionGrads === true;
  }

  /** The store of working copies (working-copies.ts: bf16 copies of the trained weights that AdamW rewrites in its
   *  pass instead of a cast of every weight at each forward), when the model and the optimizer both take one and
   *  OWLET_WORKING_COPIES is not 0. Given at the first step (after the weights were loaded, resumed and broadcast),
   *  emptied by a resume, taken back when a run ends or the trainer is disposed: in between only the optimizer
   *  writes the weights. */
  private attachWorkingCopies(): void {
    if (this.copies !== undefined) return;
    const { model, optimizer } = this.o;
    this.copies = null;
    if (process.env.OWLET_WORKING_COPIES === '0' || !model.useWorkingCopies || !optimizer.useWorkingCopies) return;
    this.copies = new WorkingCopies();
    model.useWorkingCopies(this.copies);
    optimizer.useWorkingCopies(this.copies);
  }

  private releaseWorkingCopies(): void {
    if (this.copies) {
      this.o.model.useWorkingCopies!(null);
      this.o.optimizer.useWorkingCopies!(null);
      this.copies.dispose();
    }
    this.copies = undefined;
  }

  /** Whether to stop after this step: asked on this rank, or (several ranks) on any. */
  private stopAsked(): boolean {
    if (!this.o.stopRequested) return false;
    const here = this.o.stopRequested() ? 1 : 0;
    return (this.worldSize > 1 ? this.o.dist!.allReduceNumbers([here])[0] : here) > 0;
  }

  /**
   * After a resume: the steps since the last written record are replayed into the interval meter, with a record at
   * each logging step among them that has none, so the records cover the same steps as in an uninterrupted run; and
   * when the checkpoint's own step should have a record and has none — the run stopped during the evaluation that
   * follows a checkpoint — the evaluation runs again and the record is written. Every rank takes part (the
   * evaluation's collectives): rank 0, which reads the metrics, decides.
   */
  private async catchUpRecords(writer: MetricsWriter | null, meter: IntervalMeter, logEvery: number,
    evalAt: (step: number) => boolean, evaluate: () => Promise<void>, emit: () => void): Promise<void> {
    const written = writer?.lastStep ?? this.step;
    for (const s of this.history) {
      if (s.step <= written || s.step > this.step) continue;
      meter.add(s);
      if (s.step < this.step && s.step % logEvery === 0) emit(); // (an evaluation of that step is gone for good)
    }
    const due = this.step > 0 && (evalAt(this.step) || this.step % logEvery === 0 || this.step === this.o.totalSteps);
    let missing = this.rank === 0 && due && written < this.step ? 1 : 0;
    if (this.worldSize > 1) [missing] = this.o.dist!.allReduceNumbers([missing]);
    if (!missing) return;
    if (evalAt(this.step)) await evaluate();
    emit();
  }

  /** Releases the trainer's own tensors (not the model's). */
  dispose(): void {
    this.releaseWorkingCopies();
    this.lossScale.dispose();
    this.o.optimizer.dispose?.();
  }
}
