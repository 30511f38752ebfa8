// BackwardOptions.lowPrecisionLeafGrads: the gradients of fp32 masters read through bf16 working copies stay bf16
// (castMany's backward hands them on instead of casting), and everything downstream — a second backward's sum, the
// gradient norm, AdamW — gives the same bits as with fp32 gradients. On the CPU (bf16 storage, f32 arithmetic); the
// trainer's bf16 steps with and without (OWLET_LOWP_GRADS=0) are compared on the GPU by scripts/gpu/train-check.ts.
import test from 'ava';
import { ForwardContext } from '../lib/model/index.ts';
import {
  AdamW, backward, cast, concat, gradNorm, liveTensors, mul, reshape, scope, tensor, type Tensor,
} from '../lib/tensor/index.ts';
import { MASTER_KEYS, threeMasters } from './helpers/masters.ts';

const KEYS = MASTER_KEYS;

const bits = (t: Tensor) => scope(() => Buffer.from(cast(t, 'f32').data().buffer).toString('hex'));

/** `steps` AdamW steps, each over `backwards` backward passes of a bf16 forward of three fp32 masters (b is also
 *  used in f32 directly, so its gradient always has an f32 part); per step the gradients' dtypes and bits (before the
 *  update), the norm and the masters after it. */
function train(lowp: boolean, backwards: number, steps = 3) {
  const { params, x } = threeMasters(11);
  const ps = [...params.values()];
  const opt = new AdamW({ lr: 0.05, weightDecay: 0.1 });
  const out: { dtypes: string[]; grads: string[]; norm: number; masters: string[] }[] = [];
  for (let step = 0; step < steps; step++) {
    for (let i = 0; i < backwards; i++) {
      scope(() => {
        const ctx = new ForwardContext(params, true, null, 1, 'bf16', null);
        const w = ctx.get(KEYS.w), b = ctx.get(KEYS.b), g = ctx.get(KEYS.g);
        const y1 = mul(cast(w, 'f32'), x), y2 = mul(cast(b, 'f32'), cast(g, 'f32'));
        const y3 = mul(params.get(KEYS.b)!, params.get(KEYS.b)!);
        backward(concat([reshape(y1, [12]), mul(y2, y2), y3], 0), undefined, { lowPrecisionLeafGrads: lowp });
      });
    }
    const dtypes = ps.map((p) => p.grad!.dtype), grads = ps.map((p) => bits(p.grad!));
    const norm = gradNorm(ps);
    opt.step(ps, 1);
    opt.zeroGrad(ps);
    out.push({ dtypes, grads, norm, masters: ps.map(bits) });
  }
  opt.dispose();
  x.dispose();
  for (const p of ps) p.dispose();
  return out;
}

test('gradients kept in bf16 for the working copies train bit for bit as fp32 ones (one backward per step)', (t) => {
  const live = liveTensors();
  const f32 = train(false, 1), lowp = train(true, 1);
  t.deepEqual(f32[0].dtypes, ['f32', 'f32', 'f32']);
  // w reached only through its bf16 copy: its gradient stays bf16; b (also used in f32 directly) is summed in f32
  t.deepEqual(lowp[0].dtypes, ['bf16', 'f32', 'bf16']);
  t.deepEqual(lowp.map((s) => s.grads), f32.map((s) => s.grads));
  t.deepEqual(lowp.map((s) => s.norm), f32.map((s) => s.norm));
  t.deepEqual(lowp.map((s) => s.masters), f32.map((s) => s.masters));
  t.notDeepEqual(f32[0].masters, f32[2].masters, 'the masters move');
  t.is(liveTensors(), live, 'no tensor leaks');
});

test('a second backward into bf16 gradients sums in fp32, as casting each to fp32 does', (t) => {
  const live = liveTensors();
  const f32 = train(false, 2), lowp = train(true, 2);
  t.deepEqual(lowp[0].dtypes, ['f32', 'f32', 'f32']);
  t.deepEqual(lowp.map((s) => s.grads), f32.map((s) => s.grads));
  t.deepEqual(lowp.map((s) => s.masters), f32.map((s) => s.masters));
  t.is(liveTensors(), live, 'no tensor leaks');
});

test('lowPrecisionLeafGrads lasts only for the backward it was given to', (t) => {
  const p = tensor(Float32Array.from([0.5, -1.5, 2]), [3], { name: KEYS.g, requiresGrad: true });
  const run = (lowp: boolean) => scope(() => {
    const ctx = new ForwardContext(new Map([[KEYS.g, p]]), true, null, 1, 'bf16', null);
    const a = cast(ctx.get(KEYS.g), 'f32');
    backward(mul(a, a), undefined, lowp ? { lowPrecisionLeafGrads: true } : {});
    const d = p.grad!.dtype;
    p.grad!.dispose();
    p.grad = null;
    return d;
  });
  t.deepEqual([run(true), run(false), run(true)], ['bf16', 'f32', 'bf16']);
  p.dispose();
});
