// The vision encoder (CLIP ViT-L/14 architecture, mPLUG-Owl naming, spec §1.2): conv patch embedding as a GEMM,
// class token, position embedding, pre-LN, pre-LN transformer layers with the per-head interleaved fused QKV,
// quick_gelu MLP, post-LN on all tokens. Output: [N, 1 + patches, D].
import { add, addLayerNorm, attentionQkv, concat, layerNorm, linear, patchify, reshape, slice, type Tensor } from '../tensor/index.ts';
import type { VisionConfig } from './config.ts';
import { expandBatch, released, type ForwardContext } from './context.ts';

export function visionForward(ctx: ForwardContext, cfg: VisionConfig, pixels: Tensor): Tensor {
  const N = pixels.shape[0], D = cfg.hiddenSize, H = cfg.numAttentionHeads, dh = D / H, eps = cfg.layerNormEps;
  const E = 'vision_model.embeddings';
  const ln = (x: Tensor, name: string) => layerNorm(x, ctx.get(`${name}.weight`), ctx.get(`${name}.bias`), eps);
  const patches = patchify(pixels, cfg.patchSize); // [N, P, C·p·p]
  const pw = reshape(ctx.get(`${E}.patch_embed.weight`), [D, cfg.numChannels * cfg.patchSize ** 2]);
  const tokens = released(linear(patches, pw), patches, pw);
  const cls = expandBatch(ctx.get(`${E}.cls_token`), N);
  const seq = released(concat([cls, tokens], 1), cls, tokens);
  const T = seq.shape[1];
  const table = reshape(ctx.get(`${E}.position_embedding`), [-1, D]);
  const pos = released(slice(table, 0, 0, T), table);
  const x0 = released(add(seq, pos), seq, pos);
  let h = released(ln(x0, `${E}.pre_layernorm`), x0);

  // Every intermediate is released after its last use: what a backward reads, the tape holds on its own; the rest
  // (all of it when the encoder is frozen and runs without grad) would otherwise pile up over the layers until the
  // forward ends. Each sub-layer's output (`branch`) is added to the residual stream by the next norm, in its pass.
  let branch: Tensor | null = null;
  const norm = (name: string) => {
    if (!branch) return ln(h, name);
    const { sum, y } = addLayerNorm(h, branch, ctx.get(`${name}.weight`), ctx.get(`${name}.bias`), eps);
    released(null, h, branch);
    h = sum;
    branch = null;
    return y;
  };
  for (let i = 0; i < cfg.numHiddenLayers; i++) {
    const L = `vision_model.encoder.layers.${i}`;
    // qkv channels are laid out per head as [q(dh) | k(dh) | v(dh)] (spec §2.4): the fused output viewed as
    // [N, T, H, 3, dh] is what attentionQkv reads, q, k and v in place (no split copies, no concat of their gradients).
    const n1 = norm(`${L}.input_layernorm`);
    const fused = released(ctx.linear(n1, `${L}.self_attn.query_key_value`), n1);
    const qkv = reshape(fused, [N, T, H, 3, dh]);
    const a = released(attentionQkv(qkv, {
      causal: false, dropoutP: ctx.training ? cfg.attentionDropout : 0, seed: ctx.nextSeed(),
    }), fused, qkv);
    const a2 = reshape(a, [N, T, D]);
    branch = released(ctx.linear(a2, `${L}.self_attn.dense`), a2, a);
    const n2 = norm(`${L}.post_attention_layernorm`);
    const f = released(ctx.linear(n2, `${L}.mlp.fc1`), n2);
    branch = released(ctx.quickGeluLinear(f, `${L}.mlp.fc2`), f);
  }
  return released(norm('vision_model.post_layernorm'), h);
}
