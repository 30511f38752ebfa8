// The real pieces behind the trainer's interfaces: MplugOwl as the TrainableModel, lib/data's DataLoader as the
// DataStream, AdamW as the Optimizer, safetensors as the tensor IO, plus evaluation and the final exports.
import { join, resolve } from 'node:path';
import { DataLoader, JsonlDataset, llamaTokenizer, loadTokenizer, rebasedPosition, type Batch as DataBatch, type LoaderPosition, type Tokenizer } from '../data/index.ts';
import {
  MplugOwl, initLora, initParams, parseAdapterConfig, parseOwlConfig, type AdapterConfig, type OwlBatch,
} from '../model/index.ts';
import { loadAdapter, loadCheckpoint, loadSafetensors, saveAdapter, saveCheckpoint, saveSafetensors, expectedKeys } from '../model/io/index.ts';
import { AdamW, scope, tensor, type Tensor } from '../tensor/index.ts';
import type { OwletConfig } from './config-schema.ts';
import { CheckpointError } from './errors.ts';
import { officialGroupOf } from './param-groups.ts';
import { NotAvailableError } from './errors.ts';
import type { Components } from './components.ts';
import type { OwlSizes } from './model-sizes.ts';
import type { Batch, Collectives, DataStream, MicroBatchContext, ForwardOutput, Json, LoraSpec, Optimizer, OptimizerState, DecayGroup, TensorFileIO, TrainableModel } from './types.ts';

/** A data batch as the trainer sees it, with the model's view attached. */
export interface OwlTrainBatch extends Batch {
  readonly data: DataBatch;
  readonly owl: OwlBatch;
}

export function owlBatch(b: DataBatch): OwlBatch {
  const R = b.resolution, n = b.pixelValues ? b.pixelValues.length / (3 * R * R) : 0;
  return {
    inputIds: b.inputIds, batchSize: b.batchSize, seqLen: b.maxLength + 1, numImages: b.numImages,
    nonPaddingMask: b.nonPaddingMask, nonMediaMask: b.nonMediaMask, promptMask: b.promptMask,
    pixelValues: b.pixelValues && n > 0 ? tensor(b.pixelValues, [n, 3, R, R]) : null, sampleIds: b.sampleIds,
  };
}

function trainBatch(b: DataBatch): OwlTrainBatch {
  const owl = owlBatch(b);
  return {
    data: b, owl, sampleIds: b.sampleIds, tokens: b.tokenCount, images: b.pixelValues ? owl.pixelValues?.shape[0] ?? 0 : 0,
    dispose: () => owl.pixelValues?.dispose(),
  };
}

/** MplugOwl behind the trainer's model interface. */
export class OwlTrainable implements TrainableModel<OwlTrainBatch> {
  constructor(readonly owl: MplugOwl, private readonly seed: number) {}
  parameters(): Map<string, Tensor> { return this.owl.params; }
  groupOf(name: string): string { return officialGroupOf(name); }
  addLora(o: LoraSpec): void {
    const a = parseAdapterConfig({ r: o.r, lora_alpha: o.alpha, lora_dropout: o.dropout, target_modules: o.targets });
    initLora(this.owl.config, a, this.owl.params, this.seed + 1);
    for (const [k, t] of this.owl.params) t.name = k;
    this.owl.adapter = a;
  }
  forward(b: OwlTrainBatch, ctx: MicroBatchContext): ForwardOutput {
    this.owl.rngState = ctx.seed >>> 0;
    const r = this.owl.forward(b.owl, { training: ctx.training, logits: 'counted' });
    return { loss: r.loss, counted: r.countedTokens, correct: countCorrect(r.logits, b.owl) };
  }
}

/** Targets whose argmax logit is the label (logits are the counted rows, in order). */
function countCorrect(logits: Tensor, b: OwlBatch): number {
  const V = logits.shape[logits.ndim - 1], rows = logits.shape[0], d = logits.toFloat32();
  const labels: number[] = [];
  const T = b.seqLen;
  for (let s = 0; s < b.batchSize; s++) {
    for (let i = 0; i < T - 1; i++) {
      const m = s * (T - 1) + i;
      if (b.nonPaddingMask[m] * b.nonMediaMask[m] * b.promptMask[m] === 1) labels.push(b.inputIds[s * T + i + 1]);
    }
  }
  if (labels.length !== rows) return 0;
  let correct = 0;
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let v = 1; v < V; v++) if (d[r * V + v] > d[r * V + best]) best = v;
    if (best === labels[r]) correct++;
  }
  return correct;
}

