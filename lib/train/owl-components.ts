// The real pieces behind the trainer's interfaces: MplugOwl as the TrainableModel, lib/data's DataLoader as the
// DataStream, AdamW as the Optimizer, safetensors as the tensor IO, plus evaluation and the final exports.
import { basename, join, resolve } from 'node:path';
import { DataFormatError, DataLoader, JsonlDataset, describeProblems, llamaTokenizer, loadTokenizer, rebasedPosition, type Batch as DataBatch, type LoaderPosition, type Tokenizer } from '../data/index.ts';
import {
  MplugOwl, initLora, initParams, parseAdapterConfig, parseOwlConfig, type AdapterConfig, type OwlBatch, type OwlConfig,
} from '../model/index.ts';
import { RUNTIME_SIZE } from '../model/io/dtypes.ts';
import { loadAdapter, loadCheckpoint, loadSafetensors, saveAdapter, saveCheckpoint, saveSafetensors, expectedKeys, tokenizerMismatch } from '../model/io/index.ts';
import { AdamW, argmaxRows, keep, readLater, scope, tensor, type QueuedRead, type Tensor, type WorkingCopies } from '../tensor/index.ts';
import type { OwletConfig } from './config-schema.ts';
import { resolveDevice, type ResolveDeviceOptions } from './device.ts';
import { CheckpointError, ConfigError } from './errors.ts';
import { officialGroupOf } from './param-groups.ts';
import { computeDtype, place, storageDtype, type FloatDType, type PrecisionOptions } from './precision.ts';
import type { Components } from './components.ts';
import type { OwlSizes } from './model-sizes.ts';
import { readCount, type Batch, type Collectives, type DataStream, type DeferredCount, type MicroBatchContext, type ForwardOutput, type Json, type LoraSpec,
  type Optimizer, type OptimizerState, type DecayGroup, type TensorFileIO, type TrainableModel } from './types.ts';

/** A data batch as the trainer sees it, with the model's view attached. */
export interface OwlTrainBatch extends Batch {
  /** The loader's batch (absent for a batch made elsewhere, e.g. read from a file). */
  readonly data?: DataBatch;
  readonly owl: OwlBatch;
}

/** The model's view of a data batch: ids and masks stay on the host (the splice plan and the labels are computed
 *  there; the model uploads the index tensors it needs), the pixels go to `device` as one upload, in `pixelDtype`:
 *  bf16 for a model that computes in bf16 (rounded on the host as the device's cast rounds them, to nearest even: the
 *  same bits, half the bytes to move: 4.8 instead of 9.6 MB for 16 images at 224). */
export function owlBatch(b: DataBatch, device = 'cpu', pixelDtype: 'f32' | 'bf16' = 'f32'): OwlBatch {
  const R = b.resolution, n = b.pixelValues ? b.pixelValues.length / (3 * R * R) : 0;
  return {
    inputIds: b.inputIds, batchSize: b.batchSize, seqLen: b.maxLength + 1, numImages: b.numImages,
    nonPaddingMask: b.nonPaddingMask, nonMediaMask: b.nonMediaMask, promptMask: b.promptMask,
    pixelValues: b.pixelValues && n > 0 ? tensor(b.pixelValues, [n, 3, R, R], { device, dtype: pixelDtype }) : null,
    sampleIds: b.sampleIds,
  };
}

/** A data batch as the trainer's micro-batch, its pixels on `device` in `pixelDtype` (owlBatch). */
export function trainBatch(b: DataBatch, device = 'cpu', pixelDtype: 'f32' | 'bf16' = 'f32'): OwlTrainBatch {
  const owl = owlBatch(b, device, pixelDtype);
  return {
    data: b, owl, sampleIds: b.sampleIds, tokens: b.tokenCount, images: b.pixelValues ? owl.pixelValues?.shape[0] ?? 0 : 0,
    dispose: () => owl.pixelValues?.dispose(),
  };
}

