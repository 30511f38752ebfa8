import test from 'ava';
import { AdamW, gradNorm, clipGradNorm, allFinite, tensor, scope, liveTensors, ArgumentError, ShapeError, DTypeError, type Tensor } from '../lib/tensor/index.ts';
import { cpu } from '../lib/native.ts';
import { TOL, relMaxError } from './helpers/tolerances.ts';
import { randn, rng } from './helpers/rng.ts';

// float64 torch.optim.AdamW (decoupled weight decay, bias-corrected Adam), one parameter.
interface RefState { p: Float64Array; m: Float64Array; v: Float64Array; step: number }
function refAdamW(s: RefState, g: Float64Array, lr: number, b1: number, b2: number, eps: number, wd: number): void {
  s.step++;
  const bc1 = 1 - b1 ** s.step, bc2 = 1 - b2 ** s.step;
  for (let i = 0; i < s.p.length; i++) {
    s.p[i] *= 1 - lr * wd;
    s.m[i] = b1 * s.m[i] + (1 - b1) * g[i];
    s.v[i] = b2 * s.v[i] + (1 - b2) * g[i] * g[i];
    s.p[i] -= (lr / bc1) * s.m[i] / (Math.sqrt(s.v[i]) / Math.sqrt(bc2) + eps);
  }
}

const f32 = (x: Float64Array) => Float64Array.from(Float32Array.from(x));

function setGrad(p: Tensor, g: Float64Array): void {
  p.grad?.dispose();
  p.grad = tensor(Float32Array.from(g), [...p.shape]);
}

test('AdamW matches a float64 torch AdamW over 5 steps, two groups with different weight decay', (t) => {
  const live = liveTensors();
  const r = rng(21);
  const shapes = [[7, 3], [5]];
  const wds = [0.1, 0];
  const lr = 3e-3, b1 = 0.9, b2 = 0.98, eps = 1e-8;
  const refs: RefState[] = shapes.map((sh) => {
    const n = sh.reduce((a, b) => a * b, 1);
    return { p: f32(randn(r, n)), m: new Float64Array(n), v: new Float64Array(n), step: 0 };
  });
  const ps = shapes.map((sh, i) => tensor(Float32Array.from(refs[i].p), sh, { requiresGrad: true, name: `p${i}` }));
  const opt = new AdamW({ lr, betas: [b1, b2], eps });
  for (let step = 0; step < 5; step++) {
    ps.forEach((p, i) => {
      const g = f32(randn(r, refs[i].p.length, 0.5));
      setGrad(p, g);
      refAdamW(refs[i], g, lr, b1, b2, eps, wds[i]);
    });
    opt.step([{ params: [ps[0]], weightDecay: wds[0] }, { params: [ps[1]], weightDecay: wds[1] }]);
  }
  t.is(opt.stepCount, 5);
  const st = opt.state();
  ps.forEach((p, i) => {
    const tol = TOL.adamwSteps;
    for (const [got, want, what] of [[p.toFloat32(), refs[i].p, 'p'], [st.m.get(`p${i}`)!.toFloat32(), refs[i].m, 'm'],
      [st.v.get(`p${i}`)!.toFloat32(), refs[i].v, 'v']] as const) {
      const e = relMaxError(got, want, tol.floor);
      t.true(e < tol.rel, `${what}${i}: relative max error ${e.toExponential(2)} >= ${tol.rel} (${tol.why})`);
    }
    t.is(st.steps.get(`p${i}`), 5);
  });
  for (const m of [...st.m.values(), ...st.v.values()]) m.dispose();
  opt.zeroGrad(ps);
  t.true(ps.every((p) => p.grad === null));
  opt.dispose();
  for (const p of ps) p.dispose();
  t.is(liveTensors(), live, 'the optimizer leaked tensors');
});

