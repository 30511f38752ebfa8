// matmul (batched, transposes) and linear (x Wᵀ + b), with backward rules that skip frozen operands.
import { needsGrad, record } from '../autograd.ts';
import { ShapeError } from '../errors.ts';
import type { NativeBackend, NativeTensor } from '../../native.ts';
import { Tensor, sameBackend } from '../tensor.ts';
import { prod, wrap } from './util.ts';

/** op(a) · op(b), batched over leading axes; b may be 2-D (shared by every batch). */
export function matmul(a: Tensor, b: Tensor, transA = false, transB = false): Tensor {
  const be = sameBackend('matmul', a, b);
  const y = wrap(be, be.matmul(a.handle, b.handle, transA, transB, 1));
  if (needsGrad(a, b)) {
    const sharedB = b.ndim === 2 && a.ndim > 2;
    // Each operand is read only for the other's gradient.
    record('matmul', [a, b], [y], [b.requiresGrad ? a : null, a.requiresGrad ? b : null], ([g], [sa, sb], needs) => {
      const mm = (x: Tensor, z: Tensor, tx: boolean, tz: boolean) => wrap(be, be.matmul(x.handle, z.handle, tx, tz, 1));
      let ga: Tensor | null = null, gb: Tensor | null = null;
      if (needs[0]) {
        if (!transA) ga = mm(g!, sb, false, !transB);
        else ga = transB ? mm(sb, g!, true, true) : mm(sb, g!, false, true);
      }
      if (needs[1]) {
        if (sharedB && !transA) {
          const K = sa.shape[sa.ndim - 1], N = g!.shape[g!.ndim - 1];
          const a2 = sa.share([prod(sa.shape.slice(0, -1)), K]), g2 = g!.share([prod(g!.shape.slice(0, -1)), N]);
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

/** The sizes of x [..., K] · Wᵀ (W [N, K]) + bias [N]; throws a ShapeError naming `op` when they do not fit. */
export function linearDims(op: string, x: Tensor, w: Tensor, bias?: Tensor | null): { rows: number; K: number; N: number; outShape: number[] } {
  const K = x.shape[x.ndim - 1];
  if (w.ndim !== 2 || w.shape[1] !== K) {
    throw new ShapeError(`${op}: weight ${w.describe()} does not fit input ${x.describe()} (want [N, ${K}])`, op);
  }
  const N = w.shape[0];
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== N)) {
    throw new ShapeError(`${op}: bias ${bias.describe()} must be [${N}]`, op);
  }
  return { rows: prod(x.shape.slice(0, -1)), K, N, outShape: [...x.shape.slice(0, -1), N] };  // (rows also when K = 0)
}

/** y = x2 [rows, K] · Wᵀ + bias as a native handle shaped outShape (the bias in the GEMM's epilogue where it can be). */
export function linearHandle(be: NativeBackend, x2: NativeTensor, w: Tensor, bias: Tensor | null | undefined, outShape: number[]): NativeTensor {
  const yh = bias ? be.linearForward(x2, w.handle, bias.handle) : be.matmul(x2, w.handle, false, true, 1);
  const y = yh.view(outShape);
  yh.dispose();
  return y;
}

/** A linear layer's weight gradient g2ᵀ x2 (when x2 is given) and bias gradient (the column sums of g2, when asked):
 *  one native call for both, so that a GPU takes the bias gradient from the weight-gradient GEMM's epilogue. */
export function linearParamGrads(be: NativeBackend, g2: NativeTensor, x2: NativeTensor | null, N: number,
  needBias: boolean): [Tensor | null, Tensor | null] {
  if (!x2) return [null, needBias ? wrap(be, be.sumRows(g2, [N])) : null];
  const [gw, gb] = be.linearWeightGrad(g2, x2, needBias);
  return [wrap(be, gw), gb ? wrap(be, gb) : null];
}

/** x [..., K] · Wᵀ (W [N, K]) + bias [N]. The frozen-weight case computes no dW. */
export function linear(x: Tensor, w: Tensor, bias?: Tensor | null): Tensor {
  const be = sameBackend('linear', x, w, bias);
  const { rows, K, N, outShape } = linearDims('linear', x, w, bias);
  const xShape = [...x.shape];
  const x2 = x.handle.view([rows, K]);
  const y = wrap(be, linearHandle(be, x2, w, bias, outShape));
  x2.dispose();
  if (needsGrad(x, w, bias)) {
    // x is read only for dW and W only for dx: a frozen layer's input is not kept for backward (stage 1 back-propagates
    // through the frozen LLM), nor a frozen input's weight.
    record('linear', [x, w, bias], [y], [w.requiresGrad ? x : null, x.requiresGrad ? w : null], ([g], [sx, sw], needs, into) => {
      const g2 = g!.handle.view([rows, N]);
      let gx: Tensor | null = null, gw: Tensor | null = null, gb: Tensor | null = null;
      const acc = into[0];
      if (needs[0] && acc && acc.dtype === g!.dtype) {
        // x's gradient so far (another op read x too): dx added into it by the GEMM (beta = 1), no separate sum
        const a2 = acc.handle.view([rows, K]);
        be.matmulInto(a2, g2, sw.handle, false, false, 1, 1);
        a2.dispose();
        gx = acc;
      } else if (needs[0]) {
        const h = be.matmul(g2, sw.handle, false, false, 1);
        gx = wrap(be, h.view(xShape));
        h.dispose();
      }
      const x2b = needs[1] ? sx.handle.view([rows, K]) : null;
      [gw, gb] = linearParamGrads(be, g2, x2b, N, needs[2]);
      x2b?.dispose();
      g2.dispose();
      return [gx, gw, gb];
    });
  }
  return y;
}