/** MplugOwl behind the trainer's model interface. */
export class OwlTrainable implements TrainableModel<OwlTrainBatch> {
  constructor(readonly owl: MplugOwl, private readonly seed: number,
    /** Recompute each LLM layer's activations in the backward (config model.gradient_checkpointing). */
    readonly recompute = false) {}
  parameters(): Map<string, Tensor> { return this.owl.params; }
  groupOf(name: string): string { return officialGroupOf(name); }
  useWorkingCopies(copies: WorkingCopies | null): void { this.owl.workingCopies = copies; }
  addLora(o: LoraSpec): void {
    const a = parseAdapterConfig({ r: o.r, lora_alpha: o.alpha, lora_dropout: o.dropout, target_modules: o.targets });
    const device = this.owl.device, fresh = new Map<string, Tensor>();
    initLora(this.owl.config, a, fresh, this.seed + 1);
    // LoRA trains (that is why it is added): fp32 masters on the model's device.
    for (const [k, t] of fresh) {
      t.name = k;
      this.owl.params.set(k, place(t, device, 'f32'));
    }
    this.owl.adapter = a;
  }
  /** Where the weights live and in which dtypes (a log line at the start of a run). */
  describe(): string {
    const by = new Map<string, { n: number; bytes: number }>();
    for (const t of this.owl.params.values()) {
      const k = `${t.requiresGrad ? 'trainable' : 'frozen'} ${t.dtype}`;
      const e = by.get(k) ?? { n: 0, bytes: 0 };
      e.n++;
      e.bytes += t.numel * RUNTIME_SIZE[t.dtype];
      by.set(k, e);
    }
    const parts = [...by].map(([k, e]) => `${k} ${e.n} tensors ${(e.bytes / 2 ** 30).toFixed(2)} GiB`);
    return `model on ${this.owl.device}, computing in ${this.owl.computeDtype ?? 'f32'}: ${parts.join(', ')}`;
  }
  forward(b: OwlTrainBatch, ctx: MicroBatchContext): ForwardOutput {
    this.owl.rngState = ctx.seed >>> 0;
    const r = this.owl.forward(b.owl, { training: ctx.training, logits: 'counted', recompute: this.recompute });
    const correct = countCorrect(r.logits, b.owl);
    r.logits.dispose(); // backward reads the loss's own saved gradient, not the logits: free them before it
    return { loss: r.loss, counted: r.countedTokens, correct };
  }
}

/** Targets whose argmax logit is the label (logits are the counted rows, in order). The argmax runs where the
 *  logits are, so only one id per row comes back to the host, not the logits; and it comes back when the trainer
 *  reads the count, after it has queued the backward (reading it here would make the host wait for the forward). */
function countCorrect(logits: Tensor, b: OwlBatch): number | DeferredCount {
  const rows = logits.shape[0];
  const labels: number[] = [];
  const T = b.seqLen;
  for (let s = 0; s < b.batchSize; s++) {
    for (let i = 0; i < T - 1; i++) {
      const m = s * (T - 1) + i;
      if (b.nonPaddingMask[m] * b.nonMediaMask[m] * b.promptMask[m] === 1) labels.push(b.inputIds[s * T + i + 1]);
    }
  }
  if (labels.length !== rows) return 0;
  let ids: Tensor | null = keep(argmaxRows(logits));
  let queued: QueuedRead | null = null;
  const dispose = () => { ids?.dispose(); ids = null; queued?.drop(); queued = null; };
  const prefetch = () => {
    if (!ids || queued) return;
    queued = readLater([ids]);
    ids.dispose();
    ids = null;
  };
  const read = () => {
    if (!ids && !queued) throw new Error('countCorrect: the count was already read');
    const best = (queued ? queued.take()[0] : ids!.data<'i32'>()) as Int32Array;
    queued = null;
    dispose();
    let correct = 0;
    for (let r = 0; r < rows; r++) if (best[r] === labels[r]) correct++;
    return correct;
  };
  return { read, dispose, prefetch };
}

/** Where a config trains and in which dtype it computes (bf16 only on CUDA: see precision.ts). */
export function placementFor(config: OwletConfig, o: ResolveDeviceOptions = {}): { device: string; dtype: FloatDType } {
  const device = resolveDevice(config.run.device, o);
  return { device, dtype: computeDtype(device, config.model.dtype) };
}

