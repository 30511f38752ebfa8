import test from 'ava';
import { Rng } from '../../lib/train/rng.ts';

test('same seed, same stream; state round-trips exactly', (t) => {
  const a = new Rng(42), b = new Rng(42);
  const xs = Array.from({ length: 100 }, () => a.next());
  t.deepEqual(xs, Array.from({ length: 100 }, () => b.next()));
  t.true(xs.every((x) => x >= 0 && x < 1));
  const s = a.state();
  const next = [a.nextU32(), a.nextSeed(), a.next()];
  const c = new Rng(0);
  c.restore(s);
  t.deepEqual([c.nextU32(), c.nextSeed(), c.next()], next);
  t.notDeepEqual(new Rng(43).state(), new Rng(42).state());
  t.notDeepEqual(new Rng(2 ** 40).state(), new Rng(0).state());
});

test('seeds are 53-bit integers and roughly uniform', (t) => {
  const r = new Rng(7);
  let mean = 0;
  for (let i = 0; i < 2000; i++) {
    const s = r.nextSeed();
    t.true(Number.isSafeInteger(s) && s >= 0);
    mean += r.next() / 2000;
  }
  t.true(Math.abs(mean - 0.5) < 0.03, `mean ${mean}`);
  t.throws(() => r.restore([1, 2, 3]), { instanceOf: RangeError });
  t.throws(() => new Rng(1.5), { instanceOf: RangeError });
});
