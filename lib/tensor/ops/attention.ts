// Fused scaled-dot-product attention: one native call forward, one backward (probabilities are recomputed from the
// saved log-sum-exp, never stored). q [B, Tq, H, D], k/v [B, Tk, H, D] in the layout linear layers produce.
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

/** softmax(scale · q kᵀ + mask) v per (batch, head), with optional causal masking and dropout. */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const mask = opts.keyMask ?? null;
  const be = sameBackend('attention', q, k, v, mask);
  if (q.ndim !== 4) throw new ShapeError(`attention: q must be [B, Tq, H, D], got ${q.describe()}`, 'attention');
  const causal = opts.causal ?? false;
  const scale = opts.scale ?? 1 / Math.sqrt(q.shape[3]);
  const p = opts.dropoutP ?? 0;
  if (p > 0 && opts.seed === undefined) {
    throw new ArgumentError('attention: dropoutP > 0 needs a seed (a fixed default would repeat one mask every step)', 'attention');
  }
  const seed = opts.seed ?? 0;
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