/**
 * The model a config describes: sizes, then weights from model.weights or a seeded fresh initialisation, placed on
 * run.device with the precision plan of precision.ts (trainable groups fp32 masters, frozen ones in model.dtype).
 */
export function buildModel(config: OwletConfig, sizes: OwlSizes, o: ResolveDeviceOptions = {}): MplugOwl {
  const { device, dtype } = placementFor(config, o);
  const prec: PrecisionOptions = { train: config.stage.train, dtype };
  const c = parseOwlConfig(sizes);
  const params = config.model.weights
    ? loadPlaced(config.model.weights, expectedKeys(c), device, prec)
    : initParams(c, { seed: config.run.seed, queryInit: config.model.query_init, place: (t) => place(t, device, storageDtype(t.name!, prec)) });
  let adapter: AdapterConfig | null = null;
  try {
    if (config.model.adapter) {
      const a = loadAdapter(config.model.adapter, { dtype: 'f32', device, model: c });
      for (const [k, t] of a.tensors) params.set(k, place(t, device, storageDtype(k, prec)));
      adapter = a.config;
    }
  } catch (e) {
    for (const t of params.values()) t.dispose();
    throw e;
  }
  if (config.model.abstractor_dropout !== undefined) c.abstractor.attentionProbsDropoutProb = config.model.abstractor_dropout;
  for (const [k, t] of params) t.name = k;
  const owl = new MplugOwl(c, params, adapter);
  if (dtype !== 'f32') owl.computeDtype = dtype;
  return owl;
}

/**
 * A checkpoint read straight into the precision plan: one pass per storage dtype (each reads only its tensors,
 * converted as they are uploaded), so a 7B model is never held in fp32 first. Parameters keep the expected order.
 */
export function loadPlaced(path: string, expected: Map<string, number[]>, device: string, prec: PrecisionOptions): Map<string, Tensor> {
  const dtypes = [...new Set<FloatDType>(['f32', prec.dtype])];
  if (dtypes.length === 1) return loadCheckpoint(path, { dtype: dtypes[0], device, expected });
  const parts: Map<string, Tensor>[] = [];
  try {
    for (const dt of dtypes) {
      const mine = (n: string) => storageDtype(n, prec) === dt;
      parts.push(loadCheckpoint(path, { dtype: dt, device, filter: mine, expected: new Map([...expected].filter(([n]) => mine(n))) }));
    }
  } catch (e) {
    for (const p of parts) for (const t of p.values()) t.dispose();
    throw e;
  }
  const all = new Map(parts.flatMap((p) => [...p]));
  const ordered = new Map<string, Tensor>();
  for (const k of expected.keys()) if (all.has(k)) ordered.set(k, all.get(k)!);
  for (const [k, t] of all) if (!ordered.has(k)) ordered.set(k, t);
  return ordered;
}

/** lib/data's loader as the trainer's resumable stream (restore() rebuilds the loader at the saved position). */
export class OwlDataStream implements DataStream<OwlTrainBatch> {
  private loader: DataLoader;
  readonly microBatchesPerEpoch: number;
  constructor(private readonly dataset: JsonlDataset, private readonly opts: ConstructorParameters<typeof DataLoader>[1],
    /** Where the batches' pixels go (the model's device). */
    private readonly device = 'cpu',
    /** What the data is, for messages ("the eval data (a.jsonl)"). */
    private readonly label = 'the data',
    /** The pixels' dtype on the device (bf16 for a model that computes in bf16: owlBatch). */
    private readonly pixelDtype: 'f32' | 'bf16' = 'f32') {
    this.loader = new DataLoader(dataset, opts);
    this.microBatchesPerEpoch = Math.floor(this.loader.stream.perRank / opts.batchSize);
  }
  async next(): Promise<OwlTrainBatch> {
    let b = await this.read();
    if (!b) { // a finite (eval) stream wraps around
      this.restore(null);
      b = await this.read();
      if (!b) throw new DataFormatError(`${this.label} holds no usable sample`);
    }
    return trainBatch(b, this.device, this.pixelDtype);
  }
  // The first 20 skipped samples are named one by one; after that a count whenever it has doubled.
  private reported = 0;
  private countAt = 40;
  takeWarnings(): string[] {
    const st = this.loader.stats, lines: string[] = [];
    if (st.skipped < this.reported) { this.reported = 0; this.countAt = 40; } // a loader rebuilt by restore() counts anew
    const named = Math.min(st.skipped, st.problems.length, 20);
    for (let i = this.reported; i < named; i++) lines.push(`${this.label}: skipped ${describeProblems([st.problems[i]], 1)}`);
    if (st.skipped >= this.countAt) {
      lines.push(`${this.label}: ${st.skipped} samples skipped so far (on_corrupt: skip)`);
      while (this.countAt <= st.skipped) this.countAt *= 2;
    }
    this.reported = st.skipped;
    return lines;
  }

