// An activation feeding a linear layer, as one autograd node that keeps the activation's input but not its output:
// the backward computes the output again for the weight gradient. For CLIP's MLP (fc1 → quick_gelu → fc2) that is
// one [tokens, 4·width] tensor per layer less between the forward and the backward (24 of them for ViT-L/14) for an
// elementwise pass over it in the backward. The numbers are those of quickGelu() then linear(): the same kernels on
// the same inputs.
import { needsGrad, record } from '../autograd.ts';
import { Tensor, sameBackend } from '../tensor.ts';
import { linearDims, linearHandle, linearParamGrads } from './matmul.ts';
import { wrap } from './util.ts';
import type { NativeTensor } from '../../native.ts';

/** linear(quickGelu(h), w, bias) with quickGelu(h) not kept for backward. h [..., K], w [N, K], bias [N]. */
export function quickGeluLinear(h: Tensor, w: Tensor, bias?: Tensor | null): Tensor {
  const be = sameBackend('quickGeluLinear', h, w, bias);
  const { rows, K, N, outShape } = linearDims('quickGeluLinear', h, w, bias);
  const hShape = [...h.shape];
  const act = (x: Tensor) => {
    const a = be.quickGeluForward(x.handle), a2 = a.view([rows, K]);
    a.dispose();
    return a2;
  };
  const a2 = act(h);
  const y = wrap(be, linearHandle(be, a2, w, bias, outShape));
  a2.dispose();
  if (needsGrad(h, w, bias)) {
    // h is read by both gradients (dh through the activation's derivative, dW through the recomputed activation);
    // W only by dh. When both are wanted, one pass over h gives dh and the activation again.
    record('quickGeluLinear', [h, w, bias], [y], [h, h.requiresGrad ? w : null], ([g], [sh, sw], needs) => {
      const g2 = g!.handle.view([rows, N]);
      let gh: Tensor | null = null, ra: NativeTensor | null = null;
      if (needs[0]) {
        const da = be.matmul(g2, sw.handle, false, false, 1), da4 = da.view(hShape);
        if (needs[1]) {
          const [dh, a] = be.quickGeluBackwardForward(da4, sh.handle);
          gh = wrap(be, dh);
          ra = a.view([rows, K]);
          a.dispose();
        } else {
          gh = wrap(be, be.quickGeluBackward(da4, sh.handle));
        }
        da.dispose();
        da4.dispose();
      } else if (needs[1]) {
        ra = act(sh);
      }
      const [gw, gb] = linearParamGrads(be, g2, ra, N, needs[2]);
      ra?.dispose();
      g2.dispose();
      return [gh, gw, gb];
    });
  }
  return y;
}
