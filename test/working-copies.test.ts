// Working copies kept between forwards (lib/tensor/working-copies.ts): a bf16 forward that reads its fp32 masters
// through them trains bit for bit like one that casts them at every forward, the copies are made once and AdamW keeps
// them equal to the masters (a skipped step included), and the native call refuses copies that do not fit. On the CPU
// (which stores bf16 but computes in f32: the ops below cast back before any arithmetic); the trainer's bf16 steps
// with and without them are compared on the GPU by scripts/gpu/train-check.ts.
import test from 'ava';
import { ForwardContext } from '../lib/model/index.ts';
import {
  AdamW, WorkingCopies, backward, cast, concat, liveTensors, mul, reshape, scope, tensor, type Tensor,
} from '../lib/tensor/index.ts';
import { cpu } from '../lib/native.ts';
import { MASTER_KEYS, threeMasters } from './helpers/masters.ts';

const KEYS = MASTER_KEYS;

const bits = (t: Tensor) => Buffer.from(t.data().buffer).toString('hex');

/** Four AdamW steps of a small bf16 "forward" over three fp32 masters; the masters' and copies' bits after each. */
function train(kept: WorkingCopies | null, skipAt = -1) {
  const { params, x } = threeMasters(7);
  const opt = new AdamW({ lr: 0.05, weightDecay: 0.1 });
  const masters: string[][] = [], copies: string[][] = [], copyIds: number[][] = [];
  for (let step = 0; step < 4; step++) {
    scope(() => {
      const ctx = new ForwardContext(params, true, null, 1, 'bf16', kept);
      const w = ctx.get(KEYS.w), b = ctx.get(KEYS.b), g = ctx.get(KEYS.g);
      if (w.dtype !== 'bf16' || g.dtype !== 'bf16') throw new Error('the forward must read bf16 working copies');
      const y1 = mul(cast(w, 'f32'), x), y2 = mul(cast(b, 'f32'), cast(g, 'f32'));
      backward(concat([reshape(y1, [12]), mul(y2, y2)], 0));
    });
    const ps = [...params.values()];
    if (step === skipAt) {
      // a control block that says skip (norm, coefficient, skip = 1): the device updates nothing, copies included
      const control = tensor(new BigInt64Array(new Float64Array([1, 1, 1]).buffer), [3]);
      opt.step(ps, control, kept);
      opt.undoStep();
      control.dispose();
    } else {
      opt.step(ps, 1, kept);
    }
    opt.zeroGrad(ps);
    masters.push(ps.map(bits));
    if (kept) {
      copies.push(ps.map((p) => bits(kept.get(p)!)));
      copyIds.push(ps.map((p) => kept.get(p)!.id));
      // each copy is its master rounded to bf16, as a cast rounds it
      for (const p of ps) if (bits(kept.get(p)!) !== scope(() => bits(cast(p, 'bf16')))) throw new Error(`copy of ${p.name} differs from its master`);
    }
  }
  opt.dispose();
  x.dispose();
  for (const p of params.values()) p.dispose();
  return { masters, copies, copyIds };
}

test('a forward through kept working copies trains bit for bit as one that casts at each forward; AdamW rewrites them', (t) => {
  const live = liveTensors();
  const cast_ = train(null);
  const kept = new WorkingCopies();
  const k = train(kept);
  t.deepEqual(k.masters, cast_.masters);
  t.is(kept.size, 3);
  // made once, at the first forward: the same three tensors after every step (AdamW wrote into them)
  t.true(k.copyIds.every((ids) => ids.join() === k.copyIds[0].join()));
  t.notDeepEqual(k.copies[0], k.copies[3], 'the copies follow the masters');
  kept.dispose();
  t.is(liveTensors(), live, 'no tensor leaks');
});

test('a step the control block skips leaves masters and copies as they were', (t) => {
  const kept = new WorkingCopies();
  const k = train(kept, 1), plain = train(null, 1);
  t.deepEqual(k.masters, plain.masters);
  t.deepEqual(k.masters[1], k.masters[0]);
  t.deepEqual(k.copies[1], k.copies[0]);
  kept.dispose();
});

test('adamw refuses working copies that do not fit their parameters', (t) => {
  scope(() => {
    const p = tensor(new Float32Array(4), [4]), g = tensor(new Float32Array(4), [4]);
    const m = tensor(new Float32Array(4), [4]), v = tensor(new Float32Array(4), [4]);
    const call = (copies: (Tensor | null)[]) => () => cpu().adamw([p.handle], [g.handle], [m.handle], [v.handle], [0], 1e-3, 0.9, 0.999,
      1e-8, 1, 1, undefined, copies.map((c) => c?.handle ?? null));
    t.throws(call([tensor(new Float32Array(4), [4])]), { message: /copies\[0\] must be bf16/ });
    t.throws(call([cast(tensor(new Float32Array(3), [3]), 'bf16')]), { message: /copies\[0\].*must have the size of params\[0\]/ });
    t.throws(call([]), { message: /one entry \(a tensor or null\) per parameter/ });
    t.throws(call([m]), { message: /copies\[0\] must be bf16/ });
    t.notThrows(call([null]));
  });
  t.throws(() => new WorkingCopies('f32'), { message: /only bf16 copies/ });
});
