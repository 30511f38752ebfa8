import test from 'ava';
import { makeSchedule } from '../../lib/train/schedule.ts';

const close = (t: { true: (v: boolean, m?: string) => void }, a: number, b: number, what: string) =>
  t.true(Math.abs(a - b) <= 1e-12 * Math.max(1e-30, Math.abs(b)) || a === b, `${what}: got ${a}, want ${b}`);

test('v1 linear (HF Trainer default, spec §4.5): peak·t/W, then peak·(N−t)/(N−W) to 0', (t) => {
  const lr = makeSchedule({ type: 'linear', lr: 2e-5, warmupSteps: 50, totalSteps: 4236 });
  t.is(lr(0), 0); // the first update of an HF warm-up uses lr 0
  close(t, lr(1), 4e-7, 'lr(1)');
  close(t, lr(25), 1e-5, 'lr(25)');
  close(t, lr(49), 2e-5 * 49 / 50, 'lr(49)');
  close(t, lr(50), 2e-5, 'lr(50)');
  close(t, lr(2143), 1e-5, 'lr(2143)'); // (4236−2143)/(4236−50) = 1/2
  close(t, lr(4235), 2e-5 / 4186, 'lr(4235)');
  t.is(lr(4236), 0);
  t.is(lr(5000), 0); // never negative
});

test('v0 cosine reproduces the swapped coefficients: 2e-5 decays only to 1.9e-5', (t) => {
  const lr = makeSchedule({ type: 'v0-cosine', lr: 2e-5, minLr: 1e-6, warmupSteps: 50, totalSteps: 4236 });
  close(t, lr(0), 1e-6, 'lr(0) = m·lr');
  close(t, lr(25), 2e-5 * (0.05 + 0.95 * 0.5), 'lr(25)');
  close(t, lr(50), 2e-5, 'lr(50) = (1−m) + m');
  close(t, lr(2143), 2e-5 * (0.95 + 0.05 * 0.5), 'lr(mid)'); // cos(π/2) = 0
  close(t, lr(4236), 1.9e-5, 'lr(N) = (1−m)·lr');
  // the intended curve would have reached min_lr
  const fixed = makeSchedule({ type: 'cosine', lr: 2e-5, minLr: 1e-6, warmupSteps: 50, totalSteps: 4236 });
  close(t, fixed(4236), 1e-6, 'cosine to min_lr');
});

test('cosine with warm-up to a minimum LR (paper stage 1: 1e-4, 2k warm-up, 50k steps)', (t) => {
  const lr = makeSchedule({ type: 'cosine', lr: 1e-4, minLr: 1e-5, warmupSteps: 2000, totalSteps: 50000 });
  t.is(lr(0), 0);
  close(t, lr(1000), 5e-5, 'half warm-up');
  close(t, lr(2000), 1e-4, 'peak');
  close(t, lr(26000), 1e-5 + 9e-5 * 0.5, 'midpoint');
  close(t, lr(50000), 1e-5, 'end');
  close(t, lr(60000), 1e-5, 'after the end stays at min');
  close(t, lr(14000), 1e-5 + 9e-5 * 0.5 * (1 + Math.cos(Math.PI / 4)), 'quarter');
});

test('constant, with and without warm-up', (t) => {
  const c = makeSchedule({ type: 'constant', lr: 3e-4, warmupSteps: 0, totalSteps: 10 });
  t.deepEqual([0, 5, 10, 99].map(c), [3e-4, 3e-4, 3e-4, 3e-4]);
  const w = makeSchedule({ type: 'constant', lr: 3e-4, warmupSteps: 4, totalSteps: 10 });
  close(t, w(2), 1.5e-4, 'warm-up');
  t.is(w(4), 3e-4);
});

test('bad schedule settings are rejected with the reason', (t) => {
  t.throws(() => makeSchedule({ type: 'linear', lr: 1, warmupSteps: 11, totalSteps: 10 }), { message: /warmup_steps 11 exceeds the 10/ });
  t.throws(() => makeSchedule({ type: 'cosine', lr: 1e-4, minLr: 1e-3, warmupSteps: 0, totalSteps: 10 }), { message: /min_lr/ });
  t.throws(() => makeSchedule({ type: 'linear', lr: 1e-4, warmupSteps: 0, totalSteps: 0 }), { message: /total steps/ });
  t.throws(() => makeSchedule({ type: 'nope' as 'linear', lr: 1e-4, warmupSteps: 0, totalSteps: 5 }), { message: /unknown type/ });
});
