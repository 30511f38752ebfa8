// The tensor runtime: creation, copies, dtypes, ownership, scopes, typed errors for misuse.
import test from 'ava';
import { cpu } from '../lib/native.ts';
import {
  tensor, zeros, full, empty, scope, keep, liveTensors, bytesInUse, Tensor, backward, noGrad, linear, add,
  ShapeError, DTypeError, DisposedError, ArgumentError, DeviceError, tapeLength, OwletError,
} from '../lib/tensor/index.ts';
import { TOL, relMaxError } from './helpers/tolerances.ts';

test('creation and read-back keep values, shape and dtype', (t) => {
  scope(() => {
    const a = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
    t.deepEqual([...a.shape], [2, 3]);
    t.is(a.dtype, 'f32');
    t.deepEqual(Array.from(a.data<'f32'>()), [1, 2, 3, 4, 5, 6]);
    const ids = tensor(Int32Array.from([7, -1, 3]));
    t.is(ids.dtype, 'i32');
    t.deepEqual(Array.from(ids.data<'i32'>()), [7, -1, 3]);
    const big = tensor(BigInt64Array.from([1n, 2n, 40000000000n]));
    t.is(big.dtype, 'i64');
    t.is(big.data<'i64'>()[2], 40000000000n);
    t.deepEqual(Array.from(full([2, 2], 2.5).data<'f32'>()), [2.5, 2.5, 2.5, 2.5]);
    t.deepEqual(Array.from(zeros([3]).data<'f32'>()), [0, 0, 0]);
    t.is(empty([0, 5]).numel, 0);
  });
});

test('bf16 storage rounds to nearest even and converts back', (t) => {
  scope(() => {
    const vals = Float32Array.from([1, -2.5, 3.14159, 1e-3, 65504, 1 + 2 ** -9, 1 + 3 * 2 ** -9]);
    const b = tensor(vals, undefined, { dtype: 'bf16' });
    t.is(b.dtype, 'bf16');
    t.is(b.handle.nbytes, vals.length * 2);
    const back = b.toFloat32();
    t.true(relMaxError(back, vals, TOL.bf16Storage.floor) < TOL.bf16Storage.rel);
    t.is(back[5], 1); // ties go to even
    t.is(back[6], 1 + 2 ** -7);
  });
});

test('f32 values stored as bf16 go in rounded as a cast rounds them, bit for bit, specials included', (t) => {
  scope(() => {
    const vals = Float32Array.from([0, -0, 1, 1 + 2 ** -9, 1 + 3 * 2 ** -9, -(1 + 2 ** -8 + 2 ** -9), 3.4e38, -3.4e38, 1e-40,
      -1e-45, Infinity, -Infinity, NaN, 65504, 2 ** -126]);
    const direct = tensor(vals, [vals.length], { dtype: 'bf16' });  // fromBuffer('bf16', Float32Array): rounded as it goes in
    const viaCast = cpu().cast(cpu().fromBuffer('f32', [vals.length], vals), 'bf16');
    t.deepEqual([...direct.data<'bf16'>()], [...new Uint16Array(viaCast.read())]);
    viaCast.dispose();
    // the values' count is checked, not the bytes
    const e = t.throws(() => cpu().fromBuffer('bf16', [3], Float32Array.of(1, 2)), { instanceOf: OwletError });
    t.regex(e!.message, /data holds 2 float32 values but bf16\[3\] needs 3/);
    // other views are still the raw bytes (a Uint16Array of bf16 bits)
    const raw = cpu().fromBuffer('bf16', [2], Uint16Array.of(0x3f80, 0x4000));
    t.deepEqual([...new Uint16Array(raw.read())], [0x3f80, 0x4000]);
    raw.dispose();
  });
});

test('dispose is deterministic, idempotent, and use-after-dispose throws DisposedError', (t) => {
  const live = liveTensors();
  const before = bytesInUse('cpu');
  const a = zeros([256, 256]);
  t.is(liveTensors(), live + 1);
  t.is(bytesInUse('cpu'), before + 256 * 256 * 4);
  a.dispose();
  a.dispose();
  t.is(liveTensors(), live);
  t.is(bytesInUse('cpu'), before);
  const e = t.throws(() => a.data(), { instanceOf: DisposedError });
  t.regex(e!.message, /disposed/);
  t.throws(() => add(a, a), { instanceOf: DisposedError });
});

test('using / Symbol.dispose releases at block end', (t) => {
  const live = liveTensors();
  {
    using a = zeros([4]);
    t.is(a.numel, 4);
    t.is(liveTensors(), live + 1);
  }
  t.is(liveTensors(), live);
});

