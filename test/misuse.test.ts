// Misuse at the edges that once crashed the process or went wrong silently (an audit of the library and the N-API
// boundary, session 9): empty dimensions, sizes that overflow 64 bits, objects that only look like handles, JS run
// while an op reads its arguments, a second backward through a consumed tape, a scope whose function throws, a
// disposed leaf, float-to-integer conversions, and generation and tokenizer options. Each must throw a typed error
// or return the mathematically right (often empty) result, and leave nothing behind.
import test from 'ava';
import { cpu } from '../lib/native.ts';
import {
  tensor, zeros, full, cast, scope, keep, liveTensors, bytesInUse, backward, linear, matmul, mul, slice, add,
  ShapeError, ArgumentError, DeviceError, tapeLength, AdamW, type Tensor,
} from '../lib/tensor/index.ts';
import { checkSamplingOptions, generateIds, sampleToken } from '../lib/generate/index.ts';
import { llamaTokenizer, TokenizerError } from '../lib/data/index.ts';
import { loadModel, type MplugOwl } from '../lib/model/index.ts';
import { ConfigError } from '../lib/model/io/errors.ts';
import { owlComponents } from '../lib/train/owl-components.ts';
import { trainStage } from '../lib/train/stage.ts';
import { tinyOwl } from './helpers/tiny-owl.ts';

test('empty dimensions give empty (or zero) results instead of dividing by zero', (t) => {
  const b = cpu();
  scope(() => {
    t.deepEqual(linear(zeros([0, 4]), zeros([3, 4])).shape, [0, 3]);
    t.deepEqual(linear(zeros([2, 4]), zeros([0, 4])).shape, [2, 0]);
    const y = linear(zeros([2, 0]), zeros([3, 0])); // K = 0: a sum over nothing
    t.deepEqual(y.shape, [2, 3]);
    t.deepEqual(y.toArray(), [0, 0, 0, 0, 0, 0]);
    t.deepEqual(matmul(zeros([0, 3]), zeros([3, 4])).shape, [0, 4]);
    t.deepEqual(mul(zeros([0]), zeros([0])).shape, [0]);
    t.deepEqual(mul(zeros([2, 0]), zeros([0])).shape, [2, 0]);
    const ids = tensor(Int32Array.from([0]));
    t.deepEqual(b.gatherRows(zeros([5, 0]).handle, ids.handle).shape, [1, 0]);
    const e = t.throws(() => b.gatherRows(zeros([0, 4]).handle, ids.handle), { instanceOf: ArgumentError });
    t.regex(e!.message, /no rows/);
    t.throws(() => b.patchify(zeros([1, 1, 0, 0]).handle, 2 ** 32), { instanceOf: ShapeError });
    // matmulInto with K = 0 leaves beta·c
    const c = tensor([1, 2, 3, 4], [2, 2]);
    b.matmulInto(c.handle, zeros([2, 0]).handle, zeros([0, 2]).handle, false, false, 1, 0.5);
    t.deepEqual(c.toArray(), [0.5, 1, 1.5, 2]);
  });
});

test('sizes whose product or sum passes 64 bits are shape errors, not wrapped-around tensors', (t) => {
  const b = cpu();
  scope(() => {
    t.throws(() => zeros([2 ** 32, 2 ** 32]), { instanceOf: ShapeError, message: /more than 2\^60 elements/ });
    const x = tensor([1, 2, 3, 4]);
    t.throws(() => slice(x, 0, 2 ** 62, 2 ** 62), { instanceOf: ShapeError });
    t.throws(() => b.slice(x.handle, 0, 9e18, 9e18), { instanceOf: ArgumentError }); // not an integer up to 2^62
    t.throws(() => x.share([2 ** 70]), { instanceOf: ShapeError });
    t.throws(() => x.share([NaN]), { instanceOf: ShapeError });
    t.throws(() => x.share([3]), { instanceOf: ShapeError, message: /view.*element counts differ/ });
    t.deepEqual(zeros([0, 2 ** 40, 2 ** 40]).shape, [0, 2 ** 40, 2 ** 40]); // empty, whatever the other sizes
  });
});

test('an object that only looks like a handle is refused with a DeviceError, not a fatal abort', (t) => {
  const b = cpu();
  scope(() => {
    const x = tensor([1, 2]);
    t.throws(() => b.add(new Proxy(x.handle, {}), x.handle), { instanceOf: DeviceError, message: /not a tensor of this backend/ });
    const fake = Object.create(Object.getPrototypeOf(x.handle));
    t.throws(() => b.add(fake, x.handle), { instanceOf: DeviceError });
    const throwing = new Proxy(x.handle, { getPrototypeOf() { throw new Error('trap'); } });
    t.throws(() => b.add(throwing, x.handle), { instanceOf: DeviceError });
    t.deepEqual(b.add(x.handle, x.handle).shape, [2]); // the addon still works
  });
});

