// MplugOwl: vision encoder → abstractor → spliced into the LLaMA input embeddings → logits and the official loss.
import {
  ArgumentError, ShapeError, cast, crossEntropy, gatherRows, isGradEnabled, reshape, scope, spliceRows, tensor, type DType, type Tensor,
  type WorkingCopies,
} from '../tensor/index.ts';
import { abstractorForward } from './abstractor.ts';
import { lossLabels, splicePlan, type OwlBatch } from './batch.ts';
import { mediaTokenLength, type AdapterConfig, type OwlConfig } from './config.ts';
import { ForwardContext, type Params } from './context.ts';
import { llamaHidden, lmHead, type LlamaOptions } from './llama.ts';
import { groupOf, type GroupName } from './params.ts';
import { visionForward } from './vision.ts';

export interface ForwardOptions extends LlamaOptions {
  /** Dropout on (training) or off. */
  training?: boolean;
  /** 'all' (default): logits [B, T, V] for every position. 'counted': only the rows the loss counts go through
   *  lm_head and the cross-entropy (identical loss and gradients; in instruction data a few tokens in ten count, so
   *  this skips most of the vocabulary-sized work); `logits` is then [counted, V]. */
  logits?: 'all' | 'counted';
}

export interface ForwardResult {
  logits: Tensor; // [B, T, V], or [counted, V]
  loss: Tensor; // [1], mean over counted tokens (0 when none count)
  countedTokens: number;
  imagesUsed: number;
}

export class MplugOwl {
  /** Dropout seed stream state (saved in checkpoints). */
  rngState = 0x9e3779b9;
  /** The dtype the forward computes in; null: each weight as stored (a model loaded in one dtype). Set (bf16) for
   *  mixed precision: weights stored otherwise (fp32 masters) are cast once per forward (ForwardContext.get). */
  computeDtype: DType | null = null;
  /** Working copies kept between forwards (a training run's: AdamW keeps them equal to the masters); null: cast at
   *  each forward. */
  workingCopies: WorkingCopies | null = null;
  constructor(readonly config: OwlConfig, readonly params: Params, public adapter: AdapterConfig | null = null) {}

  /** Marks which parameter groups train; all others are frozen (no gradient work, no gradient memory). */
  setTrainable(groups: readonly GroupName[]): void {
    const g = new Set<string>(groups);
    for (const [k, t] of this.params) {
      t.requiresGrad = g.has(groupOf(k) ?? '');
      t.name = k;
    }
  }

  trainable(): Map<string, Tensor> {
    return new Map([...this.params].filter(([, t]) => t.requiresGrad));
  }

  /** Where the weights live; ids, masks and labels are placed there too. */
  get device(): string { return this.params.get('language_model.model.embed_tokens.weight')?.device ?? 'cpu'; }

  /** An i32 tensor of host values on the model's device. */
  ids(values: Int32Array | number[]): Tensor {
    const a = values instanceof Int32Array ? values : Int32Array.from(values);
    return tensor(a, [a.length], { device: this.device });
  }

  context(training: boolean): ForwardContext {
    return new ForwardContext(this.params, training, this.adapter, this.rngState, this.computeDtype, this.workingCopies);
  }

  /** Image tokens for a batch of pixels [N, 3, R, R]: [N, queries + 1, D_text]. */
  encodeImages(ctx: ForwardContext, pixels: Tensor): Tensor {
    const R = this.config.vision.imageSize, C = this.config.vision.numChannels;
    if (pixels.ndim !== 4 || pixels.shape[1] !== C || pixels.shape[2] !== R || pixels.shape[3] !== R) {
      throw new ShapeError(`images ${pixels.describe()} do not fit the model: it takes [N, ${C}, ${R}, ${R}] ` +
        `(vision_config.image_size ${R})`, 'encodeImages');
    }
    // Activations take the weights' dtype (bf16 weights: bf16 activations, fp32 accumulation inside the kernels).
    const wt = ctx.get('vision_model.embeddings.patch_embed.weight').dtype;
    const feats = visionForward(ctx, this.config.vision, pixels.dtype === wt ? pixels : cast(pixels, wt));
    return abstractorForward(ctx, this.config.abstractor, feats);
  }

