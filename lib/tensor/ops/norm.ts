// LayerNorm and RMSNorm over the last axis. The per-row statistics (mean, rstd) the forward computes are kept for the
// backward instead of recomputed; a frozen weight/bias costs no weight-gradient work.
import { needsGrad, record } from '../autograd.ts';
import { Tensor, sameBackend } from '../tensor.ts';
import { wrap, wrapOpt } from './util.ts';

/** LayerNorm over the last axis; w and b ([C]) are optional (null: no affine part). */
export function layerNorm(x: Tensor, w: Tensor | null, b: Tensor | null, eps: number): Tensor {
  const be = sameBackend('layerNorm', x, w, b);
  const [yh, meanH, rstdH] = be.layerNormForward(x.handle, w?.handle ?? null, b?.handle ?? null, eps);
  const y = wrap(be, yh);
  if (!needsGrad(x, w, b)) {
    meanH.dispose();
    rstdH.dispose();
    return y;
  }
  const mean = wrap(be, meanH), rstd = wrap(be, rstdH);
  const hasW = w !== null;
  record('layerNorm', [x, w, b], [y], hasW ? [x, mean, rstd, w] : [x, mean, rstd], ([g], saved, needs) => {
    const [sx, sm, sr] = saved;
    const sw = hasW ? saved[3] : null;
    // needW asks for gw (when there is a weight) and gb together; a gradient not asked for is dropped by the tape.
    const [gx, gw, gb] = be.layerNormBackward(g!.handle, sx.handle, sw?.handle ?? null, sm.handle, sr.handle,
      needs[0], needs[1] || needs[2]);
    return [wrapOpt(be, gx), wrapOpt(be, gw), wrapOpt(be, gb)];
  });
  mean.dispose(); // the tape holds its own handles
  rstd.dispose();
  return y;
}

/** RMSNorm as in HF LLaMA: w · x · rsqrt(mean(x²) + eps), over the last axis. */
export function rmsNorm(x: Tensor, w: Tensor, eps: number): Tensor {
  const be = sameBackend('rmsNorm', x, w);
  const [yh, rstdH] = be.rmsNormForward(x.handle, w.handle, eps);
  const y = wrap(be, yh);
  if (!needsGrad(x, w)) {
    rstdH.dispose();
    return y;
  }
  const rstd = wrap(be, rstdH);
  record('rmsNorm', [x, w], [y], [x, w, rstd], ([g], [sx, sw, sr], needs) => {
    const [gx, gw] = be.rmsNormBackward(g!.handle, sx.handle, sw.handle, sr.handle, needs[0], needs[1]);
    return [wrapOpt(be, gx), wrapOpt(be, gw)];
  });
  rstd.dispose();
  return y;
}