test('JS that runs while an op reads its arguments cannot dispose them', (t) => {
  const b = cpu();
  scope(() => {
    const x = tensor([1, 2, 3, 4], [2, 2]);
    const shape = [2];
    Object.defineProperty(shape, 0, { get() { x.handle.dispose(); return 2; } });
    t.throws(() => b.sumRows(x.handle, shape), { message: /cannot be disposed while an op is reading its arguments/ });
    t.deepEqual(x.toArray(), [1, 2, 3, 4]);
    const getterThrows = [2];
    Object.defineProperty(getterThrows, 0, { get() { throw new RangeError('from the getter'); } });
    t.throws(() => b.sumRows(x.handle, getterThrows), { instanceOf: RangeError }); // that exception, and no abort
    t.throws(() => b.scatterRows(tensor([1]).share([]).handle, tensor(Int32Array.from([0])).handle, x.handle), { instanceOf: ShapeError });
  });
});

test('a second backward through a consumed tape is an error, not a silent no-op', (t) => {
  const w = keep(tensor([1, 2], [2], { requiresGrad: true }));
  const y = mul(w, w);
  backward(y);
  t.deepEqual(w.grad!.toArray(), [2, 4]);
  t.throws(() => backward(y), { instanceOf: ArgumentError, message: /no longer on the tape/ });
  t.deepEqual(w.grad!.toArray(), [2, 4]);
  const a = mul(w, w), c = mul(w, w);
  backward(a);
  t.throws(() => backward(c), { instanceOf: ArgumentError });
  w.dispose(); a.dispose(); c.dispose(); y.dispose();
});

test('a scope whose function throws drops what it recorded; backward skips a disposed leaf', (t) => {
  const w = keep(tensor(new Float32Array(16).fill(0.5), [4, 4], { requiresGrad: true }));
  const live = liveTensors(), bytes = bytesInUse(), nodes = tapeLength();
  t.throws(() => scope(() => {
    const h = matmul(matmul(tensor(new Float32Array(32).fill(1), [8, 4]), w), w);
    t.true(tapeLength() > nodes);
    slice(h, 0, 0, 99); // fails after two recorded ops
  }), { instanceOf: ShapeError });
  t.is(tapeLength(), nodes);
  t.is(liveTensors(), live);
  t.is(bytesInUse(), bytes);
  // the same leaf disposed between forward and backward: no gradient lands on it (nothing could free it)
  const y = mul(w, w);
  w.dispose();
  backward(y);
  t.is(w.grad, null);
  y.dispose();
  t.is(liveTensors(), live - 1);
});

test('float to integer conversions are defined: full refuses what the dtype cannot hold, casts saturate', (t) => {
  scope(() => {
    for (const v of [NaN, 1e20, 1.5, -3e9]) t.throws(() => full([2], v, { dtype: 'i32' }), { instanceOf: ArgumentError });
    t.deepEqual(full([2], -7, { dtype: 'i32' }).toArray(), [-7, -7]);
    const i = cast(tensor([NaN, 1e20, -1e20, 2.7, -2.7]), 'i32');
    t.deepEqual(Array.from(i.data<'i32'>()), [0, 2147483647, -2147483648, 2, -2]);
  });
});

test('generation and sampling options are checked before any work', (t) => {
  const noModel = {} as MplugOwl; // never reached: the options are checked first
  const tok = llamaTokenizer();
  const run = (o: object, reqs: unknown = [{ prompt: 'Human: hi\nAI: ' }]) => () => generateIds(noModel, tok, reqs as never, o);
  for (const o of [{ maxNewTokens: -5 }, { maxNewTokens: NaN }, { maxNewTokens: 2.5 }, { maxNewTokens: Infinity },
    { maxNewTokens: '3' }, { temperature: -1 }, { temperature: NaN }, { topK: 0.5 }, { topP: 1.5 }, { topP: 0 },
    { seed: 0.5 }, { chunking: 'bogus' }, { onLogits: 'log' }]) {
    t.throws(run(o), { instanceOf: ArgumentError }, JSON.stringify(o));
  }
  t.throws(run({}, []), { instanceOf: ArgumentError, message: /no requests/ });
  t.throws(run({}, [{ prompt: 'Human: hi\nAI: ', images: [zeros([3, 2, 2])] }]), { instanceOf: ArgumentError, message: /1 image\(s\) for 0/ });
  checkSamplingOptions({ temperature: 0, topK: 0, topP: 1, greedy: false });
  t.is(sampleToken(new Float32Array([5, 1, -3]), { temperature: 0 }, () => 0.3), 0);
  t.throws(() => sampleToken(new Float32Array([5, 1, -3]), { temperature: NaN }, () => 0.3), { instanceOf: ArgumentError });
});

