// LLaMA decoder (HF LlamaForCausalLM semantics, spec §1.4): RMSNorm, rotate-half RoPE, causal attention, SwiGLU MLP,
// untied lm_head. Linear layers named in `lora` run as LoRA linears (frozen base + low-rank update).
import { add, attention, linear, loraLinear, reshape, rmsNorm, rope, swiglu, type Tensor } from '../tensor/index.ts';
import type { LoraConfig, TextConfig } from './config.ts';
import type { ForwardContext } from './context.ts';
import { loraKey } from './params.ts';

export interface LlamaOptions {
  lora?: LoraConfig | null;
  /** Position of the first token (generation with a KV cache continues from here). */
  pos0?: number;
  /** i32 [B, Tk]: nonzero where a key may be attended (left/right padding in batched generation). */
  keyMask?: Tensor | null;
  /** Per layer, cached keys/values to prepend and a sink for the new ones (generation). */
  cache?: KVCache | null;
}

export interface KVCache {
  /** [B, Tpast, H, dh] per layer, or null before the first step. */
  k: (Tensor | null)[];
  v: (Tensor | null)[];
  append(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor };
}

/** Runs the decoder on input embeddings [B, T, D]; returns the final hidden states [B, T, D] (before lm_head). */
export function llamaHidden(ctx: ForwardContext, cfg: TextConfig, x: Tensor, o: LlamaOptions = {}): Tensor {
  const [B, T, D] = x.shape as [number, number, number];
  const H = cfg.num_attention_heads, dh = D / H, eps = cfg.rms_norm_eps, pos0 = o.pos0 ?? 0;
  const targets = new Set(o.lora?.target_modules ?? []);
  const scale = o.lora ? o.lora.lora_alpha / o.lora.r : 0;
  let h = x;
  for (let i = 0; i < cfg.num_hidden_layers; i++) {
    const L = `language_model.model.layers.${i}`;
    const proj = (t: Tensor, group: string, name: string) => {
      const w = ctx.get(`${L}.${group}.${name}.weight`);
      if (!targets.has(name)) return linear(t, w);
      return loraLinear(t, w, ctx.get(loraKey(i, name, 'A')), ctx.get(loraKey(i, name, 'B')), scale, {
        dropoutP: ctx.training ? o.lora!.lora_dropout : 0, seed: ctx.nextSeed(),
      });
    };
    const a = rmsNorm(h, ctx.get(`${L}.input_layernorm.weight`), eps);
    const q = rope(reshape(proj(a, 'self_attn', 'q_proj'), [B, T, H, dh]), pos0, cfg.rope_theta);
    let k = rope(reshape(proj(a, 'self_attn', 'k_proj'), [B, T, H, dh]), pos0, cfg.rope_theta);
    let v = reshape(proj(a, 'self_attn', 'v_proj'), [B, T, H, dh]);
    if (o.cache) ({ k, v } = o.cache.append(i, k, v));
    const c = attention(q, k, v, { causal: true, keyMask: o.keyMask ?? null });
    h = add(h, proj(reshape(c, [B, T, D]), 'self_attn', 'o_proj'));
    const m = rmsNorm(h, ctx.get(`${L}.post_attention_layernorm.weight`), eps);
    h = add(h, proj(swiglu(proj(m, 'mlp', 'gate_proj'), proj(m, 'mlp', 'up_proj')), 'mlp', 'down_proj'));
  }
  return rmsNorm(h, ctx.get('language_model.model.norm.weight'), eps);
}

export function lmHead(ctx: ForwardContext, hidden: Tensor): Tensor {
  return linear(hidden, ctx.get('language_model.lm_head.weight'));
}
