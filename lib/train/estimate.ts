// Parameter counts, per-device memory and model FLOPs of a training stage, from the model sizes alone.
//
// Memory per device (data parallel: every device holds a full replica), in bytes:
//   weights      all base parameters in the model dtype (2 bytes bf16, 4 fp32) + LoRA matrices in fp32 (PEFT keeps
//                them fp32). Under bf16 that is the frozen weights as stored plus the bf16 working copies of the
//                trained ones, which a forward makes and the tape holds until backward (precision.ts)
//   masters      fp32 master copies of trainable base parameters when the model dtype is bf16 (LoRA is already fp32)
//   gradients    fp32, trainable parameters only (frozen ones get none: the tape computes only what is needed)
//   optimizer    AdamW m and v in fp32: 8 bytes per trainable parameter
//   activations  what the autograd tape holds for backward at the loss, per micro-batch (a = bytes per element). An
//     op keeps only what its backward reads: a linear its input only when its weight trains (or LoRA adapts it),
//     and everything else a forward makes is released as it goes (bench/memory_census.ts lists the tape at the
//     loss; test/train/estimate.test.ts checks this formula against it).
//     LLM, per layer and token: the two RMSNorm inputs 2H, q/k/v after RoPE and the attention output 4H, gate/up 2F;
//       the norm outputs H each and the SwiGLU output F only where a projection reading them trains (the LLM
//       trains, or LoRA adapts q/k/v, gate/up, down); LoRA's x·Aᵀ (r per adapted module); fp32 statistics (2
//       RMSNorm rstd + one log-sum-exp per head). With gradient checkpointing: the input of every layer (H·a per
//       token) + one layer's full set while it is recomputed in backward. The LLM is always back-propagated (stage
//       1 through the frozen LLM to the image tokens). The final norm's input H (and output H when the LLM trains).
//     logits and their gradient: 2·B·T·V·a (the trainer computes only the rows with a target: less).
//     Vision (only when it trains), per image token and layer: LayerNorm in/out ×2 4h, q/k/v and the attention
//       output 4h, fc1's output f (quick_gelu's output is recomputed in backward) → (8h + f)·a, plus fp32 LayerNorm
//       statistics and log-sum-exp; per image the patches, the pre- and post-LayerNorm inputs.
//     Abstractor (when vision, queries or abstractor train), per image and layer, with Q queries, K image tokens:
//       9·Q·c + 3·K·c + 4·Q·f elements (norm inputs and outputs, the [queries; image] key/value input, q/k/v and
//       the output, the SwiGLU pair, ffn_ln in/out), + per image the image features K·e (one tensor all layers
//       read) and the visual_fc input Q·c.
//   T = max_length + 1 tokens per sample (spec §4.4: samples are L+1 ids); B = micro-batch.
// The peak: weights, masters and optimizer state throughout, plus the activations and logits at the end of the
// forward; the gradients appear during backward as the activations are released, so with one micro-batch the peak
// takes the larger of the two, and with accumulation (gradients kept from the earlier micro-batches) their sum.
// Not counted: allocator fragmentation and caching, temporaries inside a kernel, the data pipeline, communication
// buffers, transient activations of frozen parts computed without grad.
import type { GroupName } from './config-schema.ts';
import type { OwlSizes } from './model-sizes.ts';

export interface ParamCounts {
  vision: number;
  queries: number;
  /** Abstractor layers + visual_fc + vit_eos (the spec's abstractor total minus query_tokens). */
  abstractor: number;
  llm: number;
  lora: number;
  /** All base parameters (LoRA excluded). */
  total: number;
}

export interface LoraShape { r: number; targets: readonly string[] }

const LLAMA_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;

/** [in, out] of an adapted LLaMA linear. */
function loraDims(s: OwlSizes, target: string): [number, number] {
  const H = s.text_config.hidden_size, F = s.text_config.intermediate_size;
  switch (target) {
    case 'q_proj': case 'k_proj': case 'v_proj': case 'o_proj': return [H, H];
    case 'gate_proj': case 'up_proj': return [H, F];
    case 'down_proj': return [F, H];
    default: throw new RangeError(`LoRA target '${target}' is not a LLaMA linear (${LLAMA_MODULES.join(', ')})`);
  }
}

export function countParams(s: OwlSizes, lora?: LoraShape): ParamCounts {
  const v = s.vision_config, ab = s.visual_abstractor_config, tx = s.text_config;
  const h = v.hidden_size, fv = v.intermediate_size;
  const positions = (v.image_size / v.patch_size) ** 2 + 1;
  const visionLayer = 2 * 2 * h + (3 * h * h + 3 * h) + (h * h + h) + (fv * h + fv) + (h * fv + h);
  const vision = v.num_channels * v.patch_size ** 2 * h + h + positions * h + 2 * h + v.num_hidden_layers * visionLayer + 2 * h;
  const c = ab.hidden_size, e = ab.encoder_hidden_size ?? h, fa = ab.intermediate_size, H = tx.hidden_size;
  const abLayer = 2 * c + 2 * e + (c * c + c) + 2 * (c * e + c) + (c * c + c) + 2 * c + 2 * (fa * c + fa) + 2 * fa + (c * fa + c);
  const abstractor = ab.num_hidden_layers * abLayer + (H * c + H) + H;
  const queries = s.num_query_tokens * c;
  const F = tx.intermediate_size, V = tx.vocab_size;
  const llm = 2 * V * H + H + tx.num_hidden_layers * (4 * H * H + 3 * H * F + 2 * H);
  let loraCount = 0;
  if (lora) for (const t of lora.targets) { const [i, o] = loraDims(s, t); loraCount += tx.num_hidden_layers * lora.r * (i + o); }
  return { vision, queries, abstractor, llm, lora: loraCount, total: vision + queries + abstractor + llm };
}

