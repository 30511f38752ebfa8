// Activations (quick GELU for CLIP, SiLU, SwiGLU for the LLaMA/abstractor MLPs), softmax over the last axis and
// inverted dropout, with backward rules.
import { needsGrad, record } from '../autograd.ts';
import { Tensor, inputBackend, sameBackend } from '../tensor.ts';
import { reshape } from './layout.ts';
import { wrap, wrapOpt } from './util.ts';

/** x · sigmoid(1.702 x) (CLIP's "quick_gelu"). */
export function quickGelu(x: Tensor): Tensor {
  const be = inputBackend('quickGelu', x);
  const y = wrap(be, be.quickGeluForward(x.handle));
  if (needsGrad(x)) record('quickGelu', [x], [y], [x], ([g], [sx]) => [wrap(be, be.quickGeluBackward(g!.handle, sx.handle))]);
  return y;
}

/** x · sigmoid(x). */
export function silu(x: Tensor): Tensor {
  const be = inputBackend('silu', x);
  const y = wrap(be, be.siluForward(x.handle));
  if (needsGrad(x)) record('silu', [x], [y], [x], ([g], [sx]) => [wrap(be, be.siluBackward(g!.handle, sx.handle))]);
  return y;
}

/** silu(gate) · up, fused (one pass, no silu(gate) intermediate). */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  const be = sameBackend('swiglu', gate, up);
  const y = wrap(be, be.swigluForward(gate.handle, up.handle));
  if (needsGrad(gate, up)) {
    record('swiglu', [gate, up], [y], [gate, up], ([g], [sg, su], needs) => {
      const [gg, gu] = be.swigluBackward(g!.handle, sg.handle, su.handle, needs[0], needs[1]);
      return [wrapOpt(be, gg), wrapOpt(be, gu)];
    });
  }
  return y;
}

/** Softmax over the last axis (max-subtracted); the backward uses the saved output. */
export function softmax(x: Tensor): Tensor {
  const be = inputBackend('softmax', x);
  const y = wrap(be, be.softmaxForward(x.handle));
  if (needsGrad(x)) record('softmax', [x], [y], [y], ([g], [sy]) => [wrap(be, be.softmaxBackward(g!.handle, sy.handle))]);
  return y;
}

/**
 * Inverted dropout: each element is zeroed with probability p, the rest scaled by 1/(1-p). The mask is a pure function
 * of (seed, element index), so the backward regenerates it; p == 0 is the identity (a view, no copy).
 */
export function dropout(x: Tensor, p: number, seed: number): Tensor {
  if (p === 0) return reshape(x, x.shape);
  const be = inputBackend('dropout', x);
  const y = wrap(be, be.dropoutForward(x.handle, p, seed));
  if (needsGrad(x)) record('dropout', [x], [y], [], ([g]) => [wrap(be, be.dropoutBackward(g!.handle, p, seed))]);
  return y;
}
