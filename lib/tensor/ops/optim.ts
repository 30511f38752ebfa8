// AdamW (torch.optim.AdamW's update, one fused native call per step), gradient norms and clipping, finiteness checks.
// Optimizer state lives in f32 tensors beside the parameters, created on first use, and can be exported and imported
// by parameter name for checkpoints.
import { ArgumentError, DTypeError, ShapeError } from '../errors.ts';
import { keep } from '../scope.ts';
import { Tensor, sameBackend, zeros } from '../tensor.ts';
import { sameShape, wrap } from './util.ts';
import type { WorkingCopies } from '../working-copies.ts';

export interface AdamWOptions {
  lr: number;
  /** Default (0.9, 0.999), torch's. */
  betas?: [number, number];
  /** Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay for parameters passed without a group; torch's default 0.01. */
  weightDecay?: number;
}

/** Parameters sharing a weight decay (e.g. 0 for norms and biases). */
export interface ParamGroup {
  params: Tensor[];
  weightDecay?: number;
}

/**
 * Exported optimizer state, keyed by parameter name. The tensors are views of the live state: read or copy them before
 * the next step, and dispose them when done.
 */
export interface AdamWState {
  /** Optimizer steps taken. */
  step: number;
  /** Steps taken by each parameter (torch keeps a count per parameter: one without a gradient does not advance). */
  steps: Map<string, number>;
  m: Map<string, Tensor>;
  v: Map<string, Tensor>;
}

interface Slot { m: Tensor; v: Tensor; step: number }

function groupsOf(params: Tensor[] | ParamGroup[], dflt: number): { params: Tensor[]; weightDecay: number }[] {
  if (params.length === 0) return [];
  if (params[0] instanceof Tensor) return [{ params: params as Tensor[], weightDecay: dflt }];
  return (params as ParamGroup[]).map((g) => ({ params: g.params, weightDecay: g.weightDecay ?? dflt }));
}

function checkHyper(lr: number, b1: number, b2: number, eps: number, wd: number): void {
  const bad = (ok: boolean, what: string) => { if (!ok) throw new ArgumentError(`AdamW: ${what}`, 'adamw'); };
  bad(Number.isFinite(lr) && lr >= 0, `lr must be finite and >= 0, got ${lr}`);
  bad(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1, `betas must be in [0, 1), got (${b1}, ${b2})`);
  bad(Number.isFinite(eps) && eps >= 0, `eps must be finite and >= 0, got ${eps}`);
  bad(Number.isFinite(wd) && wd >= 0, `weightDecay must be finite and >= 0, got ${wd}`);
}

export class AdamW {
  /** Learning rate of the next step (schedules set it). */
  lr: number;
  readonly betas: readonly [number, number];
  readonly eps: number;
  readonly weightDecay: number;
  /** Optimizer steps taken (calls of step() that updated at least one parameter). */
  stepCount = 0;
  private readonly slots = new Map<Tensor, Slot>();
  private lastStep: { undo: { p: Tensor; step: number }[]; created: Tensor[]; stepCount: number } | null = null;

  constructor(o: AdamWOptions) {
    this.lr = o.lr;
    this.betas = o.betas ?? [0.9, 0.999];
    this.eps = o.eps ?? 1e-8;
    this.weightDecay = o.weightDecay ?? 0.01;
    checkHyper(this.lr, this.betas[0], this.betas[1], this.eps, this.weightDecay);
  }