  private async read(): Promise<DataBatch | null> {
    try {
      return await this.loader.next();
    } catch (e) {
      if (e instanceof DataFormatError && !e.message.startsWith(this.label)) throw new DataFormatError(`${this.label}: ${e.message}`);
      throw e;
    }
  }
  position(): Json { return this.loader.position() as unknown as Json; }
  restore(p: Json): void {
    this.loader.close();
    this.loader = new DataLoader(this.dataset, { ...this.opts, position: (p ?? undefined) as LoaderPosition | undefined });
  }
  /** Every rank's saved position: this rank's own when the world size is unchanged (exact), else the global stream
   *  position they add up to, from which this rank's interleaved stream restarts. */
  restoreFrom(positions: Json[], rank: number, worldSize: number): void {
    const ps = positions as unknown as LoaderPosition[];
    const mine = ps[rank];
    if (ps.length === worldSize && mine && mine.worldSize === worldSize && mine.rank === rank && mine.chunk === this.opts.chunk) {
      this.restore(mine as unknown as Json);
      return;
    }
    if (this.opts.chunk === undefined) throw new CheckpointError(`the data positions were saved by ${ps.length} rank(s); an evaluation stream cannot continue on ${worldSize}`);
    this.restore(rebasedPosition(ps, rank, worldSize, this.opts.chunk) as unknown as Json);
  }
  close(): void { this.loader.close(); }
  get stats() { return this.loader.stats; }
  /** "data: a.jsonl 100 × 200 = 20000 (10.0%), …": a weight multiplies a file's records, so a share is easy to misjudge
   *  from the weights alone (a 100-record file at weight 1 beside 20000 at weight 5 is 0.1% of the samples). */
  describe(): string {
    const bad = this.dataset.problems;
    return this.shares() + (bad.length ? `; ${bad.length} malformed line(s) left out (first: ${describeProblems(bad, 1)})` : '');
  }
  private shares(): string {
    const counts = this.dataset.sources.map((s) => Math.round((s.spec.weight ?? 1) * s.records.length));
    const total = counts.reduce((a, b) => a + b, 0) || 1;
    return `data: ${this.dataset.sources.map((s, i) => `${basename(s.spec.path)} ${s.records.length} × ${s.spec.weight ?? 1} = ${counts[i]} (${(100 * counts[i] / total).toFixed(1)}%)`).join(', ')} per epoch`;
  }
}

export function tokenizerFor(config: OwletConfig): Tokenizer {
  return config.data.tokenizer ? loadTokenizer(config.data.tokenizer) : llamaTokenizer();
}

