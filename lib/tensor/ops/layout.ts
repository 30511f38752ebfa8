// Shape and sequence-layout ops with backward rules: reshape, concat, slice, gather (embedding), row splicing.
import { lowPrecisionLeafGrads, needsGrad, record } from '../autograd.ts';
import { ShapeError } from '../errors.ts';
import { Tensor, inputBackend, sameBackend, zeros } from '../tensor.ts';
import { prod, wrap } from './util.ts';
import type { WorkingCopies } from '../working-copies.ts';

/** Same storage, another shape (a view); the gradient is reshaped back. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  inputBackend('reshape', x);
  const s = [...shape];
  const neg = s.indexOf(-1);
  if (neg >= 0) s[neg] = prod(x.shape) / -prod(s);
  if (prod(s) !== prod(x.shape) || s.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new ShapeError(`reshape: cannot view ${x.describe()} as [${shape.join(',')}]`, 'reshape');
  }
  const y = x.share(s);
  if (needsGrad(x)) record('reshape', [x], [y], [], ([g]) => [g!.share(x.shape)]);
  return y;
}

export function concat(xs: Tensor[], axis: number): Tensor {
  const be = sameBackend('concat', ...xs);
  const y = wrap(be, be.concat(xs.map((t) => t.handle), axis));
  if (needsGrad(...xs)) {
    const ax = axis < 0 ? axis + xs[0].ndim : axis;
    const lens = xs.map((t) => t.shape[ax]);
    record('concat', xs, [y], [], ([g], _s, needs) => {
      let off = 0;
      return lens.map((len, i) => {
        const start = off;
        off += len;
        return needs[i] ? wrap(be, be.slice(g!.handle, ax, start, len)) : null;
      });
    });
  }
  return y;
}

export function slice(x: Tensor, axis: number, start: number, length: number): Tensor {
  const be = inputBackend('slice', x);
  const y = wrap(be, be.slice(x.handle, axis, start, length));
  if (needsGrad(x)) {
    // (x's device read now: x may be disposed by the time the backward runs, e.g. an activation freed by its scope)
    const device = x.device;
    record('slice', [x], [y], [], ([g]) => {
      const gx = zeros(x.shape, { device, dtype: g!.dtype });
      be.sliceAssign(gx.handle, g!.handle, axis, start, false);
      return [gx];
    });
  }
  return y;
}

/** x cut along `axis` into consecutive pieces of the given lengths (which cover the axis). One tape entry: the
 *  gradient is one concat of the pieces' gradients (zeros for a piece without one), instead of a zero-filled copy of
 *  x per piece and their sum, as slicing each piece would cost (the ViT's fused q|k|v). */
export function split(x: Tensor, axis: number, lengths: number[]): Tensor[] {
  inputBackend('split', x);
  const ax = axis < 0 ? axis + x.ndim : axis;
  if (lengths.reduce((a, b) => a + b, 0) !== x.shape[ax] || lengths.some((l) => !Number.isInteger(l) || l <= 0)) {
    throw new ShapeError(`split: lengths [${lengths.join(',')}] do not cover axis ${axis} of ${x.describe()}`, 'split');
  }
  const be = x.backend;
  const starts = lengths.map((_, i) => lengths.slice(0, i).reduce((a, b) => a + b, 0));
  const ys = lengths.map((len, i) => wrap(be, be.slice(x.handle, ax, starts[i], len)));
  if (needsGrad(x)) {
    const device = x.device; // (as in slice: x may be gone when the backward runs)
    record('split', [x], ys, [], (gs) => {
      const zs: Tensor[] = [];
      const dtype = gs.find((g) => g)!.dtype;
      const parts = gs.map((g, i) => g ?? (zs[zs.length] = zeros(ys[i].shape, { device, dtype })));
      const gx = wrap(be, be.concat(parts.map((t) => t.handle), ax));
      for (const z of zs) z.dispose();
      return [gx];
    });
  }
  return ys;
}

/** Rows of `table` picked by i32 `ids` (embedding lookup): [ids..., rest of table's shape]. */
export function gatherRows(table: Tensor, ids: Tensor): Tensor {
  const be = sameBackend('gatherRows', table, ids);
  const y = wrap(be, be.gatherRows(table.handle, ids.handle));
  if (needsGrad(table)) {
    const device = table.device;
    record('gatherRows', [table, ids], [y], [ids], ([g], [sid]) => {
      const gt = zeros(table.shape, { device, dtype: g!.dtype });
      be.scatterRows(gt.handle, sid.handle, g!.handle, true);
      return [gt, null];
    });
  }
  return y;
}
export const embedding = gatherRows;

