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

// ---- the pre-norm residual add fused with the norm that follows it ----
// A pre-norm transformer computes s = x + branch, then norm(s) for the next sub-layer, and keeps s as its residual
// stream. One native pass forms s and normalises it (s is not read back from memory for the statistics), and the
// backward adds the gradient s gets from its other uses into the norm's input gradient in the same pass (instead of
// a separate accumulation). The numbers are those of add() then layerNorm()/rmsNorm(), bit for bit.

/** Gradient routing shared by both fused norms: the input gradient (norm backward + gs, or gs alone) to x and r. */
function residualGrads(gIn: Tensor | null, needX: boolean, needR: boolean): [Tensor | null, Tensor | null] {
  if (!gIn) return [null, null];
  if (needX && needR) return [gIn, gIn.share()];
  return needX ? [gIn, null] : [null, gIn];
}

/** s = x + r and y = LayerNorm(s) (w, b optional), as one op. */
export function addLayerNorm(x: Tensor, r: Tensor, w: Tensor | null, b: Tensor | null, eps: number): { sum: Tensor; y: Tensor } {
  const be = sameBackend('addLayerNorm', x, r, w, b);
  const [yh, meanH, rstdH, sumH] = be.layerNormForward(x.handle, w?.handle ?? null, b?.handle ?? null, eps, r.handle);
  const y = wrap(be, yh), sum = wrap(be, sumH);
  if (!needsGrad(x, r, w, b)) {
    meanH.dispose();
    rstdH.dispose();
    return { sum, y };
  }
  const mean = wrap(be, meanH), rstd = wrap(be, rstdH);
  record('addLayerNorm', [x, r, w, b], [sum, y], [sum, mean, rstd, w], ([gs, gy], [ss, sm, sr, sw], needs) => {
    const needIn = needs[0] || needs[1], needW = needs[2] || needs[3];
    let gIn: Tensor | null = null, gw: Tensor | null = null, gb: Tensor | null = null;
    if (gy && (needIn || needW)) {
      const [gx, gwH, gbH] = be.layerNormBackward(gy.handle, ss.handle, sw?.handle ?? null, sm.handle, sr.handle, needIn,
        needW, needIn ? gs?.handle ?? null : null);
      gIn = wrapOpt(be, gx);
      gw = wrapOpt(be, gwH);
      gb = wrapOpt(be, gbH);
    } else if (needIn && gs) gIn = gs.share();
    return [...residualGrads(gIn, needs[0], needs[1]), gw, gb];
  });
  mean.dispose();
  rstd.dispose();
  return { sum, y };
}

/** s = x + r and y = RMSNorm(s) (HF LLaMA), as one op. */
export function addRmsNorm(x: Tensor, r: Tensor, w: Tensor, eps: number): { sum: Tensor; y: Tensor } {
  const be = sameBackend('addRmsNorm', x, r, w);
  const [yh, rstdH, sumH] = be.rmsNormForward(x.handle, w.handle, eps, r.handle);
  const y = wrap(be, yh), sum = wrap(be, sumH);
  if (!needsGrad(x, r, w)) {
    rstdH.dispose();
    return { sum, y };
  }
  const rstd = wrap(be, rstdH);
  record('addRmsNorm', [x, r, w], [sum, y], [sum, w, rstd], ([gs, gy], [ss, sw, sr], needs) => {
    const needIn = needs[0] || needs[1];
    let gIn: Tensor | null = null, gw: Tensor | null = null;
    if (gy && (needIn || needs[2])) {
      const [gx, gwH] = be.rmsNormBackward(gy.handle, ss.handle, sw.handle, sr.handle, needIn, needs[2],
        needIn ? gs?.handle ?? null : null);
      gIn = wrapOpt(be, gx);
      gw = wrapOpt(be, gwH);
    } else if (needIn && gs) gIn = gs.share();
    return [...residualGrads(gIn, needs[0], needs[1]), gw];
  });
  rstd.dispose();
  return { sum, y };
}