  /** Input embeddings [B, T, D] with image tokens spliced over the media runs. */
  embed(ctx: ForwardContext, batch: OwlBatch, searchLen?: number, dummyId = 1): { x: Tensor; imagesUsed: number } {
    const { batchSize: B, seqLen: T } = batch;
    const D = this.config.text.hiddenSize, M = mediaTokenLength(this.config);
    const ids = Int32Array.from(batch.inputIds, (v) => (v < 0 ? dummyId : v));
    const V = this.config.text.vocabSize;
    const bad = ids.findIndex((v) => v >= V);
    if (bad >= 0) {
      throw new ArgumentError(`input_ids hold ${ids[bad]} at [${Math.floor(bad / T)}, ${bad % T}], outside the model's ` +
        `${V}-token vocabulary (text_config.vocab_size): a tokenizer that does not fit the model?`, 'embed');
    }
    const idT = this.ids(ids);
    let x = gatherRows(ctx.get('language_model.model.embed_tokens.weight'), idT);
    const plan = splicePlan(batch, M, searchLen);
    if (plan.rows.length > 0 && batch.pixelValues) {
      const tokens = reshape(this.encodeImages(ctx, batch.pixelValues), [-1, D]);
      const used = gatherRows(tokens, this.ids(plan.sources));
      x = spliceRows(x, this.ids(plan.rows), used);
    }
    return { x: reshape(x, [B, T, D]), imagesUsed: plan.imagesUsed };
  }

  /** Token embeddings for plain ids [n] -> [n, D] (generation steps). */
  embedIds(ctx: ForwardContext, ids: Int32Array): Tensor {
    return gatherRows(ctx.get('language_model.model.embed_tokens.weight'), this.ids(ids));
  }

  /** The training forward: logits and the official masked loss (spec §4.4). */
  forward(batch: OwlBatch, o: ForwardOptions = {}): ForwardResult {
    const ctx = this.context(o.training ?? false);
    const { batchSize: B, seqLen: T } = batch;
    const V = this.config.text.vocabSize;
    const { labels, counted } = lossLabels(batch);
    let imagesUsed = 0;
    // Everything this forward makes but the logits and the loss is released when the scope closes: the tape holds
    // its own handles on what backward reads, so each activation lives until backward has passed the op that saved
    // it, and one that no backward reads (a frozen layer's input) not even that long. A recomputed layer reads the
    // working copies again in the backward: those stay, in the caller's scope.
    const { logits, loss } = scope(() => {
      const e = this.embed(ctx, batch);
      imagesUsed = e.imagesUsed;
      const hidden = llamaHidden(ctx, this.config.text, e.x, o);
      let logits: Tensor, loss: Tensor;
      if (o.logits === 'counted') {
        // Rows with a target (at least one row, so an all-ignored batch still yields a zero loss and zero gradients).
        const rows: number[] = [];
        labels.forEach((l, i) => { if (l !== -100) rows.push(i); });
        if (!rows.length) rows.push(0);
        const D = this.config.text.hiddenSize;
        const h = gatherRows(reshape(hidden, [B * T, D]), this.ids(rows));
        logits = lmHead(ctx, h);
        loss = crossEntropy(logits, this.ids(rows.map((r) => labels[r])), -100);
      } else {
        logits = lmHead(ctx, hidden);
        loss = crossEntropy(reshape(logits, [B * T, V]), this.ids(labels), -100);
      }
      return { logits, loss, pinned: o.recompute && isGradEnabled() ? ctx.workingCopies() : [] };
    });
    this.rngState = ctx.rngState;
    return { logits, loss, countedTokens: counted, imagesUsed };
  }
}
