// Learning-rate schedules as functions of t = optimizer steps already taken (0 for the first update), exactly as the
// HF Trainer's LambdaLR evaluates them: the first update of a warm-up schedule uses lr(0) (0 for HF's linear warm-up).
// `total` is N, the number of optimizer steps of the run. Spec §4.5.
export type ScheduleType = 'constant' | 'linear' | 'cosine' | 'v0-cosine';

export interface ScheduleOptions {
  type: ScheduleType;
  /** Peak learning rate. */
  lr: number;
  /** W: warm-up steps. */
  warmupSteps: number;
  /** N: total optimizer steps. */
  totalSteps: number;
  /** Floor for `cosine` (decays to it) and `v0-cosine` (m = minLr / lr). */
  minLr?: number;
}

export type Schedule = (t: number) => number;

export function makeSchedule(o: ScheduleOptions): Schedule {
  const { lr, warmupSteps: W, totalSteps: N } = o;
  const minLr = o.minLr ?? 0;
  if (!(lr >= 0) || !Number.isFinite(lr)) throw new RangeError(`schedule: lr must be a finite number >= 0, got ${lr}`);
  if (!Number.isInteger(W) || W < 0) throw new RangeError(`schedule: warmup_steps must be an integer >= 0, got ${W}`);
  if (!Number.isInteger(N) || N < 1) throw new RangeError(`schedule: total steps must be an integer >= 1, got ${N}`);
  if (o.type !== 'constant' && W > N) throw new RangeError(`schedule: warmup_steps ${W} exceeds the ${N} total steps`);
  if (!(minLr >= 0 && minLr <= lr)) throw new RangeError(`schedule: min_lr ${minLr} must lie in [0, lr=${lr}]`);
  switch (o.type) {
    case 'constant':
      // HF constant_with_warmup when W > 0.
      return (t) => (t < W ? lr * t / W : lr);
    case 'linear':
      // HF get_linear_schedule_with_warmup: peak·t/W, then peak·(N−t)/(N−W), never below 0.
      return (t) => (t < W ? lr * t / W : lr * Math.max(0, (N - t) / Math.max(1, N - W)));
    case 'cosine':
      // Warm-up from 0, then a half cosine from lr down to minLr at t = N.
      return (t) => {
        if (t < W) return lr * t / W;
        const p = Math.min(1, (t - W) / Math.max(1, N - W));
        return minLr + (lr - minLr) * 0.5 * (1 + Math.cos(Math.PI * p));
      };
    case 'v0-cosine': {
      // The paper-era code (spec §4.5), reproduced with its swapped coefficients: with m = minLr/lr the warm-up
      // factor is m + (1−m)·t/W and afterwards (1−m) + m·0.5·(1 + cos πp), so the LR only falls from lr to (1−m)·lr.
      const m = lr === 0 ? 0 : minLr / lr;
      return (t) => {
        if (t < W) return lr * (m + (1 - m) * t / W);
        const p = (t - W) / Math.max(1, N - W);
        return lr * ((1 - m) + m * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * p))));
      };
    }
    default:
      throw new RangeError(`schedule: unknown type '${(o as { type: string }).type}' (constant, linear, cosine, v0-cosine)`);
  }
}
