// The vision encoder (CLIP ViT-L/14 architecture, mPLUG-Owl naming, spec §1.2): conv patch embedding as a GEMM,
// class token, position embedding, pre-LN, pre-LN transformer layers with the per-head interleaved fused QKV,
// quick_gelu MLP, post-LN on all tokens. Output: [N, 1 + patches, D].
import { add, attention, concat, layerNorm, linear, patchify, quickGelu, reshape, slice, type Tensor } from '../tensor/index.ts';
import type { VisionConfig } from './config.ts';
import { expandBatch, type ForwardContext } from './context.ts';

export function visionForward(ctx: ForwardContext, cfg: VisionConfig, pixels: Tensor): Tensor {
  const N = pixels.shape[0], D = cfg.hidden_size, H = cfg.num_attention_heads, dh = D / H, eps = cfg.layer_norm_eps;
  const E = 'vision_model.embeddings';
  const patches = patchify(pixels, cfg.patch_size); // [N, P, C·p·p]
  const wPatch = reshape(ctx.get(`${E}.patch_embed.weight`), [D, cfg.num_channels * cfg.patch_size ** 2]);
  const tokens = linear(patches, wPatch);
  const cls = expandBatch(ctx.get(`${E}.cls_token`), N);
  const seq = concat([cls, tokens], 1);
  const T = seq.shape[1];
  const pos = slice(reshape(ctx.get(`${E}.position_embedding`), [-1, D]), 0, 0, T);
  let h = layerNorm(add(seq, pos), ctx.get(`${E}.pre_layernorm.weight`), ctx.get(`${E}.pre_layernorm.bias`), eps);

  for (let i = 0; i < cfg.num_hidden_layers; i++) {
    const L = `vision_model.encoder.layers.${i}`;
    const a = layerNorm(h, ctx.get(`${L}.input_layernorm.weight`), ctx.get(`${L}.input_layernorm.bias`), eps);
    // qkv channels are laid out per head as [q(dh) | k(dh) | v(dh)] (spec §2.4).
    const qkv = reshape(linear(a, ctx.get(`${L}.self_attn.query_key_value.weight`), ctx.get(`${L}.self_attn.query_key_value.bias`)),
      [N, T, H, 3, dh]);
    const part = (j: number) => reshape(slice(qkv, 3, j, 1), [N, T, H, dh]);
    const ctxv = attention(part(0), part(1), part(2), {
      causal: false, dropoutP: ctx.training ? cfg.attention_dropout : 0, seed: ctx.nextSeed(),
    });
    h = add(h, linear(reshape(ctxv, [N, T, D]), ctx.get(`${L}.self_attn.dense.weight`), ctx.get(`${L}.self_attn.dense.bias`)));
    const m = layerNorm(h, ctx.get(`${L}.post_attention_layernorm.weight`), ctx.get(`${L}.post_attention_layernorm.bias`), eps);
    const f = quickGelu(linear(m, ctx.get(`${L}.mlp.fc1.weight`), ctx.get(`${L}.mlp.fc1.bias`)));
    h = add(h, linear(f, ctx.get(`${L}.mlp.fc2.weight`), ctx.get(`${L}.mlp.fc2.bias`)));
  }
  return layerNorm(h, ctx.get('vision_model.post_layernorm.weight'), ctx.get('vision_model.post_layernorm.bias'), eps);
}