test('decode refuses ids outside the vocabulary (image slots, -1, are left out as before)', (t) => {
  const tok = llamaTokenizer();
  t.is(tok.decode([1, 15043, -1, 3186, 2]), 'Hello world');
  for (const ids of [[1e9], [3.5], [NaN], [-2]]) t.throws(() => tok.decode(ids), { instanceOf: TokenizerError });
  t.throws(() => tok.decode('abc' as never), { instanceOf: TokenizerError });
});

test('AdamW.loadState refuses a step count that is not a whole number', (t) => {
  const p = keep(tensor([1, 2], [2], { requiresGrad: true, name: 'p' }));
  const opt = new AdamW({ lr: 0.1 });
  const state = { step: 1.5, steps: new Map<string, number>(), m: new Map(), v: new Map() };
  t.throws(() => opt.loadState(state, [p]), { instanceOf: ArgumentError, message: /bad step 1.5/ });
  p.dispose();
});

test('a batch that does not fit the model names the mismatch: ids past the vocabulary, images of another size', (t) => {
  const model = tinyOwl({ vocab: 50, seed: 2 });
  const T = 12, M = model.config.mediaTokenLength;
  const batch = (ids: number[], pixels: Tensor | null) => ({
    inputIds: Int32Array.from(ids), batchSize: 1, seqLen: T, numImages: Int32Array.from([pixels ? 1 : 0]),
    nonPaddingMask: new Float32Array(T - 1).fill(1), nonMediaMask: new Float32Array(T - 1).fill(1), promptMask: new Float32Array(T - 1),
    pixelValues: pixels,
  });
  const text = Array.from({ length: T }, (_, i) => 1 + i);
  scope(() => {
    t.throws(() => model.forward(batch([...text.slice(0, 5), 99, ...text.slice(6)], null)),
      { instanceOf: ArgumentError, message: /input_ids hold 99 at \[0, 5\], outside the model's 50-token vocabulary/ });
    const withImage = [1, ...Array(M).fill(-1), ...text].slice(0, T);
    t.throws(() => model.forward(batch(withImage, zeros([1, 3, 56, 56]))),
      { instanceOf: ShapeError, message: /images f32\[1,3,56,56\] do not fit the model: it takes \[N, 3, 28, 28\]/ });
    t.notThrows(() => model.forward(batch(withImage, zeros([1, 3, 28, 28]))));
  });
  for (const p of model.params.values()) p.dispose();
});

test('a Float64Array becomes f32 values, not its bytes read as f32', (t) => {
  scope(() => {
    t.deepEqual(tensor(new Float64Array([1.5, -2])).toArray(), [1.5, -2]);
    t.deepEqual(Array.from(tensor(new Float64Array([3, 4]), [2], { dtype: 'i32' }).data<'i32'>()), [3, 4]);
  });
});

// Library audit (session 10): wrong types from plain JS give typed errors naming the argument, not a TypeError from
// deep inside ('shape.join is not a function', "reading 'out_dir'").
test('wrong argument types from JS are typed errors that show what came', async (t) => {
  scope(() => {
    t.throws(() => zeros('23' as never), { instanceOf: ShapeError, message: /the shape must be an array of dims, got "23"/ });
    t.throws(() => zeros(['2', '3'] as never), { instanceOf: ShapeError, message: /shape \["2","3"\] must hold non-negative integers/ });
    t.throws(() => tensor(['a', 'b'] as never, [2]), { instanceOf: ArgumentError, message: /values must be numbers, got "a" at index 0/ });
    t.throws(() => tensor({} as never), { instanceOf: ArgumentError, message: /number\[\] or a typed array/ });
    t.throws(() => add({ shape: [1] } as never, zeros([1])), { instanceOf: ArgumentError, message: /add: an input is not a Tensor/ });
  });
  t.throws(() => loadModel(123 as never), { instanceOf: ConfigError, message: /loadModel: the model directory must be a path, got 123/ });
  await t.throwsAsync(trainStage({} as never, owlComponents()), { instanceOf: ConfigError, message: /validated run configuration/ });
});
