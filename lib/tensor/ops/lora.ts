// LoRA linear: y = x Wᵀ + scale · (dropout(x) Aᵀ) Bᵀ with the base weight W frozen. One fused native call each way;
// the backward computes gradients for x (when asked), A and B — never for W.
import { isGradEnabled, needsGrad, record } from '../autograd.ts';
import { ArgumentError } from '../errors.ts';
import { Tensor, sameBackend } from '../tensor.ts';
import { wrap, wrapOpt } from './util.ts';

export interface LoraOptions {
  /** Dropout probability on the LoRA branch's input (PEFT's lora_dropout); 0 (the default) in evaluation. */
  dropoutP?: number;
  /** Mask seed (integer in [0, 2^53)); required when dropoutP > 0. The mask is hash_u01(seed, flat index of x). */
  seed?: number;
}

/**
 * x [..., K], w [N, K] (frozen), a [r, K], b [N, r] -> y [..., N] = x wᵀ + scale · (drop(x) aᵀ) bᵀ.
 * PEFT's scale is lora_alpha / r.
 */
export function loraLinear(x: Tensor, w: Tensor, a: Tensor, b: Tensor, scale: number, opts: LoraOptions = {}): Tensor {
  const be = sameBackend('loraLinear', x, w, a, b);
  const p = opts.dropoutP ?? 0;
  if (w.requiresGrad && isGradEnabled()) {
    throw new ArgumentError(`loraLinear: the base weight ${w.name ?? w.describe()} must be frozen (requiresGrad = false); ` +
      'LoRA computes no gradient for it', 'loraLinear');
  }
  if (p > 0 && opts.seed === undefined) {
    throw new ArgumentError(`loraLinear: dropoutP ${p} needs a seed (a fresh one per call while training)`, 'loraLinear');
  }
  const seed = opts.seed ?? 0;
  const [yH, xaH] = be.loraForward(x.handle, w.handle, a.handle, b.handle, scale, p, seed);
  const y = wrap(be, yH);
  const xa = wrap(be, xaH);
  if (needsGrad(x, a, b)) {
    record('loraLinear', [x, a, b], [y], [x, w, a, b, xa], ([g], [sx, sw, sa, sb, sxa], needs) => {
      const [gx, ga, gb] = be.loraBackward(g!.handle, sx.handle, sw.handle, sa.handle, sb.handle, sxa.handle, scale, p,
        seed, needs[0]);
      // A and B come together from one call; drop whichever is not asked for.
      if (!needs[1]) ga.dispose();
      if (!needs[2]) gb.dispose();
      return [wrapOpt(be, gx), needs[1] ? wrap(be, ga) : null, needs[2] ? wrap(be, gb) : null];
    });
  }
  xa.dispose(); // the tape keeps its own handle when it needs one
  return y;
}