export interface MemoryOptions {
  sizes: OwlSizes;
  train: readonly GroupName[];
  lora?: LoraShape;
  dtype: 'f32' | 'bf16';
  microBatch: number;
  maxLength: number;
  imagesPerSample?: number;
  recompute: boolean;
  /** Micro-batches per optimizer step (default 1): above 1 the gradients stay alive through every forward. */
  gradAccum?: number;
}

export interface MemoryBreakdown {
  weights: number;
  masters: number;
  gradients: number;
  optimizer: number;
  activations: number;
  logits: number;
  total: number;
}

export interface MemoryEstimate {
  params: ParamCounts;
  trainable: number;
  tokensPerSample: number;
  bytes: MemoryBreakdown;
  /** The same stage with the other gradient-checkpointing setting. */
  other: MemoryBreakdown;
}

function trainableCount(p: ParamCounts, train: readonly GroupName[]): { base: number; lora: number } {
  const base = (train.includes('vision') ? p.vision : 0) + (train.includes('queries') ? p.queries : 0)
    + (train.includes('abstractor') ? p.abstractor : 0) + (train.includes('llm') ? p.llm : 0);
  return { base, lora: train.includes('lora') ? p.lora : 0 };
}

/** Whether LoRA (training) adapts any of these LLaMA modules. */
function adapts(o: MemoryOptions, ...modules: string[]): boolean {
  return !!o.lora && o.train.includes('lora') && o.lora.targets.some((t) => modules.includes(t));
}

function activationBytes(o: MemoryOptions, recompute: boolean): { activations: number; logits: number } {
  const a = o.dtype === 'bf16' ? 2 : 4;
  const s = o.sizes, tx = s.text_config, v = s.vision_config, ab = s.visual_abstractor_config;
  const B = o.microBatch, T = o.maxLength + 1, H = tx.hidden_size, F = tx.intermediate_size, L = tx.num_hidden_layers;
  const llmTrains = o.train.includes('llm');
  const loraPerToken = o.lora && o.train.includes('lora') ? o.lora.r * o.lora.targets.length : 0;
  const kept = (...modules: string[]) => llmTrains || adapts(o, ...modules);
  const llmLayerElems = 2 * H + 4 * H + 2 * F + (kept('q_proj', 'k_proj', 'v_proj') ? H : 0)
    + (kept('gate_proj', 'up_proj') ? H : 0) + (kept('down_proj') ? F : 0) + loraPerToken;
  const llmLayerPerToken = llmLayerElems * a + (2 + tx.num_attention_heads) * 4;
  const tokens = B * T;
  let act = recompute ? L * tokens * H * a + tokens * llmLayerPerToken : L * tokens * llmLayerPerToken;
  act += tokens * (llmTrains ? 2 : 1) * H * a + tokens * 4; // final RMSNorm input (+ output) and rstd
  const logits = 2 * tokens * tx.vocab_size * a;

  const images = B * (o.imagesPerSample ?? 1);
  const P = (v.image_size / v.patch_size) ** 2, K = P + 1;
  if (o.train.includes('vision')) {
    const h = v.hidden_size, f = v.intermediate_size;
    const perToken = (8 * h + f) * a + (2 * 2 + v.num_attention_heads) * 4;
    act += images * (P * v.num_channels * v.patch_size ** 2 * a /* patches */ + v.num_hidden_layers * K * perToken
      + 2 * K * h * a + 2 * K * 4 /* pre/post LayerNorm inputs and statistics */);
  }
  if (o.train.some((g) => g === 'vision' || g === 'queries' || g === 'abstractor')) {
    const Q = s.num_query_tokens, c = ab.hidden_size, f = ab.intermediate_size, e = ab.encoder_hidden_size ?? v.hidden_size;
    const perLayer = (9 * Q * c + 3 * K * c + 4 * Q * f) * a + ((3 * Q + K) * 2 + ab.num_attention_heads * Q) * 4;
    act += images * (ab.num_hidden_layers * perLayer + K * e * a + Q * c * a);
  }
  return { activations: act, logits };
}