test('AdamW skips parameters without a gradient; their step count does not advance', (t) => {
  scope(() => {
    const a = tensor([1, 2, 3], [3], { name: 'a' }), b = tensor([4, 5], [2], { name: 'b' });
    const opt = new AdamW({ lr: 0.1, weightDecay: 0 });
    setGrad(a, Float64Array.of(1, 1, 1));
    opt.step([a, b]);
    t.deepEqual(b.toArray(), [4, 5]);
    t.notDeepEqual(a.toArray(), [1, 2, 3]);
    const st = opt.state();
    t.deepEqual([...st.steps.entries()], [['a', 1]]);
    t.false(st.m.has('b'));
    opt.dispose();
  });
});

test('AdamW state export/import resumes bit for bit', (t) => {
  const r = rng(5);
  const init = f32(randn(r, 11));
  const grads = Array.from({ length: 5 }, () => f32(randn(r, 11)));
  scope(() => {
    const run = (split: boolean) => {
      const p = tensor(Float32Array.from(init), [11], { name: 'w' });
      let opt = new AdamW({ lr: 1e-2, weightDecay: 0.05 });
      grads.forEach((g, i) => {
        if (split && i === 2) { // checkpoint: export, copy to host and back, new optimizer
          const st = opt.state();
          const copy = { step: st.step, steps: st.steps, m: new Map([...st.m].map(([k, v]) => [k, tensor(v.toFloat32(), [...v.shape])])),
            v: new Map([...st.v].map(([k, v]) => [k, tensor(v.toFloat32(), [...v.shape])])) };
          opt.dispose();
          opt = new AdamW({ lr: 1e-2, weightDecay: 0.05 });
          opt.loadState(copy, [p]);
          t.is(opt.stepCount, 2);
        }
        setGrad(p, g);
        opt.step([p]);
      });
      opt.dispose();
      return p.toArray();
    };
    t.deepEqual(run(true), run(false));
  });
});

test('AdamW loadState rejects state that does not fit the parameters', (t) => {
  scope(() => {
    const p = tensor([1, 2, 3], [3], { name: 'w' });
    const opt = new AdamW({ lr: 1e-3 });
    const mk = (n: number) => tensor(new Float32Array(n), [n]);
    t.throws(() => opt.loadState({ step: 1, steps: new Map(), m: new Map([['w', mk(4)]]), v: new Map([['w', mk(4)]]) }, [p]), { instanceOf: ShapeError });
    t.throws(() => opt.loadState({ step: 1, steps: new Map(), m: new Map([['x', mk(3)]]), v: new Map([['x', mk(3)]]) }, [p]), { instanceOf: ArgumentError });
    t.throws(() => new AdamW({ lr: 1e-3, betas: [0.9, 1] }), { instanceOf: ArgumentError });
  });
});

test('native adamw checks list lengths, shapes, dtypes, step and aliasing', (t) => {
  const be = cpu();
  const f = (n: number) => be.full('f32', [n], 1);
  const [p, g, m, v, q] = [f(3), f(3), f(3), f(3), f(4)];
  t.throws(() => be.adamw([p], [g], [m], [], [0], 1e-3, 0.9, 0.999, 1e-8, 1), { instanceOf: ArgumentError, message: /one entry per parameter/ });
  t.throws(() => be.adamw([p], [q], [m], [v], [0], 1e-3, 0.9, 0.999, 1e-8, 1), { instanceOf: ShapeError });
  t.throws(() => be.adamw([p], [g], [m], [v], [0], 1e-3, 0.9, 0.999, 1e-8, 0), { instanceOf: ArgumentError, message: /step must be >= 1/ });
  t.throws(() => be.adamw([p], [g], [m], [m], [0], 1e-3, 0.9, 0.999, 1e-8, 1), { instanceOf: ArgumentError, message: /shares its storage/ });
  t.throws(() => be.adamw([p], [g], [m], [v], [-1], 1e-3, 0.9, 0.999, 1e-8, 1), { instanceOf: ArgumentError });
  const i = be.full('i32', [3], 1);
  t.throws(() => be.adamw([p], [i], [m], [v], [0], 1e-3, 0.9, 0.999, 1e-8, 1), { instanceOf: DTypeError });
  t.throws(() => be.adamw([p], [g], [m], [v], [0], 1e-3, 0.9, 0.999, 1e-8, 1, NaN), { instanceOf: ArgumentError, message: /gradScale/ });
  t.throws(() => be.adamw([p], [g], [m], [v], [0], 1e-3, 0.9, 0.999, 1e-8, 1, -1), { instanceOf: ArgumentError, message: /gradScale/ });
  for (const h of [p, g, m, v, q, i]) h.dispose();
});