  /**
   * Updates, in place, every given parameter that has a gradient; parameters without one keep their value and state.
   * `gradScale` multiplies every gradient as it is read (gradient clipping's coefficient: the same numbers as scaling
   * the gradients in place first, without that pass over them; the gradients themselves are left as they are).
   * `copies`: the parameters' working copies kept between forwards; each one there is rewritten from its updated
   * parameter in the same pass.
   */
  step(params: Tensor[] | ParamGroup[], gradScale: number | Tensor = 1, copies?: WorkingCopies | null): void {
    // A control block (backend.stepControl): the scale and whether to update at all are read on the device; the step
    // counts advance here, and undoStep() puts them back if the block turns out to have said skip.
    const control = typeof gradScale === 'number' ? null : gradScale;
    if (control === null && !(Number.isFinite(gradScale) && (gradScale as number) >= 0)) {
      throw new ArgumentError(`AdamW: gradScale must be finite and >= 0, got ${gradScale}`, 'adamw');
    }
    const undo: { p: Tensor; step: number }[] = [], created: Tensor[] = [];
    const stepCountBefore = this.stepCount;
    const groups = groupsOf(params, this.weightDecay);
    const all = groups.flatMap((g) => g.params);
    const be = sameBackend('adamw', ...all);
    checkHyper(this.lr, this.betas[0], this.betas[1], this.eps, 0);
    // One fused call per distinct per-parameter step count (normally exactly one).
    const byStep = new Map<number, { p: Tensor[]; g: Tensor[]; m: Tensor[]; v: Tensor[]; wd: number[] }>();
    for (const group of groups) {
      checkHyper(0, 0, 0, 0, group.weightDecay);
      for (const p of group.params) {
        if (!p.grad) continue;
        let s = this.slots.get(p);
        if (!s) {
          if (p.dtype !== 'f32') throw new DTypeError(`AdamW: parameter ${p.name ?? ''} ${p.describe()} must be f32`, 'adamw');
          s = { m: keep(zeros(p.shape, { device: p.device })), v: keep(zeros(p.shape, { device: p.device })), step: 0 };
          this.slots.set(p, s);
          created.push(p);
        }
        undo.push({ p, step: s.step });
        const step = s.step + 1;
        let b = byStep.get(step);
        if (!b) byStep.set(step, (b = { p: [], g: [], m: [], v: [], wd: [] }));
        b.p.push(p); b.g.push(p.grad); b.m.push(s.m); b.v.push(s.v); b.wd.push(group.weightDecay);
      }
    }
    const h = (ts: Tensor[]) => ts.map((t) => t.handle);
    for (const [step, b] of byStep) {
      const cs = copies?.size ? b.p.map((p) => copies.get(p)?.handle ?? null) : undefined;
      if (control) be.adamw(h(b.p), h(b.g), h(b.m), h(b.v), b.wd, this.lr, this.betas[0], this.betas[1], this.eps, step, undefined, control.handle, cs);
      else be.adamw(h(b.p), h(b.g), h(b.m), h(b.v), b.wd, this.lr, this.betas[0], this.betas[1], this.eps, step, gradScale as number, undefined, cs);
      for (const p of b.p) this.slots.get(p)!.step = step;
    }
    if (byStep.size > 0) this.stepCount++;
    this.lastStep = control ? { undo, created, stepCount: stepCountBefore } : null;
  }

  /** The last step() was given a control block that said skip, so the device updated nothing: step counts back to
   *  before it, and the moments it created (zeros, never used) dropped. */
  undoStep(): void {
    const l = this.lastStep;
    if (!l) throw new ArgumentError('AdamW.undoStep: the last step was not given a control block (or was undone already)', 'adamw');
    for (const { p, step } of l.undo) this.slots.get(p)!.step = step;
    for (const p of l.created) {
      const s = this.slots.get(p)!;
      s.m.dispose(); s.v.dispose();
      this.slots.delete(p);
    }
    this.stepCount = l.stepCount;
    this.lastStep = null;
  }

  /** Drops the gradients (torch's zero_grad(set_to_none=True)): the memory is released, not filled with zeros. */
  zeroGrad(params: Tensor[] | ParamGroup[]): void {
    for (const g of groupsOf(params, 0)) for (const p of g.params) { p.grad?.dispose(); p.grad = null; }
  }

  /** The state of every parameter that has one, by parameter name (views: see AdamWState). */
  state(): AdamWState {
    const out: AdamWState = { step: this.stepCount, steps: new Map(), m: new Map(), v: new Map() };
    for (const [p, s] of this.slots) {
      if (!p.name) throw new ArgumentError(`AdamW.state: a parameter ${p.describe()} has no name to key its state by`, 'adamw');
      if (out.m.has(p.name)) throw new ArgumentError(`AdamW.state: two parameters are named '${p.name}'`, 'adamw');
      out.steps.set(p.name, s.step);
      out.m.set(p.name, s.m.share());
      out.v.set(p.name, s.v.share());
    }
    return out;
  }