/**
 * `base` [R, C] with rows `ids` (i32 [n], distinct) replaced by `src` [n, C]: how image tokens are spliced into the
 * text embedding sequence. Gradients: base gets g with those rows zeroed, src gets those rows of g.
 */
export function spliceRows(base: Tensor, ids: Tensor, src: Tensor): Tensor {
  const be = sameBackend('spliceRows', base, ids, src);
  const yh = be.clone(base.handle);
  be.scatterRows(yh, ids.handle, src.handle, false);
  const y = wrap(be, yh);
  if (needsGrad(base, src)) {
    const srcShape = src.shape, device = base.device;
    record('spliceRows', [base, ids, src], [y], [ids], ([g], [sid], needs) => {
      let gb: Tensor | null = null, gs: Tensor | null = null;
      if (needs[0]) {
        gb = wrap(be, be.clone(g!.handle));
        const z = zeros(srcShape, { device, dtype: g!.dtype });
        be.scatterRows(gb.handle, sid.handle, z.handle, false);
        z.dispose();
      }
      if (needs[2]) gs = wrap(be, be.gatherRows(g!.handle, sid.handle));
      return [gb, null, gs];
    });
  }
  return y;
}

/** [N, C, H, W] images to [N, patches, C·p·p] (no gradient: pixels are data). */
export function patchify(img: Tensor, patch: number): Tensor {
  const be = inputBackend('patchify', img);
  return wrap(be, be.patchify(img.handle, patch));
}

/** cast of every tensor (one launch on a GPU): the working copies of a layer's weights under mixed precision. One
 *  tape entry for the list, so the gradients come back in one launch too, once every output's gradient is final. */
export function castMany(xs: Tensor[], dtype: Tensor['dtype']): Tensor[] {
  if (!xs.length) return [];
  const be = sameBackend('castMany', ...xs);
  const ys = be.castMany(xs.map((x) => x.handle), dtype).map((h) => wrap(be, h));
  if (needsGrad(...xs)) recordCastMany(be, xs, ys);
  return ys;
}

/** castMany(xs, store.dtype) with the copies kept between forwards by `store` (working-copies.ts): nothing is cast
 *  unless a copy is missing. The tape entry and the gradients are castMany's. */
export function castCached(xs: Tensor[], store: WorkingCopies): Tensor[] {
  if (!xs.length) return [];
  const be = sameBackend('castCached', ...xs);
  const ys = store.of(xs).map((c) => c.share());  // (views: the forward's scope drops these, the store keeps its own)
  if (needsGrad(...xs)) recordCastMany(be, xs, ys);
  return ys;
}

function recordCastMany(be: Tensor['backend'], xs: Tensor[], ys: Tensor[]): void {
  record('castMany', xs, ys, [], (gs, _saved, needs) => {
    const live = gs.flatMap((g, i) => (g && needs[i] ? [i] : []));
    // A parameter's gradient may stay in the working copy's dtype (BackwardOptions.lowPrecisionLeafGrads): handed
    // on as it is (a handle on the same storage), not cast.
    const asIs = live.filter((i) => keepsLowPrecision(xs[i], gs[i]!));
    const cast_ = live.filter((i) => !asIs.includes(i));
    const back = cast_.length ? be.castMany(cast_.map((i) => gs[i]!.handle), xs[cast_[0]].dtype) : [];
    const out: (Tensor | null)[] = xs.map(() => null);
    cast_.forEach((i, j) => { out[i] = wrap(be, back[j]); });
    for (const i of asIs) out[i] = gs[i]!.share();
    return out;
  });
}

/** Whether the gradient g of x is left in its dtype instead of being cast to x's: x a parameter (a leaf), g its
 *  bf16 working copy's gradient, x fp32, during a backward with lowPrecisionLeafGrads (the same values either way). */
function keepsLowPrecision(x: Tensor, g: Tensor): boolean {
  return lowPrecisionLeafGrads() && !x.fromTape && x.dtype === 'f32' && g.dtype === 'bf16';
}

/** x converted to another dtype (f32 ↔ bf16); the gradient is converted back (or, for a parameter's gradient under
 *  BackwardOptions.lowPrecisionLeafGrads, handed on in the compute dtype). */
export function cast(x: Tensor, dtype: Tensor['dtype']): Tensor {
  inputBackend('cast', x);
  if (x.dtype === dtype) return x.share();
  const y = wrap(x.backend, x.backend.cast(x.handle, dtype));
  if (needsGrad(x)) {
    record('cast', [x], [y], [], ([g]) => [keepsLowPrecision(x, g!) ? g!.share() : wrap(x.backend, x.backend.cast(g!.handle, x.dtype))]);
  }
  return y;
}