export function createDataStream(config: OwletConfig, split: 'train' | 'eval', model: OwlTrainable, o: { rank?: number; worldSize?: number } = {}): OwlDataStream {
  const d = config.data;
  const files = split === 'train' ? d.train : d.eval;
  const ds = JsonlDataset.load(files.map((f) => ({ path: f.path, weight: f.weight, imageRoot: d.images_dir ? resolve(d.images_dir) : undefined })),
    { onError: d.on_corrupt });
  const train = split === 'train';
  const tokenizer = tokenizerFor(config);
  checkDataFitsModel(config, ds, tokenizer, model.owl.config);
  return new OwlDataStream(ds, {
    batchSize: d.micro_batch, resolution: d.image.size, maxLength: d.max_length, captionPrompt: d.caption_prompt, mediaTokenLength: model.owl.config.mediaTokenLength,
    tokenizer, mode: train && d.image.train_transform === 'random-resized-crop' ? 'train' : 'eval',
    augment: { scale: d.image.crop_scale, flipP: d.image.hflip },
    shuffle: train ? d.shuffle : false, seed: config.run.seed, onError: d.on_corrupt, epochs: train ? Infinity : 1,
    // Training interleaves the ranks' micro-batches (W ranks read what one rank accumulating W× reads); evaluation
    // gives each rank a block of the eval set.
    rank: o.rank, worldSize: o.worldSize, chunk: train ? d.micro_batch : undefined, workers: train ? d.workers : 0,
  }, model.owl.device, `the ${split} data (${files.map((f) => basename(f.path)).join(', ')})`,
  model.owl.computeDtype === 'bf16' ? 'bf16' : 'f32');
}

/** What the model's shapes fix about the data: the image size its position embeddings were made for (when the data
 *  has images), and a tokenizer whose every id the embedding table holds. Both used to fail deep inside a step (a
 *  slice or gatherRows error) or, for a smaller image size, train on the wrong positions without a word. */
export function checkDataFitsModel(config: OwletConfig, ds: JsonlDataset, tok: Tokenizer, model: Pick<OwlConfig, 'vision' | 'text'>): void {
  const size = config.data.image.size, want = model.vision.imageSize;
  if (size !== want && ds.sources.some((s) => s.records.some((r) => r.images.length > 0))) {
    throw new ConfigError(`data.image.size is ${size} but the model's vision_config.image_size is ${want}: the images ` +
      `must be resized to the size the ViT's position embeddings were made for`);
  }
  const misfit = tokenizerMismatch(tok, model as OwlConfig);
  if (misfit) throw new ConfigError(`${misfit}: set data.tokenizer to the model's tokenizer`);
}

/** AdamW behind the trainer's optimizer interface (groups carry their weight decay). */
export class OwlOptimizer implements Optimizer {
  private readonly opt: AdamW;
  private readonly groups: { params: Tensor[]; weightDecay: number }[];
  /** Handles given out by the last exportState (the trainer reads them and does not dispose them). */
  private exported: Tensor[] = [];
  constructor(groups: DecayGroup[], o: OwletConfig['optimizer']) {
    this.opt = new AdamW({ lr: o.lr, betas: o.betas, eps: o.eps, weightDecay: o.weight_decay });
    this.groups = groups.map((g) => ({ params: [...g.params.values()], weightDecay: g.weightDecay }));
  }
  private copies: WorkingCopies | null = null;
  readonly readsLowPrecisionGrads = true;  // the native AdamW reads bf16 gradients as their (exact) f32 values
  step(lr: number, gradScale = 1): void { this.opt.lr = lr; this.opt.step(this.groups, gradScale, this.copies); }
  stepControlled(lr: number, control: Tensor): void { this.opt.lr = lr; this.opt.step(this.groups, control, this.copies); }
  useWorkingCopies(copies: WorkingCopies | null): void { this.copies = copies; }
  undoStep(): void { this.opt.undoStep(); }
  dispose(): void { this.releaseExported(); this.opt.dispose(); }
  exportState(): OptimizerState {
    this.releaseExported();
    const s = this.opt.state();
    const tensors = new Map<string, Tensor>();
    for (const [k, t] of s.m) tensors.set(`m.${k}`, t);
    for (const [k, t] of s.v) tensors.set(`v.${k}`, t);
    this.exported = [...tensors.values()];
    return { meta: { step: s.step, steps: Object.fromEntries(s.steps) }, tensors };
  }
  private releaseExported(): void { for (const t of this.exported) t.dispose(); this.exported = []; }
  importState(st: OptimizerState): void {
    const meta = st.meta as { step: number; steps: Record<string, number> };
    const m = new Map<string, Tensor>(), v = new Map<string, Tensor>();
    for (const [k, t] of st.tensors) (k.startsWith('m.') ? m : v).set(k.slice(2), t);
    this.opt.loadState({ step: meta.step, steps: new Map(Object.entries(meta.steps)), m, v }, this.groups);
  }
}