function breakdown(o: MemoryOptions, p: ParamCounts, recompute: boolean): MemoryBreakdown {
  const w = o.dtype === 'bf16' ? 2 : 4;
  const tr = trainableCount(p, o.train);
  const weights = p.total * w + (o.lora ? p.lora * 4 : 0);
  const masters = o.dtype === 'bf16' ? tr.base * 4 : 0;
  const gradients = (tr.base + tr.lora) * 4;
  const optimizer = (tr.base + tr.lora) * 8;
  const { activations, logits } = activationBytes(o, recompute);
  const transient = (o.gradAccum ?? 1) > 1 ? gradients + activations + logits : Math.max(gradients, activations + logits);
  return { weights, masters, gradients, optimizer, activations, logits, total: weights + masters + optimizer + transient };
}

export function estimateMemory(o: MemoryOptions): MemoryEstimate {
  const lora = o.train.includes('lora') ? o.lora : undefined;
  const opts = { ...o, lora };
  const params = countParams(o.sizes, lora);
  const tr = trainableCount(params, o.train);
  return { params, trainable: tr.base + tr.lora, tokensPerSample: o.maxLength + 1,
    bytes: breakdown(opts, params, o.recompute), other: breakdown(opts, params, !o.recompute) };
}

/**
 * Model FLOPs of one optimizer step (MFU convention: recomputation not counted). Forward: 2·params·tokens for the
 * matmuls of every part plus attention (causal LLM 2·T²·H per layer and sample, full attention 4·Tq·Tk·d). Backward
 * through every part that is back-propagated: its matmul forward again (input gradients) and twice its attention
 * forward; plus 2·trainable·tokens for the weight gradients. A fully trained LLM thus costs ≈ 6·N·T.
 */
export function estimateStepFlops(o: Omit<MemoryOptions, 'recompute' | 'dtype'> & { gradAccum?: number }): number {
  const s = o.sizes, tx = s.text_config, v = s.vision_config, ab = s.visual_abstractor_config;
  const p = countParams(s, o.train.includes('lora') ? o.lora : undefined);
  const B = o.microBatch, T = o.maxLength + 1, images = B * (o.imagesPerSample ?? 1);
  const K = (v.image_size / v.patch_size) ** 2 + 1, Q = s.num_query_tokens;
  const llmParams = p.llm - tx.vocab_size * tx.hidden_size /* the embedding is a lookup */ + p.lora;
  const part = (params: number, tokens: number, attn: number) => ({ mm: 2 * params * tokens, attn });
  const llm = part(llmParams, B * T, 2 * B * T * T * tx.hidden_size * tx.num_hidden_layers);
  const vis = part(p.vision, images * K, 4 * images * K * K * v.hidden_size * v.num_hidden_layers);
  const abs = part(p.abstractor, images * Q, 4 * images * Q * (Q + K) * ab.hidden_size * ab.num_hidden_layers);
  const through = (x: { mm: number; attn: number }) => x.mm + 2 * x.attn;
  let flops = llm.mm + llm.attn + vis.mm + vis.attn + abs.mm + abs.attn;
  flops += through(llm); // the LLM is always back-propagated
  if (o.train.some((g) => g === 'vision' || g === 'queries' || g === 'abstractor')) flops += through(abs);
  if (o.train.includes('vision')) flops += through(vis);
  const weightGrads = (o.train.includes('vision') ? p.vision * images * K : 0)
    + (o.train.includes('abstractor') ? p.abstractor * images * Q : 0)
    + (o.train.includes('llm') ? (llmParams - p.lora) * B * T : 0) + (o.train.includes('lora') ? p.lora * B * T : 0);
  flops += 2 * weightGrads;
  return flops * (o.gradAccum ?? 1);
}

const GiB = 2 ** 30;
const gib = (b: number) => `${(b / GiB).toFixed(2)} GiB`;
const n = (x: number) => x.toLocaleString('en-US');

/** A human-readable table of an estimate. */
export function formatEstimate(e: MemoryEstimate, o: { stage: number; train: readonly GroupName[]; dtype: string; microBatch: number; recompute: boolean }): string {
  const b = e.bytes;
  const lines = [
    `parameters: vision ${n(e.params.vision)}, queries ${n(e.params.queries)}, abstractor ${n(e.params.abstractor)}, ` +
      `LLM ${n(e.params.llm)}, total ${n(e.params.total)}${e.params.lora ? `, LoRA ${n(e.params.lora)}` : ''}`,
    `stage ${o.stage}: training ${o.train.join(', ')} → ${n(e.trainable)} trainable parameters`,
    `per device (weights ${o.dtype}, micro-batch ${o.microBatch} × ${e.tokensPerSample} tokens, gradient checkpointing ${o.recompute ? 'on' : 'off'}):`,
    `  weights      ${gib(b.weights)}`,
    `  fp32 masters ${gib(b.masters)}`,
    `  gradients    ${gib(b.gradients)}`,
    `  AdamW m, v   ${gib(b.optimizer)}`,
    `  activations  ${gib(b.activations)}`,
    `  logits       ${gib(b.logits)}`,
    `  total        ${gib(b.total)}`,
    `with gradient checkpointing ${o.recompute ? 'off' : 'on'}: total ${gib(e.other.total)} (activations ${gib(e.other.activations)})`,
  ];
  return lines.join('\n');
}
