// The vision encoder (CLIP ViT-L/14 architecture, mPLUG-Owl naming, spec §1.2): conv patch embedding as a GEMM,
// class token, position embedding, pre-LN, pre-LN transformer layers with the per-head interleaved fused QKV,
// quick_gelu MLP, post-LN on all tokens. Output: [N, 1 + patches, D].
import { add, attention, concat, layerNorm, linear, patchify, reshape, slice, split, type Tensor } from '../tensor/index.ts';
import type { VisionConfig } from './config.ts';
import { expandBatch, released, type ForwardContext } from './context.ts';

export function visionForward(ctx: ForwardContext, cfg: VisionConfig, pixels: Tensor): Tensor {
  const N = pixels.shape[0], D = cfg.hiddenSize, H = cfg.numAttentionHeads, dh = D / H, eps = cfg.layerNormEps;
  const E = 'vision_model.embeddings';
  const ln = (x: Tensor, name: string) => layerNorm(x, ctx.get(`${name}.weight`), ctx.get(`${name}.bias`), eps);
  const patches = patchify(pixels, cfg.patchSize); // [N, P, C·p·p]
  const tokens = linear(patches, reshape(ctx.get(`${E}.patch_embed.weight`), [D, cfg.numChannels * cfg.patchSize ** 2]));
  const seq = concat([expandBatch(ctx.get(`${E}.cls_token`), N), tokens], 1);
  const T = seq.shape[1];
  const pos = slice(reshape(ctx.get(`${E}.position_embedding`), [-1, D]), 0, 0, T);
  let h = ln(add(seq, pos), `${E}.pre_layernorm`);

  for (let i = 0; i < cfg.numHiddenLayers; i++) {
    const L = `vision_model.encoder.layers.${i}`;
    // qkv channels are laid out per head as [q(dh) | k(dh) | v(dh)] (spec §2.4).
    const fused = ctx.linear(ln(h, `${L}.input_layernorm`), `${L}.self_attn.query_key_value`);
    const qkv = reshape(fused, [N, T, H, 3, dh]);
    const [q, k, v] = released(split(qkv, 3, [1, 1, 1]).map((t) => reshape(t, [N, T, H, dh])), fused, qkv);
    const a = attention(q, k, v, {
      causal: false, dropoutP: ctx.training ? cfg.attentionDropout : 0, seed: ctx.nextSeed(),
    });
    const ao = ctx.linear(reshape(a, [N, T, D]), `${L}.self_attn.dense`);
    h = released(add(h, ao), ao);
    const f = ctx.linear(ln(h, `${L}.post_attention_layernorm`), `${L}.mlp.fc1`);
    const fo = released(ctx.quickGeluLinear(f, `${L}.mlp.fc2`), f);
    h = released(add(h, fo), fo);
  }
  return ln(h, 'vision_model.post_layernorm');
}