test('stepControl: norm, clipping coefficient and skip flag; adamw reads it and refuses what is not one', (t) => {
  const be = cpu();
  const g1 = be.fromBuffer('f32', [2], Float32Array.of(3, 0)), g2 = be.fromBuffer('f32', [1], Float32Array.of(4));
  const ok = be.fromBuffer('f32', [1], Float32Array.of(1.5)), nan = be.fromBuffer('f32', [1], Float32Array.of(NaN));
  const read = (c: ReturnType<typeof be.stepControl>) => Array.from(new Float64Array(c.read()));
  const c1 = be.stepControl([g1, g2], [ok], 2);
  t.deepEqual(read(c1), [5, 2 / (5 + 1e-6), 0], 'norm 5 clipped to 2');
  const c2 = be.stepControl([g1, g2], [ok], 0), c3 = be.stepControl([g1, g2], [ok, nan], 2);
  t.deepEqual(read(c2), [5, 1, 0], 'no clipping');
  t.deepEqual(read(c3), [5, 2 / (5 + 1e-6), 1], 'a loss is NaN: skip');
  t.throws(() => be.stepControl([], [], 1), { instanceOf: ArgumentError, message: /a gradient or a loss/ });
  t.throws(() => be.stepControl([g1], [ok], NaN), { instanceOf: ArgumentError, message: /maxNorm/ });
  const f = (n: number) => be.full('f32', [n], 1);
  const [p, g, m, v] = [f(3), f(3), f(3), f(3)];
  t.throws(() => be.adamw([p], [g], [m], [v], [0], 1e-3, 0.9, 0.999, 1e-8, 1, undefined, g1), { instanceOf: ArgumentError, message: /control must be a stepControl block/ });
  t.throws(() => be.adamw([p], [g], [m], [v], [0], 1e-3, 0.9, 0.999, 1e-8, 1, 0.5, c1), { instanceOf: ArgumentError, message: /not both/ });
  const before = Array.from(new Float32Array(p.read()));
  be.adamw([p], [g], [m], [v], [0], 1e-3, 0.9, 0.999, 1e-8, 1, undefined, c3);
  t.deepEqual(Array.from(new Float32Array(p.read())), before, 'a skip block updates nothing');
  for (const h of [g1, g2, ok, nan, c1, c2, c3, p, g, m, v]) h.dispose();
});

test('gradNorm and clipGradNorm follow torch.nn.utils.clip_grad_norm_', (t) => {
  scope(() => {
    const r = rng(8);
    const gs = [f32(randn(r, 13)), f32(randn(r, 6))];
    const ps = gs.map((g, i) => { const p = tensor(new Float32Array(g.length), [g.length], { name: `p${i}` }); setGrad(p, g); return p; });
    const noGrad = tensor([1, 2], [2]);
    let ss = 0;
    for (const g of gs) for (const x of g) ss += x * x;
    const want = Math.sqrt(ss);
    t.true(Math.abs(gradNorm([...ps, noGrad]) - want) < 1e-12 * want);
    // Above the threshold: returns the pre-clip norm, scales by max/(norm + 1e-6).
    const norm = clipGradNorm(ps, 1);
    t.true(Math.abs(norm - want) < 1e-12 * want);
    const coef = 1 / (want + 1e-6);
    ps.forEach((p, i) => {
      const e = relMaxError(p.grad!.toFloat32(), gs[i].map((x) => x * coef), 1e-3);
      t.true(e < 1e-6);
    });
    t.true(Math.abs(gradNorm(ps) - 1) < 1e-5);
    // Below it: untouched.
    const before = ps[0].grad!.toArray();
    clipGradNorm(ps, 100);
    t.deepEqual(ps[0].grad!.toArray(), before);
    t.is(gradNorm([noGrad]), 0);
  });
});

