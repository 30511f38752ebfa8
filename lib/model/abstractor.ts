// The visual abstractor exactly as the official v1 code computes it (spec §1.3): per layer, LN on the queries and on
// the image features, keys/values over [normed queries; normed image], the residual on the NORMED queries, then a
// SwiGLU FFN with an inner LayerNorm; after the layers visual_fc and the appended vit_eos: [N, queries + 1, D_text].
import { add, attention, concat, layerNorm, reshape, swiglu, type Tensor } from '../tensor/index.ts';
import type { AbstractorConfig } from './config.ts';
import { expandBatch, type ForwardContext } from './context.ts';

// norm1 / normk / norm2 are built without eps in the official code: PyTorch's default.
const TORCH_LN_EPS = 1e-5;

export function abstractorForward(ctx: ForwardContext, cfg: AbstractorConfig, image: Tensor): Tensor {
  const N = image.shape[0], A = cfg.hiddenSize, H = cfg.numAttentionHeads, dh = A / H;
  let x = expandBatch(ctx.get('query_tokens'), N);
  const Q = x.shape[1];
  for (let i = 0; i < cfg.numHiddenLayers; i++) {
    const L = `abstractor.encoder.layers.${i}.crossattention`;
    const ln = (t: Tensor, name: string, eps = TORCH_LN_EPS) => layerNorm(t, ctx.get(`${L}.${name}.weight`), ctx.get(`${L}.${name}.bias`), eps);
    const lin = (t: Tensor, name: string) => ctx.linear(t, `${L}.${name}`);
    const qn = ln(x, 'norm1');
    const kv = concat([qn, ln(image, 'normk')], 1);
    const S = kv.shape[1];
    const q = reshape(lin(qn, 'attention.query'), [N, Q, H, dh]);
    const k = reshape(lin(kv, 'attention.key'), [N, S, H, dh]);
    const v = reshape(lin(kv, 'attention.value'), [N, S, H, dh]);
    const c = attention(q, k, v, {
      causal: false, dropoutP: ctx.training ? cfg.attentionProbsDropoutProb : 0, seed: ctx.nextSeed(),
    });
    const h = add(qn, lin(reshape(c, [N, Q, A]), 'output.out_proj'));
    const g = ln(h, 'output.norm2');
    const f = ln(swiglu(lin(g, 'output.mlp.w1'), lin(g, 'output.mlp.w3')), 'output.mlp.ffn_ln', cfg.layerNormEps);
    x = add(h, lin(f, 'output.mlp.w2'));
  }
  return concat([ctx.linear(x, 'abstractor.visual_fc'), expandBatch(ctx.get('abstractor.vit_eos'), N)], 1);
}
