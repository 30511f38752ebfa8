// LLaMA decoder (HF LlamaForCausalLM semantics, spec §1.4): RMSNorm, rotate-half RoPE, causal attention, SwiGLU MLP,
// untied lm_head. Modules the adapter targets run as LoRA linears (ForwardContext.linear).
import { add, attention, checkpoint, isGradEnabled, linear, reshape, rmsNorm, rope, swiglu, type Tensor } from '../tensor/index.ts';
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
  let h = x;
  for (let i = 0; i < cfg.numHiddenLayers; i++) {
    const layer = (t: Tensor) => decoderLayer(ctx, cfg, i, t, o);
    if (!recompute) {
      const next = layer(h);
      if (h !== x) h.dispose(); // the previous layer's output (the caller owns x)
      h = next;
      continue;
    }
    ctx.materialize(`${LAYER}.${i}.`);
    h = checkpoint(ctx.replayingSeeds(layer), [h]);
  }
  const out = rmsNorm(h, ctx.get('language_model.model.norm.weight'), cfg.rmsNormEps);
  if (h !== x && !recompute) h.dispose();
  return out;
}

/** Decoder layer i: pre-norm attention and SwiGLU MLP, each added back to the residual stream. */
function decoderLayer(ctx: ForwardContext, cfg: TextConfig, i: number, h: Tensor, o: LlamaOptions): Tensor {
  const [B, T, D] = h.shape as [number, number, number];
  const H = cfg.numAttentionHeads, dh = D / H, eps = cfg.rmsNormEps, pos0 = o.pos0 ?? 0;
  const L = `${LAYER}.${i}`;
  const lin = (t: Tensor, name: string) => ctx.linear(t, `${L}.${name}`);
  const a = rmsNorm(h, ctx.get(`${L}.input_layernorm.weight`), eps);
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
  const r = released(add(h, ao), ao);
  const m = rmsNorm(r, ctx.get(`${L}.post_attention_layernorm.weight`), eps);
  const gate = lin(m, 'mlp.gate_proj'), up = released(lin(m, 'mlp.up_proj'), m);
  const act = released(swiglu(gate, up), gate, up);
  const mo = released(lin(act, 'mlp.down_proj'), act);
  return released(add(r, mo), mo, r);
}

export function lmHead(ctx: ForwardContext, hidden: Tensor): Tensor {
  // tie_word_embeddings checkpoints have no lm_head: the embedding table is the output projection.
  if (!ctx.params.has('language_model.lm_head.weight')) return linear(hidden, ctx.get('language_model.model.embed_tokens.weight'));
  return ctx.linear(hidden, 'language_model.lm_head');
}
