// Mixed precision as data: which dtype each parameter is stored in, and which dtype the forward computes in.
//
// With model.dtype bf16 on CUDA: frozen parameters are stored once, in bf16; trainable ones are fp32 masters, cast to
// a bf16 working copy when a forward reads them (ForwardContext: once per forward, however often the weight is
// used), so their gradients come back through the cast as fp32, accumulate over micro-batches in fp32, and AdamW,
// the global norm and clipping all work on fp32. LoRA A/B train, so they are fp32 masters too.
// With model.dtype f32 everything is f32 and nothing is cast. The CPU backend computes in f32 only: there bf16 falls
// back to f32 (a config meant for a GPU still runs under run.device auto on a machine without one).
import type { GroupName } from '../model/params.ts';
import { groupOf as officialGroup } from '../model/params.ts';
import { cast, noGrad, type Tensor } from '../tensor/index.ts';

export type FloatDType = 'f32' | 'bf16';

/** The dtype a forward computes in on `device` (the activations' dtype, and frozen weights' storage). */
export function computeDtype(device: string, requested: FloatDType): FloatDType {
  return device.startsWith('cuda') ? requested : 'f32';
}

export interface PrecisionOptions {
  /** Groups that train (stage.train). */
  train: readonly GroupName[];
  /** The compute dtype (computeDtype's result). */
  dtype: FloatDType;
  /** Group of a parameter name (default: the official key prefixes; unknown keys count as frozen). */
  groupOf?: (name: string) => string | undefined;
}

/** Storage dtype of one parameter: fp32 when it trains (a master), else the compute dtype. */
export function storageDtype(name: string, o: PrecisionOptions): FloatDType {
  const g = (o.groupOf ?? officialGroup)(name);
  return g !== undefined && o.train.includes(g as GroupName) ? 'f32' : o.dtype;
}

/** The storage dtype of every parameter name. */
export function precisionPlan(names: Iterable<string>, o: PrecisionOptions): Map<string, FloatDType> {
  const plan = new Map<string, FloatDType>();
  for (const n of names) plan.set(n, storageDtype(n, o));
  return plan;
}

/**
 * `t` on `device` in `dtype`: t itself when it is there already, else a new tensor (t is disposed). One tensor at a
 * time, so loading a large model never holds two full copies.
 */
export function place(t: Tensor, device: string, dtype: FloatDType): Tensor {
  if (t.device === device && t.dtype === dtype) return t;
  return noGrad(() => {
    const moved = t.device === device ? t : t.to(device);
    const out = moved.dtype === dtype ? moved : cast(moved, dtype);
    if (moved !== t && moved !== out) moved.dispose();
    if (out !== t) t.dispose();
    out.name = t.name;
    return out;
  });
}
