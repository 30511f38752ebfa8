// readLater: copies to the host queued now and taken later (lib/tensor/queued-read.ts, kern::read_queue). On the CPU
// the copy is made at once, so what take() returns is the tensors as they were when the read was queued, even after
// they were changed or disposed; tickets are claimed once. The GPU path (a pinned block and an event per ticket) is
// checked against data() by scripts/gpu/cases.ts.
import test from 'ava';
import { cpu } from '../lib/native.ts';
import { ArgumentError, DisposedError, OwletError, readLater, tensor, full, liveTensors, type Tensor } from '../lib/tensor/index.ts';

test('take returns each tensor in its dtype, as it was when the read was queued', (t) => {
  const f = tensor([1.5, -2, 3.25], [3]), i = tensor(new Int32Array([7, -8]), [2]);
  const l = tensor(new BigInt64Array([5n, -6n, 1n << 40n]), [3]), h = tensor([0.5, 1], [2], { dtype: 'bf16' });
  const empty = full([0], 0);
  const r = readLater([f, i, l, h, empty]);
  cpu().axpy(f.handle, f.handle, 1);  // f doubles after the read was queued: the read keeps the old values
  const [fv, iv, lv, hv, ev] = r.take();
  t.deepEqual([...(fv as Float32Array)], [1.5, -2, 3.25]);
  t.deepEqual([...(iv as Int32Array)], [7, -8]);
  t.deepEqual([...(lv as BigInt64Array)], [5n, -6n, 1n << 40n]);
  t.deepEqual([...(hv as Uint16Array)], [0x3f00, 0x3f80]);  // bf16 bits of 0.5 and 1
  t.is((ev as Float32Array).length, 0);
  t.deepEqual([...f.data()], [3, -4, 6.5]);
  t.true(r.claimed);
  for (const x of [f, i, l, h, empty]) x.dispose();
});

test('the tensors may be disposed once the read is queued; an empty list reads nothing', (t) => {
  const before = liveTensors();
  const xs: Tensor[] = [tensor([4, 5], [2]), tensor([6], [1])];
  const r = readLater(xs);
  for (const x of xs) x.dispose();
  t.deepEqual(r.take().map((a) => [...(a as Float32Array)]), [[4, 5], [6]]);
  t.deepEqual(readLater([]).take(), []);
  t.is(liveTensors(), before);
});

test('a read is claimed once: take or drop, then both refuse; drop is idempotent', (t) => {
  const x = tensor([1], [1]);
  const r = readLater([x]);
  r.take();
  const e = t.throws(() => r.take(), { instanceOf: ArgumentError });
  t.regex(e!.message, /already taken or dropped/);
  const d = readLater([x]);
  d.drop();
  d.drop();
  t.throws(() => d.take(), { instanceOf: ArgumentError });
  x.dispose();
});

test('bad input: a disposed tensor, a non-array, an unknown ticket', (t) => {
  const x = tensor([1], [1]);
  x.dispose();
  t.throws(() => readLater([x]), { instanceOf: DisposedError });
  t.throws(() => readLater(x as unknown as Tensor[]), { instanceOf: ArgumentError });
  const be = cpu();
  const e = t.throws(() => be.readTake(987654321), { instanceOf: OwletError });
  t.regex(e!.message, /ticket 987654321 is not a queued read/);
  t.throws(() => be.readTake(-1), { instanceOf: OwletError });
  t.throws(() => be.readQueue([{} as never]), { instanceOf: OwletError });
});