test('sumSquares does not depend on the thread count', (t) => {
  const be = cpu();
  const threads = be.info().threads as number;
  const x = be.fromBuffer('f32', [300001], Float32Array.from(randn(rng(3), 300001)));
  try {
    be.setNumThreads(1);
    const one = be.sumSquares([x, x]);
    be.setNumThreads(3);
    t.is(be.sumSquares([x, x]), one);
  } finally {
    be.setNumThreads(threads);
    x.dispose();
  }
});

test('allFinite finds NaN, +inf and -inf in any tensor of the list', (t) => {
  scope(() => {
    const ok = tensor(Float32Array.from(randn(rng(1), 70000)), [70000]);
    t.true(allFinite([ok, tensor([1, -2, 3e38], [3])]));
    t.true(allFinite([]));
    for (const bad of [NaN, Infinity, -Infinity]) {
      const x = new Float32Array(40000);
      x[39999] = bad;
      t.false(allFinite([ok, tensor(x, [40000])]), `missed ${bad}`);
    }
  });
});

// Clipping through the optimizer: step(params, coef) gives the same bits as scaling the gradients in place by coef
// and stepping, over three steps with a different coefficient each, and leaves the gradients unscaled.
test('AdamW with gradScale equals clipping the gradients in place first, bit for bit', (t) => {
  const r = rng(8);
  const make = () => [tensor(Float32Array.from(randn(r, 37)), [37], { requiresGrad: true, name: 'a' }),
    tensor(Float32Array.from(randn(r, 12)), [3, 4], { requiresGrad: true, name: 'b' })];
  const folded = make(), scaled = folded.map((p) => tensor(p.data<'f32'>().slice(), [...p.shape], { requiresGrad: true, name: p.name }));
  const optA = new AdamW({ lr: 1e-2, weightDecay: 0.1 }), optB = new AdamW({ lr: 1e-2, weightDecay: 0.1 });
  for (const coef of [0.3, 1, 0.0071]) {
    const gs = folded.map((p) => randn(r, p.numel));
    folded.forEach((p, i) => setGrad(p, gs[i]));
    scaled.forEach((p, i) => setGrad(p, gs[i]));
    const before = folded.map((p) => Array.from(p.grad!.data<'f32'>()));
    optA.step(folded, coef);
    cpu().scaleInplace(scaled.map((p) => p.grad!.handle), coef);
    optB.step(scaled);
    folded.forEach((p, i) => {
      t.deepEqual(Array.from(p.data<'f32'>()), Array.from(scaled[i].data<'f32'>()), `parameter ${p.name} after coef ${coef}`);
      t.deepEqual(Array.from(p.grad!.data<'f32'>()), before[i], 'the gradient is read scaled, not changed');
    });
  }
  const sa = optA.state(), sb = optB.state();
  t.deepEqual(sa.m.get('a')!.data<'f32'>(), sb.m.get('a')!.data<'f32'>());
  for (const st of [sa, sb]) for (const x of [...st.m.values(), ...st.v.values()]) x.dispose();
  t.throws(() => optA.step(folded, Infinity), { instanceOf: ArgumentError, message: /gradScale/ });
  for (const p of [...folded, ...scaled]) p.dispose();
  optA.dispose(); optB.dispose();
});