test('scope disposes what it created except returned and kept tensors, across await', async (t) => {
  const live = liveTensors();
  let kept: Tensor | undefined;
  const r = scope(() => {
    zeros([3]);
    kept = keep(zeros([2]));
    return { out: ones3() };
  });
  t.is(liveTensors(), live + 2);
  r.out.dispose();
  kept!.dispose();
  t.is(liveTensors(), live);

  const r2 = await scope(async () => {
    const a = zeros([5]);
    await new Promise((res) => setTimeout(res, 5));
    const b = full([5], 3);
    await Promise.resolve();
    return [a];
    void b;
  });
  t.is(liveTensors(), live + 1);
  r2[0].dispose();
  t.is(liveTensors(), live);

  await t.throwsAsync(scope(async () => { zeros([7]); throw new Error('boom'); }), { message: 'boom' });
  t.is(liveTensors(), live);
});

function ones3(): Tensor { return full([3], 1); }

test('misuse from JS throws typed errors that name the op and shapes, never crashes', (t) => {
  const b = cpu();
  scope(() => {
    const a = tensor(new Float32Array(6), [2, 3]);
    const c = tensor(new Float32Array(8), [2, 4]);
    const e1 = t.throws(() => b.matmul(a.handle, c.handle), { instanceOf: ShapeError });
    t.regex(e1!.message, /matmul.*inner dimensions differ.*f32\[2,3\].*f32\[2,4\]/);
    const ids = tensor(Int32Array.from([0, 1]));
    t.throws(() => b.add(a.handle, ids.handle), { instanceOf: DTypeError });
    t.throws(() => b.add(a.handle, c.handle), { instanceOf: ShapeError });
    t.throws(() => b.slice(a.handle, 1, 2, 5), { instanceOf: ShapeError });
    t.throws(() => b.gatherRows(a.handle, tensor(Int32Array.from([5])).handle), { instanceOf: ArgumentError });
    t.throws(() => b.fromBuffer('f32', [3], new Float32Array(2)), { instanceOf: ShapeError });
    t.throws(() => b.empty('f99' as 'f32', [1]), { instanceOf: DTypeError });
    t.throws(() => b.empty('f32', [1], 'cuda:0'), { instanceOf: DeviceError });
    t.throws(() => b.add({} as never, a.handle), { instanceOf: DeviceError });
    t.throws(() => b.add(null as never, a.handle), { instanceOf: ArgumentError });
    t.throws(() => b.scale(a.handle, 'x' as never), { instanceOf: ArgumentError });
    t.throws(() => b.empty('f32', [-1]), { instanceOf: ShapeError });
    t.throws(() => zeros([1.5]), { instanceOf: ShapeError });
    t.throws(() => linear(a, c), { instanceOf: ShapeError });
    const err = t.throws(() => b.add(a.handle, ids.handle)) as OwletError;
    t.is(err.op, 'add');
    const NT = (b as unknown as { NativeTensor: new () => unknown }).NativeTensor;
    t.throws(() => new NT());
  });
});

test('a training-step-shaped sequence of ops leaves liveTensors and bytesInUse where they started', (t) => {
  const w = tensor(Float32Array.from({ length: 12 }, (_, i) => i / 10), [4, 3], { requiresGrad: true });
  const frozen = tensor(Float32Array.from({ length: 16 }, (_, i) => i / 7), [4, 4]);
  const live = liveTensors(), bytes = bytesInUse('cpu');
  for (let step = 0; step < 3; step++) {
    scope(() => {
      const x = tensor(Float32Array.from({ length: 6 }, (_, i) => i), [2, 3]);
      const h = linear(x, w);
      const y = linear(h, frozen);
      backward(y);
    });
    t.is(tapeLength(), 0);
  }
  t.truthy(w.grad);
  w.grad!.dispose();
  w.grad = null;
  t.is(liveTensors(), live);
  t.is(bytesInUse('cpu'), bytes);
  w.dispose();
  frozen.dispose();
});

test('frozen weights get no gradient and cost no gradient memory; noGrad records nothing', (t) => {
  scope(() => {
    const x = tensor(Float32Array.from([1, 2, 3]), [1, 3], { requiresGrad: true });
    const w = tensor(Float32Array.from([1, 0, 0, 0, 1, 0]), [2, 3]);
    const y = linear(x, w);
    backward(y);
    t.is(w.grad, null);
    t.deepEqual(Array.from(x.grad!.data<'f32'>()), [1, 1, 0]);
    noGrad(() => linear(x, w));
    t.is(tapeLength(), 0);
  });
});

test('backward on a value that needs no grad is a clear error', (t) => {
  scope(() => {
    const y = add(tensor([1]), tensor([2]));
    t.throws(() => backward(y), { instanceOf: ArgumentError });
  });
});

test('the backend reports its threads and BLAS', (t) => {
  const info = cpu().info();
  t.is(info.backend, 'cpu');
  t.true(Number(info.threads) >= 1);
  t.regex(String(info.blas), /OpenBLAS/i);
});
