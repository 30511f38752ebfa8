// matmul (batched, transposes) and linear (x Wᵀ + b), with backward rules that skip frozen operands.
import { needsGrad, record } from '../autograd.ts';
import { ShapeError } from '../errors.ts';
import { Tensor, sameBackend } from '../tensor.ts';
import { prod, wrap } from './util.ts';

/** op(a) · op(b), batched over leading axes; b may be 2-D (shared by every batch). */
export function matmul(a: Tensor, b: Tensor, transA = false, transB = false): Tensor {
  const be = sameBackend('matmul', a, b);
  const y = wrap(be, be.matmul(a.handle, b.handle, transA, transB, 1));
  if (needsGrad(a, b)) {
    const sharedB = b.ndim === 2 && a.ndim > 2;
    record('matmul', [a, b], [y], [a, b], ([g], [sa, sb], needs) => {
      const mm = (x: Tensor, z: Tensor, tx: boolean, tz: boolean) => wrap(be, be.matmul(x.handle, z.handle, tx, tz, 1));
      let ga: Tensor | null = null, gb: Tensor | null = null;
      if (needs[0]) {
        if (!transA) ga = mm(g!, sb, false, !transB);
        else ga = transB ? mm(sb, g!, true, true) : mm(sb, g!, false, true);
      }
      if (needs[1]) {
        if (sharedB && !transA) {
          const K = sa.shape[sa.ndim - 1], N = g!.shape[g!.ndim - 1];
          const a2 = sa.share([prod(sa.shape) / K, K]), g2 = g!.share([prod(g!.shape) / N, N]);
          gb = transB ? mm(g2, a2, true, false) : mm(a2, g2, true, false);
          a2.dispose(); g2.dispose();
        } else {
          let full: Tensor;
          if (!transB) full = transA ? mm(sa, g!, false, false) : mm(sa, g!, true, false);
          else full = transA ? mm(g!, sa, true, true) : mm(g!, sa, true, false);
          if (sharedB) {
            gb = wrap(be, be.sumRows(full.handle, [...b.shape]));
            full.dispose();
          } else gb = full;
        }
      }
      return [ga, gb];
    });
  }
  return y;
}

/** x [..., K] · Wᵀ (W [N, K]) + bias [N]. The frozen-weight case computes no dW. */
export function linear(x: Tensor, w: Tensor, bias?: Tensor | null): Tensor {
  const be = sameBackend('linear', x, w, bias);
  const K = x.shape[x.ndim - 1];
  if (w.ndim !== 2 || w.shape[1] !== K) {
    throw new ShapeError(`linear: weight ${w.describe()} does not fit input ${x.describe()} (want [N, ${K}])`, 'linear');
  }
  const N = w.shape[0];
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== N)) {
    throw new ShapeError(`linear: bias ${bias.describe()} must be [${N}]`, 'linear');
  }
  const rows = prod(x.shape) / K;
  const outShape = [...x.shape.slice(0, -1), N];
  const x2 = x.handle.view([rows, K]);
  const yh = bias ? be.linearForward(x2, w.handle, bias.handle) : be.matmul(x2, w.handle, false, true, 1);
  x2.dispose();
  const y = wrap(be, yh.view(outShape));
  yh.dispose();
  if (needsGrad(x, w, bias)) {
    record('linear', [x, w, bias], [y], [x, w], ([g], [sx, sw], needs) => {
      const g2 = g!.handle.view([rows, N]);
      let gx: Tensor | null = null, gw: Tensor | null = null, gb: Tensor | null = null;
      if (needs[0]) {
        const h = be.matmul(g2, sw.handle, false, false, 1);
        gx = wrap(be, h.view([...sx.shape]));
        h.dispose();
      }
      if (needs[1]) {
        const x2b = sx.handle.view([rows, K]);
        gw = wrap(be, be.matmul(g2, x2b, true, false, 1));
        x2b.dispose();
      }
      if (needs[2]) gb = wrap(be, be.sumRows(g2, [N]));
      g2.dispose();
      return [gx, gw, gb];
    });
  }
  return y;
}
