// The visual abstractor exactly as the official v1 code computes it (spec §1.3): per layer, LN on the queries and on
// the image features, keys/values over [normed queries; normed image], the residual on the NORMED queries, then a
// SwiGLU FFN with an inner LayerNorm; after the layers visual_fc and the appended vit_eos: [N, queries + 1, D_text].
import { add, addLayerNorm, attention, concat, layerNorm, reshape, swiglu, type Tensor } from '../tensor/index.ts';
import type { AbstractorConfig } from './config.ts';
import { expandBatch, released, type ForwardContext } from './context.ts';

// norm1 / normk / norm2 are built without eps in the official code: PyTorch's default.
const TORCH_LN_EPS = 1e-5;

export function abstractorForward(ctx: ForwardContext, cfg: AbstractorConfig, image: Tensor): Tensor {
  const N = image.shape[0], A = cfg.hiddenSize, H = cfg.numAttentionHeads, dh = A / H;
  let x = expandBatch(ctx.get('query_tokens'), N);
  const Q = x.shape[1];
  // Intermediates are released after their last use (the tape keeps what the backward reads). The residual adds are
  // fused into the norm that follows each of them (addLayerNorm): h = qn + o with norm2, and x = h + fo with the next
  // layer's norm1; after the last layer x = h + fo is a plain add.
  let branch: Tensor | null = null;
  for (let i = 0; i < cfg.numHiddenLayers; i++) {
    const L = `abstractor.encoder.layers.${i}.crossattention`;
    const ln = (t: Tensor, name: string, eps = TORCH_LN_EPS) => layerNorm(t, ctx.get(`${L}.${name}.weight`), ctx.get(`${L}.${name}.bias`), eps);
    const addLn = (t: Tensor, add: Tensor, name: string) => {
      const r = addLayerNorm(t, add, ctx.get(`${L}.${name}.weight`), ctx.get(`${L}.${name}.bias`), TORCH_LN_EPS);
      released(null, t, add);
      return r;
    };
    const lin = (t: Tensor, name: string) => ctx.linear(t, `${L}.${name}`);
    const heads = (t: Tensor, n: number) => released(reshape(t, [N, n, H, dh]), t);
    // The residual continues from the normed queries (h = qn + o below), so x itself is done with after norm1.
    let qn: Tensor;
    if (branch) {
      const r = addLn(x, branch, 'norm1');
      r.sum.dispose();
      qn = r.y;
    } else qn = released(ln(x, 'norm1'), x);
    const kn = ln(image, 'normk');
    const kv = released(concat([qn, kn], 1), kn);
    const S = kv.shape[1];
    const q = heads(lin(qn, 'attention.query'), Q);
    const k = heads(lin(kv, 'attention.key'), S);
    const v = heads(released(lin(kv, 'attention.value'), kv), S);
    const c = released(attention(q, k, v, {
      causal: false, dropoutP: ctx.training ? cfg.attentionProbsDropoutProb : 0, seed: ctx.nextSeed(),
    }), q, k, v);
    const c2 = reshape(c, [N, Q, A]);
    const o = released(lin(c2, 'output.out_proj'), c2, c);
    const { sum: h, y: g } = addLn(qn, o, 'output.norm2');
    const w1 = lin(g, 'output.mlp.w1'), w3 = released(lin(g, 'output.mlp.w3'), g);
    const act = released(swiglu(w1, w3), w1, w3);
    const f = released(ln(act, 'output.mlp.ffn_ln', cfg.layerNormEps), act);
    branch = released(lin(f, 'output.mlp.w2'), f);
    x = h;
  }
  if (branch) x = released(add(x, branch), x, branch);
  const y = released(ctx.linear(x, 'abstractor.visual_fc'), x);
  const eos = expandBatch(ctx.get('abstractor.vit_eos'), N);
  return released(concat([y, eos], 1), y, eos);
}