/** The model a config describes: sizes, then weights from model.weights or a seeded fresh initialisation. */
export function buildModel(config: OwletConfig, sizes: OwlSizes): MplugOwl {
  // The trainer runs on the CPU backend in this build; a run that asks for a GPU must not quietly train on the CPU.
  if (config.run.device.startsWith('cuda')) {
    throw new NotAvailableError(`run.device '${config.run.device}': training on the CUDA backend is not in this build yet ` +
      '(its kernels are, see native/src/cuda); use run.device: cpu (or auto)');
  }
  const c = parseOwlConfig(sizes);
  const params = config.model.weights
    ? loadCheckpoint(config.model.weights, { dtype: 'f32', expected: expectedKeys(c) })
    : initParams(c, { seed: config.run.seed });
  let adapter: AdapterConfig | null = null;
  if (config.model.adapter) {
    const a = loadAdapter(config.model.adapter, { dtype: 'f32', model: c });
    for (const [k, t] of a.tensors) params.set(k, t);
    adapter = a.config;
  }
  if (config.model.abstractor_dropout !== undefined) c.abstractor.attentionProbsDropoutProb = config.model.abstractor_dropout;
  for (const [k, t] of params) t.name = k;
  return new MplugOwl(c, params, adapter);
}

/** lib/data's loader as the trainer's resumable stream (restore() rebuilds the loader at the saved position). */
export class OwlDataStream implements DataStream<OwlTrainBatch> {
  private loader: DataLoader;
  readonly microBatchesPerEpoch: number;
  constructor(private readonly dataset: JsonlDataset, private readonly opts: ConstructorParameters<typeof DataLoader>[1]) {
    this.loader = new DataLoader(dataset, opts);
    this.microBatchesPerEpoch = Math.floor(this.loader.stream.perRank / opts.batchSize);
  }
  async next(): Promise<OwlTrainBatch> {
    let b = await this.loader.next();
    if (!b) { // a finite (eval) stream wraps around
      this.restore(null);
      b = await this.loader.next();
      if (!b) throw new Error('the data stream holds no sample');
    }
    return trainBatch(b);
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
  return new OwlDataStream(ds, {
    batchSize: d.micro_batch, resolution: d.image.size, maxLength: d.max_length, mediaTokenLength: model.owl.config.mediaTokenLength,
    tokenizer: tokenizerFor(config), mode: train && d.image.train_transform === 'random-resized-crop' ? 'train' : 'eval',
    augment: { scale: d.image.crop_scale, flipP: d.image.hflip },
    shuffle: train ? d.shuffle : false, seed: config.run.seed, onError: d.on_corrupt, epochs: train ? Infinity : 1,
    // Training interleaves the ranks' micro-batches (W ranks read what one rank accumulating W× reads); evaluation
    // gives each rank a block of the eval set.
    rank: o.rank, worldSize: o.worldSize, chunk: train ? d.micro_batch : undefined, workers: train ? d.workers : 0,
  });
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
  step(lr: number): void { this.opt.lr = lr; this.opt.step(this.groups); }
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
      correct += out.correct ?? 0;
    });
    b.dispose?.();
  }
  if (dist && W > 1) [loss, counted, correct] = dist.allReduceNumbers([loss, counted, correct]);
  return { loss: counted ? loss / counted : 0, accuracy: counted ? correct / counted : 0 };
}

/** The final exports: the full model in the official layout (+ config.json) and, with LoRA, a PEFT adapter. */
export async function exportOwl(model: OwlTrainable, _config: OwletConfig, dir: string): Promise<void> {
  const owl = model.owl;
  const base = new Map([...owl.params].filter(([k]) => !k.includes('.lora_')));
  saveCheckpoint(dir, base, { config: owl.config });
  if (owl.adapter) {
    const lora = new Map([...owl.params].filter(([k]) => k.includes('.lora_')));
    saveAdapter(join(dir, 'adapter'), lora, owl.adapter);
  }
}

/** Everything trainStage() needs, wired to the real pieces; rank and worldSize pick this process's data shard. */
export function owlComponents(o: { rank?: number; worldSize?: number } = {}): Components<OwlTrainBatch> {
  return {
    createModel: async (config, sizes) => new OwlTrainable(buildModel(config, sizes), config.run.seed),
    createData: async (config, split, model, shard) => createDataStream(config, split, model as OwlTrainable, shard ?? o),
    createOptimizer: (groups, opt) => new OwlOptimizer(groups, opt),
    tensorIO: safetensorsIO,
    evaluate: (model, data, batches, dist) => evaluateLoss(model as OwlTrainable, data as OwlDataStream, batches, dist),
    exportFinal: (model, config, dir) => exportOwl(model as OwlTrainable, config, dir),
  };
}