export const safetensorsIO: TensorFileIO = {
  save: (path, tensors, metadata) => { saveSafetensors(path, tensors, { metadata }); },
  load: (path) => loadSafetensors(path),
};

/**
 * Mean loss and next-token accuracy over `batches` eval micro-batches (0: one pass over the eval set). With several
 * ranks each evaluates ⌈batches / W⌉ micro-batches of its block of the eval set (0: its whole block) and the sums are
 * combined, so every rank returns the same numbers.
 */
export async function evaluateLoss(model: OwlTrainable, data: OwlDataStream, batches: number, dist?: Collectives): Promise<Record<string, number>> {
  const W = dist?.worldSize ?? 1;
  const n = batches ? Math.ceil(batches / W) : Math.max(1, data.microBatchesPerEpoch || 1);
  let loss = 0, counted = 0, correct = 0;
  for (let i = 0; i < n; i++) {
    const b = await data.next();
    scope(() => {
      const out = model.forward(b, { step: 0, micro: i, seed: 0, training: false });
      loss += out.loss.item() * out.counted;
      counted += out.counted;
      correct += readCount(out.correct ?? 0);
    });
    b.dispose?.();
  }
  if (dist && W > 1) [loss, counted, correct] = dist.allReduceNumbers([loss, counted, correct]);
  return { loss: counted ? loss / counted : 0, accuracy: counted ? correct / counted : 0 };
}

/**
 * The final exports: the full model in the official layout (+ config.json) and, with LoRA, a PEFT adapter.
 * The full model is written in the run's compute dtype (model.dtype on CUDA, else f32). Under bf16 the frozen
 * weights are bf16 already (widening them would double the file and add no information) and bf16 is what the
 * released mPLUG-Owl checkpoints hold and what inference on the GPU loads; the trained weights' fp32 masters are
 * rounded once here, and stay fp32 in the run's checkpoints (checkpoints/ckpt-N) for resuming. The adapter is
 * written as held: trained LoRA matrices are fp32 masters (PEFT keeps LoRA in fp32; it is small).
 */
export async function exportOwl(model: OwlTrainable, _config: OwletConfig, dir: string): Promise<void> {
  const owl = model.owl;
  const base = new Map([...owl.params].filter(([k]) => !k.includes('.lora_')));
  saveCheckpoint(dir, base, { config: owl.config, dtype: owl.computeDtype ?? 'f32' });
  if (owl.adapter) {
    const lora = new Map([...owl.params].filter(([k]) => k.includes('.lora_')));
    // Its base is this export (stage 2 trains the queries and the abstractor too): AutoPeftModel finds it there.
    saveAdapter(join(dir, 'adapter'), lora, { ...owl.adapter, baseModelNameOrPath: resolve(dir) });
  }
}

/** Everything trainStage() needs, wired to the real pieces; rank and worldSize pick this process's data shard. */
export function owlComponents(o: { rank?: number; worldSize?: number } = {}): Components<OwlTrainBatch> {
  return {
    createModel: async (config, sizes) => new OwlTrainable(buildModel(config, sizes), config.run.seed, config.model.gradient_checkpointing),
    createData: async (config, split, model, shard) => createDataStream(config, split, model as OwlTrainable, shard ?? o),
    createOptimizer: (groups, opt) => new OwlOptimizer(groups, opt),
    tensorIO: safetensorsIO,
    evaluate: (model, data, batches, dist) => evaluateLoss(model as OwlTrainable, data as OwlDataStream, batches, dist),
    exportFinal: (model, config, dir) => exportOwl(model as OwlTrainable, config, dir),
  };
}
