// Fused scaled-dot-product attention: one native call forward, one backward (probabilities are recomputed from the
// saved log-sum-exp, never stored). q [B, Tq, H, D], k/v [B, Tk, H, D] in the layout linear layers produce; or, for
// self-attention behind a fused q|k|v projection, the packed qkv [B, T, H, 3, D] itself (attentionQkv).
import { needsGrad, record } from '../autograd.ts';
import { ArgumentError, ShapeError } from '../errors.ts';
import { Tensor, sameBackend } from '../tensor.ts';
import { wrap } from './util.ts';

export interface AttentionOptions {
  /** Query i sees keys j <= i + Tk - Tq (the last query aligned with the last key). */
  causal?: boolean;
  /** Multiplies q·k; defaults to 1/sqrt(D). */
  scale?: number;
  /** i32 [B, Tk], nonzero = attend. A query that sees no key gets a zero output and zero gradients. */
  keyMask?: Tensor | null;
  /** Dropout on the probabilities (inverted: kept ones are scaled by 1/(1-p)). */
  dropoutP?: number;
  /** Dropout seed (required when dropoutP > 0): the mask is a pure function of (seed, b, h, i, j). */
  seed?: number;
}

// The native calls' scalar arguments from `opts` (D: the head dim, for the default scale).
function resolve(op: string, opts: AttentionOptions, D: number) {
  const p = opts.dropoutP ?? 0;
  if (p > 0 && opts.seed === undefined) {
    throw new ArgumentError(`${op}: dropoutP > 0 needs a seed (a fixed default would repeat one mask every step)`, op);
  }
  return { causal: opts.causal ?? false, scale: opts.scale ?? 1 / Math.sqrt(D), p, seed: opts.seed ?? 0 };
}

/** softmax(scale · q kᵀ + mask) v per (batch, head), with optional causal masking and dropout. */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const mask = opts.keyMask ?? null;
  const be = sameBackend('attention', q, k, v, mask);
  if (q.ndim !== 4) throw new ShapeError(`attention: q must be [B, Tq, H, D], got ${q.describe()}`, 'attention');
  const { causal, scale, p, seed } = resolve('attention', opts, q.shape[3]);
  const [oh, lh] = be.attentionForward(q.handle, k.handle, v.handle, mask?.handle ?? null, causal, scale, p, seed);
  const out = wrap(be, oh), lse = wrap(be, lh);
  if (needsGrad(q, k, v)) {
    const saved = mask ? [q, k, v, out, lse, mask] : [q, k, v, out, lse];
    record('attention', [q, k, v], [out], saved, ([g], [sq, sk, sv, so, sl, sm], needs) => {
      // The kernel produces all three gradients at once (dQ and dK share dS); the unneeded ones are dropped.
      const hs = be.attentionBackward(sq.handle, sk.handle, sv.handle, so.handle, sl.handle, g!.handle,
        sm?.handle ?? null, causal, scale, p, seed);
      return hs.map((h, i) => {
        if (needs[i]) return wrap(be, h);
        h.dispose();
        return null;
      });
    });
  }
  lse.dispose();  // the tape holds its own handle when backward needs it
  return out;
}

/**
 * Self-attention of a packed qkv [B, T, H, 3, D] — per token and head [q | k | v], the output of a fused q|k|v
 * projection viewed as such — to [B, T, H, D]: attention(q, k, v) of its three parts, the same numbers bit for bit
 * (options as attention's, Tq = Tk = T), without splitting them out. Its gradient is one [B, T, H, 3, D] tensor in
 * qkv's layout, so the projection's backward reads it as it is (split's backward concatenated three). The CUDA
 * tensor-core kernels read q, k, v and write the gradient in place; elsewhere the backend copies them.
 */
export function attentionQkv(qkv: Tensor, opts: AttentionOptions = {}): Tensor {
  const mask = opts.keyMask ?? null;
  const be = sameBackend('attentionQkv', qkv, mask);
  if (qkv.ndim !== 5 || qkv.shape[3] !== 3) {
    throw new ShapeError(`attentionQkv: qkv must be [B, T, H, 3, D], got ${qkv.describe()}`, 'attentionQkv');
  }
  const { causal, scale, p, seed } = resolve('attentionQkv', opts, qkv.shape[4]);
  const [oh, lh] = be.attentionQkvForward(qkv.handle, mask?.handle ?? null, causal, scale, p, seed);
  const out = wrap(be, oh), lse = wrap(be, lh);
  if (needsGrad(qkv)) {
    const saved = mask ? [qkv, out, lse, mask] : [qkv, out, lse];
    record('attentionQkv', [qkv], [out], saved, ([g], [sx, so, sl, sm]) =>
      [wrap(be, be.attentionQkvBackward(sx.handle, so.handle, sl.handle, g!.handle, sm?.handle ?? null, causal, scale,
        p, seed))]);
  }
  lse.dispose();  // the tape holds its own handle when backward needs it
  return out;
}
