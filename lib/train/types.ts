// The small interfaces the trainer is written against. The real pieces (lib/model's MplugOwl, lib/data's loader,
// lib/tensor/ops/optim's AdamW, lib/model/io's safetensors) plug in through these; the tests use tiny fakes.
import type { BackwardOptions, Tensor, WorkingCopies } from '../tensor/index.ts';

/** JSON-serialisable values (checkpoint state, data positions, optimizer metadata). */
export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** What the trainer needs to know about one micro-batch; the rest is the model's business. */
export interface Batch {
  /** Stable ids of the samples (reported when a step is skipped). */
  readonly sampleIds: readonly string[];
  /** Input tokens in the micro-batch (tokens/s). */
  readonly tokens: number;
  /** Images in the micro-batch (images/s). */
  readonly images: number;
  /** Releases the batch's tensors (called once the micro-batch is done). */
  dispose?(): void;
}

export interface MicroBatchContext {
  /** 1-based optimizer step this micro-batch belongs to. */
  readonly step: number;
  /** 0-based micro-batch index inside the step. */
  readonly micro: number;
  /** Seed for this micro-batch's dropout masks, drawn from the trainer's RNG (so a resumed run draws the same). */
  readonly seed: number;
  readonly training: boolean;
}

export interface ForwardOutput {
  /** One-element loss tensor, recorded on the tape (mean over the micro-batch's counted targets). */
  loss: Tensor;
  /** Target tokens that counted in the loss. */
  counted: number;
  /** Of those, how many the argmax predicted correctly (optional: accuracy plots); deferred when counting it means
   *  reading from the device (the trainer reads it after queueing the backward). */
  correct?: number | DeferredCount;
  logits?: Tensor;
}

/** A count still on the device: read() waits for it (once); dispose() drops it unread. prefetch() queues its copy to
 *  the host now (readLater), so a read() after more work was queued waits for the count only, not for that work. */
export interface DeferredCount {
  read(): number;
  dispose(): void;
  prefetch?(): void;
}

/** A ForwardOutput's correct count, read now. */
export function readCount(c: number | DeferredCount): number {
  return typeof c === 'number' ? c : c.read();
}

export interface LoraSpec { r: number; alpha: number; dropout: number; targets: string[] }

export interface TrainableModel<B extends Batch = Batch> {
  /** Every parameter by its official checkpoint name. */
  parameters(): Map<string, Tensor>;
  /** Parameter-group tag of a name (vision, queries, abstractor, llm, lora); defaults to officialGroupOf. */
  groupOf?(name: string): string;
  /** Adds LoRA adapters (new parameters appear in parameters()); needed when a stage trains `lora`. */
  addLora?(opts: LoraSpec): void;
  forward(batch: B, ctx: MicroBatchContext): ForwardOutput;
  /** Optional: one line on where the weights live and in which dtypes (logged when a run starts). */
  describe?(): string;
  /** Optional: read trained weights through these working copies (null: cast them at each forward again). The
   *  trainer gives the same store to the optimizer, which keeps the copies equal to the weights. */
  useWorkingCopies?(copies: WorkingCopies | null): void;
}

/** An endless, resumable stream of micro-batches. */
export interface DataStream<B extends Batch = Batch> {
  next(): Promise<B>;
  /** Where the stream stands (JSON); restore(position()) continues with the same next batch. */
  position(): Json;
  restore(position: Json): void;
  /** Micro-batches per epoch, when known (to turn epochs into steps). */
  readonly microBatchesPerEpoch?: number;
  /** Stops any work prepared ahead (loader threads, prefetch). */
  close?(): void;
  /**
   * Continues from the positions every rank of a run saved (rank order), possibly a run with another world size:
   * the stream maps them onto its own rank and world. Without it, a run resumes only with the world size it saved.
   */
  restoreFrom?(positions: Json[], rank: number, worldSize: number): void;
  /** What the stream mixes, for a log line at the start of a run (each file's share of an epoch). */
  describe?(): string;
  /** Lines about samples it left out since the last call (unreadable images, samples too long…): the trainer
   *  prints them, so a skipped sample is never silent. */
  takeWarnings?(): string[];
}

export interface OptimizerState { meta: Json; tensors: Map<string, Tensor> }