  /**
   * Replaces the state with copies of `state`'s tensors, matched to `params` by name (onto each parameter's device).
   * Every entry must match a parameter of the same shape; parameters absent from it start fresh.
   */
  loadState(state: AdamWState, params: Tensor[] | ParamGroup[]): void {
    const byName = new Map<string, Tensor>();
    for (const g of groupsOf(params, 0)) for (const p of g.params) if (p.name) byName.set(p.name, p);
    if (!Number.isInteger(state.step) || state.step < 0) throw new ArgumentError(`AdamW.loadState: bad step ${state.step}`, 'adamw');
    const fresh = new Map<Tensor, Slot>();
    try {
      for (const [name, m] of state.m) {
        const p = byName.get(name), v = state.v.get(name);
        if (!p) throw new ArgumentError(`AdamW.loadState: state for '${name}' matches no parameter`, 'adamw');
        if (!v) throw new ArgumentError(`AdamW.loadState: '${name}' has m but no v`, 'adamw');
        for (const t of [m, v]) {
          if (!sameShape(t.shape, p.shape)) {
            throw new ShapeError(`AdamW.loadState: state ${t.describe()} of '${name}' does not match the parameter ${p.describe()}`, 'adamw');
          }
          if (t.dtype !== 'f32') throw new DTypeError(`AdamW.loadState: state of '${name}' must be f32, got ${t.describe()}`, 'adamw');
        }
        const step = state.steps.get(name) ?? state.step;
        if (!Number.isInteger(step) || step < 0) throw new ArgumentError(`AdamW.loadState: bad step ${step} for '${name}'`, 'adamw');
        fresh.set(p, { m: keep(m.to(p.device)), v: keep(v.to(p.device)), step });
      }
      for (const name of state.v.keys()) {
        if (!state.m.has(name)) throw new ArgumentError(`AdamW.loadState: '${name}' has v but no m`, 'adamw');
      }
    } catch (e) {
      for (const s of fresh.values()) { s.m.dispose(); s.v.dispose(); }
      throw e;
    }
    this.dispose();
    for (const [p, s] of fresh) this.slots.set(p, s);
    this.stepCount = state.step;
  }

  /** Releases all optimizer state. */
  dispose(): void {
    for (const s of this.slots.values()) { s.m.dispose(); s.v.dispose(); }
    this.slots.clear();
  }
}

function gradsOf(params: Tensor[]): Tensor[] {
  return params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
}

/** Global L2 norm of the gradients of `params` (those that have one), accumulated in float64. */
export function gradNorm(params: Tensor[]): number {
  const gs = gradsOf(params);
  if (gs.length === 0) return 0;
  const be = sameBackend('gradNorm', ...gs);
  return Math.sqrt(be.sumSquares(gs.map((g) => g.handle)));
}

/**
 * torch.nn.utils.clip_grad_norm_: scales the gradients by min(1, maxNorm / (norm + 1e-6)) and returns the norm before
 * clipping. As in torch, a non-finite norm scales by NaN or 0 (check allFinite first to skip such a step).
 */
export function clipGradNorm(params: Tensor[], maxNorm: number): number {
  const norm = gradNorm(params);
  const coef = maxNorm / (norm + 1e-6);
  if (!(coef >= 1)) {
    // a gradient kept in the compute dtype (lowPrecisionLeafGrads) is widened first: scaled in bf16 it would be
    // rounded, where torch scales the fp32 gradient
    for (const p of params) {
      if (p.grad && p.grad.dtype !== p.dtype) {
        const w = keep(wrap(p.grad.backend, p.grad.backend.cast(p.grad.handle, p.dtype)));
        p.grad.dispose();
        p.grad = w;
      }
    }
    const gs = gradsOf(params);
    if (gs.length > 0) sameBackend('clipGradNorm', ...gs).scaleInplace(gs.map((g) => g.handle), coef);
  }
  return norm;
}

/** True when no element of any of the tensors is NaN or ±inf. */
export function allFinite(tensors: Tensor[]): boolean {
  if (tensors.length === 0) return true;
  const be = sameBackend('allFinite', ...tensors);
  return be.allFinite(tensors.map((t) => t.handle));
}
