// Rotary position embedding (HF LLaMA rotate-half) on [B, T, H, D]; the backward is the inverse rotation, so nothing
// is saved.
import { needsGrad, record } from '../autograd.ts';
import { Tensor, inputBackend } from '../tensor.ts';
import { wrap } from './util.ts';

/** Rotates x [B, T, H, D] (D even) by the angles of positions pos0 .. pos0+T-1 with base theta. */
export function rope(x: Tensor, pos0 = 0, theta = 10000): Tensor {
  const be = inputBackend('rope', x);
  const y = wrap(be, be.ropeForward(x.handle, pos0, theta));
  if (needsGrad(x)) record('rope', [x], [y], [], ([g]) => [wrap(be, be.ropeBackward(g!.handle, pos0, theta))]);
  return y;
}
