// LLaMA decoder (HF LlamaForCausalLM semantics, spec §1.4): RMSNorm, rotate-half RoPE, causal attention, SwiGLU MLP,
// untied lm_head. Modules the adapter targets run as LoRA linears (ForwardContext.linear).
import {
  add, addRmsNorm, attention, checkpoint, isGradEnabled, linear, reshape, rmsNorm, rope, swiglu, type Tensor,
} from '../tensor/index.ts';
import type { TextConfig } from './config.ts';
import { released, type ForwardContext } from './context.ts';

export interface LlamaOptions {
  /** Position of the first token (generation with a KV cache continues from here). */
  pos0?: number;
  /** i32 [B, Tk]: nonzero where a key may be attended (padding in batched generation). */
  keyMask?: Tensor | null;
  /** Keys/values of earlier tokens per layer (generation). */
  cache?: KVCache | null;
  /** Activation recomputation: each decoder layer keeps only its input and is run again in the backward
   *  (config model.gradient_checkpointing). Ignored without grad or with a KV cache. */
  recompute?: boolean;
}

export interface KVCache {
  /** Prepends the cached keys/values of `layer` and stores the result: returns [B, Tpast + T, H, dh] each. */
  append(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor };
}

const LAYER = 'language_model.model.layers';

/** Runs the decoder on input embeddings [B, T, D]; returns the final hidden states [B, T, D] (before lm_head). */
export function llamaHidden(ctx: ForwardContext, cfg: TextConfig, x: Tensor, o: LlamaOptions = {}): Tensor {
  // Recomputation only pays where a backward follows and nothing outlives the step (a KV cache would).
  const recompute = !!o.recompute && !o.cache && isGradEnabled();
  const finalNorm = ctx.get('language_model.model.norm.weight');
  if (recompute) {
    // A checkpointed layer maps its input to its output, so its last residual add stays inside it.
    let h = x;
    for (let i = 0; i < cfg.numHiddenLayers; i++) {
      const layer = (t: Tensor) => {
        const { stream, branch } = decoderLayer(ctx, cfg, i, t, null, o);
        return released(add(stream, branch), stream, branch);
      };
      ctx.materialize(`${LAYER}.${i}.`);
      h = checkpoint(ctx.replayingSeeds(layer), [h]);
    }
    return rmsNorm(h, finalNorm, cfg.rmsNormEps);
  }
  // Each layer hands back its residual stream and its MLP's output unsummed: the next layer's input norm (the final
  // norm after the last layer) adds them in the same pass (addRmsNorm).
  let stream = x, branch: Tensor | null = null;
  for (let i = 0; i < cfg.numHiddenLayers; i++) {
    const next = decoderLayer(ctx, cfg, i, stream, branch, o);
    if (stream !== x) stream.dispose(); // the caller owns x
    branch?.dispose();
    ({ stream, branch } = next);
  }
  if (!branch) return rmsNorm(stream, finalNorm, cfg.rmsNormEps);
  const { sum, y } = addRmsNorm(stream, branch, finalNorm, cfg.rmsNormEps);
  released(null, sum, branch);
  if (stream !== x) stream.dispose();
  return y;
}

/**
 * Decoder layer i: pre-norm attention and SwiGLU MLP. Its input is stream + branch (branch: the previous layer's MLP
 * output, not yet added; null for the first layer), added in the input norm's pass. Returns the residual stream after
 * the attention and the MLP output, for the next norm to add.
 */
function decoderLayer(ctx: ForwardContext, cfg: TextConfig, i: number, stream: Tensor, branch: Tensor | null,
  o: LlamaOptions): { stream: Tensor; branch: Tensor } {
  const [B, T, D] = stream.shape as [number, number, number];
  const H = cfg.numAttentionHeads, dh = D / H, eps = cfg.rmsNormEps, pos0 = o.pos0 ?? 0;
  const L = `${LAYER}.${i}`;
  const lin = (t: Tensor, name: string) => ctx.linear(t, `${L}.${name}`);
  const inputNorm = ctx.get(`${L}.input_layernorm.weight`);
  let h = stream, a: Tensor;
  if (branch) ({ sum: h, y: a } = addRmsNorm(stream, branch, inputNorm, eps));
  else a = rmsNorm(stream, inputNorm, eps);
  const roped = (name: string) => {
    const y = lin(a, name), y4 = reshape(y, [B, T, H, dh]);
    return released(rope(y4, pos0, cfg.ropeTheta), y, y4);
  };
  // Each intermediate is released after its last use here: what backward reads, the tape holds on its own, and
  // what it does not (a frozen projection's input) is freed at once rather than at the end of the forward.
  const q = roped('self_attn.q_proj');
  let k = roped('self_attn.k_proj');
  const v0 = lin(a, 'self_attn.v_proj');
  let v = released(reshape(v0, [B, T, H, dh]), v0, a);
  if (o.cache) ({ k, v } = o.cache.append(i, k, v)); // the cache's tensors are its own: not released here
  const c = attention(q, k, v, { causal: true, keyMask: o.keyMask ?? null });
  q.dispose();
  if (!o.cache) released(null, k, v);
  const c2 = reshape(c, [B, T, D]);
  const ao = released(lin(c2, 'self_attn.o_proj'), c2, c);
  const { sum: r, y: m } = addRmsNorm(h, ao, ctx.get(`${L}.post_attention_layernorm.weight`), eps);
  released(null, ao);
  if (h !== stream) h.dispose(); // the caller owns stream
  const gate = lin(m, 'mlp.gate_proj'), up = released(lin(m, 'mlp.up_proj'), m);
  const act = released(swiglu(gate, up), gate, up);
  return { stream: r, branch: released(lin(act, 'mlp.down_proj'), act) };
}

export function lmHead(ctx: ForwardContext, hidden: Tensor): Tensor {
  // tie_word_embeddings checkpoints have no lm_head: the embedding table is the output projection.
  if (!ctx.params.has('language_model.lm_head.weight')) return linear(hidden, ctx.get('language_model.model.embed_tokens.weight'));
  return ctx.linear(hidden, 'language_model.lm_head');
}