/** A parameter group: the tensors it updates and their decoupled weight decay. */
export interface DecayGroup { name: string; params: Map<string, Tensor>; weightDecay: number }

export interface Optimizer {
  /** Updates every parameter from its .grad times gradScale (gradient clipping's coefficient, 1 when the norm is
   *  within the limit) with this learning rate; a parameter whose .grad is null is left alone, moments included
   *  (PyTorch's rule). */
  step(lr: number, gradScale?: number): void;
  /** Optional: step() with the gradient scale and whether to update at all in a control block on the device
   *  (GradOps.stepControl), so nothing waits for the device; undoStep() after a block that said skip. */
  stepControlled?(lr: number, control: Tensor): void;
  undoStep?(): void;
  /** Optional: rewrite these working copies of the parameters in every step (null: none). */
  useWorkingCopies?(copies: WorkingCopies | null): void;
  /** True when step() reads a .grad held in the compute dtype (an fp32 parameter's bf16 gradient) as the same values:
   *  the trainer then lets the backward keep such gradients (BackwardOptions.lowPrecisionLeafGrads). */
  readonly readsLowPrecisionGrads?: boolean;
  /**
   * Moments and step count, to be saved; tensor names must be unique (e.g. `m.<param>`, `v.<param>`). The tensors may
   * be the optimizer's live state: the caller reads them and does not dispose them.
   */
  exportState(): OptimizerState;
  /** Copies the values in; the caller disposes the given tensors afterwards. */
  importState(state: OptimizerState): void;
  /** Releases the optimizer's state. */
  dispose?(): void;
}

/** Gradient-wide reductions, native in production (backend.sumSquares / scaleInplace). */
export interface GradOps {
  sumSquares(xs: Tensor[]): number;
  scaleInplace(xs: Tensor[], s: number): void;
  /** Optional: the step's control block where the gradients are (backend.stepControl): norm, clipping coefficient
   *  and skip flag, computed without waiting for the device. */
  stepControl?(grads: Tensor[], losses: Tensor[], maxNorm: number): Tensor;
  /** As Optimizer.readsLowPrecisionGrads, for sumSquares and stepControl. */
  readonly readsLowPrecisionGrads?: boolean;
}

/** Tensor file IO (safetensors); injected so checkpoints do not depend on which writer is built. */
export interface TensorFileIO {
  save(path: string, tensors: Map<string, Tensor>, metadata?: Record<string, string>): void | Promise<void>;
  load(path: string): Map<string, Tensor> | Promise<Map<string, Tensor>>;
}

/**
 * What the trainer needs of a process group (lib/dist implements it over gloo; a process alone has a group of one).
 * Every rank calls the same collectives in the same order.
 */
export interface Collectives {
  readonly rank: number;
  readonly worldSize: number;
  /** Averages tensors across ranks, in place (bucketed: one collective per ~25 MB). */
  allReduceMean(xs: Tensor[]): void;
  /** Sums numbers across ranks (double precision). */
  allReduceNumbers(xs: number[]): number[];
  /** Root's tensors into every rank's, in place. */
  broadcast(xs: Tensor[], root?: number): void;
  /** Every rank's string on rank 0 (in rank order); null on the other ranks. */
  gather(value: string): string[] | null;
  /** Rank 0's string on every rank (rank 0 passes it, the others pass nothing). */
  shareFromRoot(value?: string): string;
  /** Gradient all-reduce overlapped with the backward for these parameters (absent or null: allReduceMean after it). */
  gradientReducer?(params: Tensor[]): GradientSync | null;
}

/**
 * The gradient all-reduce overlapped with the backward of a step's last micro-batch (lib/dist/grad-reducer.ts). Every
 * rank reduces the same buckets in the same order.
 */
export interface GradientSync {
  /** For backward() of the last micro-batch: each bucket's all-reduce starts once its gradients are final. */
  backwardOptions(): BackwardOptions;
  /**
   * Reduces what has not started yet and waits for all: every parameter's .grad is then the mean over the ranks.
   * Parameters without a gradient on this rank were reduced as zeros (they now have a .grad); the result says, per
   * parameter, whether it had one here.
   */
  finish(): boolean[];
}
