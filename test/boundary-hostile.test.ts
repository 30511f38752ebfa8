// Hostile JS at the N-API boundary (an audit of the binding and the tensor runtime): JS that runs while the addon works
// (a getter on a shape, a setter someone put on Array.prototype or Object.prototype), in-place ops handed an input
// that shares their output's storage, worker threads calling the addon at once, a typed array on a SharedArrayBuffer,
// integer values that do not fit their dtype, and a backward seed of another kind. Each once aborted or crashed node,
// or gave wrong numbers or an error from deep inside. The cases that crashed run in a child process, so that a
// regression fails its test instead of taking the test worker down.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpu } from '../lib/native.ts';
import {
  tensor, scope, keep, mul, backward, quickGelu, silu, softmax, dropout, rope, slice, split, reshape, patchify, cast,
  ArgumentError, ShapeError, DisposedError,
} from '../lib/tensor/index.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

// Runs `body` (CommonJS, with `addon` the CPU addon) in a fresh node, from a file (a worker can load it again);
// returns its exit status, signal and output.
function inChild(body: string): { status: number | null; signal: string | null; out: string } {
  const gyp = join(root, 'node_modules/node-gyp-build');
  const load = `const addon = require(process.env.OWLET_NATIVE_CPU || require(${JSON.stringify(gyp)}).path(${JSON.stringify(root)}));\n`;
  const dir = mkdtempSync(join(tmpdir(), 'owlet-hostile-'));
  const file = join(dir, 'probe.cjs');
  writeFileSync(file, load + body);
  try {
    const r = spawnSync(process.execPath, [file], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' }, timeout: 60_000 });
    return { status: r.status, signal: r.signal, out: `${r.stdout}${r.stderr}` };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('a getter on view\'s shape that disposes the tensor gets a DisposedError, not a view of freed storage', (t) => {
  const r = inChild(`
    const x = addon.fromBuffer('f32', [2], new Float32Array([1, 2]));
    const shape = [2];
    Object.defineProperty(shape, 0, { get() { x.dispose(); return 2; } });
    try { const v = x.view(shape); console.log('accepted', new Float32Array(addon.add(v, v).read())); }
    catch (e) { console.log('refused', e.code, e.message); }`);
  t.is(r.status, 0, r.out);
  t.regex(r.out, /refused OWLET_DISPOSED view: tensor was already disposed/);
});

test('a getter on view\'s shape that throws: that exception, not a fatal abort of node', (t) => {
  const r = inChild(`
    const x = addon.fromBuffer('f32', [2], new Float32Array([1, 2]));
    const shape = [2];
    Object.defineProperty(shape, 0, { get() { throw new RangeError('from the getter'); } });
    try { x.view(shape); console.log('accepted'); } catch (e) { console.log('threw', e.name, e.message); }
    console.log('still alive', x.view([1, 2]).shape.join(','));`);
  t.is(r.status, 0, r.out);
  t.regex(r.out, /threw RangeError from the getter/);
  t.regex(r.out, /still alive 1,2/);
});

test('setters on Array.prototype and Object.prototype run no JS inside the addon and cannot abort node', (t) => {
  // Every way the addon hands values back: result arrays (with nulls), the arrays of readTake, memory's object, a
  // handle's shape and an error's code and op.
  const r = inChild(`
    let ran = 0;
    const keys = [[Array.prototype, '0'], [Array.prototype, '1'], [Array.prototype, '2'], [Object.prototype, 'code'],
      [Object.prototype, 'op'], [Object.prototype, 'bytesInUse']];
    for (const [o, k] of keys) Object.defineProperty(o, k, { set() { ran++; throw new Error('setter ' + k); }, configurable: true });
    const f = (s) => addon.full('f32', s, 0.5);
    const out = new Map(); // (not an array: its push would run the setters)
    try {
      out.set(1, addon.attentionForward(f([1, 2, 1, 4]), f([1, 2, 1, 4]), f([1, 2, 1, 4]), null, true, 0.5, 0, 1).length);
      out.set(2, addon.layerNormBackward(f([2, 3]), f([2, 3]), null, f([2]), f([2]), true, false).map((x) => x === null ? 'null' : x.shape.join('x')).join(' '));
      out.set(3, addon.loraBackward(f([2, 3]), f([2, 4]), f([3, 4]), f([2, 4]), f([3, 2]), f([2, 2]), 1, 0, 0, false)[0]);
      out.set(4, addon.readTake(addon.readQueue([f([2]), f([3])])).map((b) => b.byteLength).join(' '));
      out.set(5, typeof addon.memory().bytesInUse);
      try { addon.add(f([2]), f([3])); } catch (e) { out.set(6, e.message); }
    } catch (e) { out.set(7, 'threw ' + e.message); }
    for (const [o, k] of keys) delete o[k];
    console.log(JSON.stringify([...out.values()]), 'setters ran', ran);`);
  t.is(r.status, 0, r.out);
  t.regex(r.out, /\[2,"2x3 null null",null,"8 12","number","add: b f32\[3\]@cpu must match a f32\[2\]@cpu or a trailing part of its shape"\] setters ran 0/);
});

test('scatterRows refuses indices that share dst\'s storage (an overwritten index sent a row outside dst)', (t) => {
  const r = inChild(`
    const dst = addon.fromBuffer('i32', [2, 1], Int32Array.from([1, 0]));
    const src = addon.fromBuffer('i32', [2, 1], Int32Array.from([2000000000, 5]));
    try { addon.scatterRows(dst, dst.view([2]), src, false); console.log('accepted'); } catch (e) { console.log('refused', e.code, e.message); }`);
  t.is(r.status, 0, r.out);
  t.regex(r.out, /refused OWLET_ARGUMENT scatterRows: idx i32\[2\]@cpu shares its storage with dst i32\[2,1\]@cpu/);
});

test('in-place ops refuse an input that shares their output\'s storage instead of reading what they overwrote', (t) => {
  const b = cpu();
  scope(() => {
    const c = tensor([1, 2, 3, 4], [2, 2]);
    const eye = tensor([1, 0, 0, 1], [2, 2]);
    // c = c·eyeᵀ... read from c while BLAS writes it: once [0, 0, 0, 0] for c = eye·cᵀ
    t.throws(() => b.matmulInto(c.handle, eye.handle, c.handle, false, true, 1, 0), { instanceOf: ArgumentError, message: /b f32\[2,2\]@cpu shares its storage with c/ });
    t.throws(() => b.matmulInto(c.handle, c.share([2, 2]).handle, eye.handle, false, false, 1, 0), { instanceOf: ArgumentError, message: /a f32\[2,2\]@cpu shares its storage with c/ });
    const rows = tensor([1, 2, 3, 4, 5, 6], [3, 2]);
    const idx = tensor(Int32Array.from([2, 1, 0]));
    t.throws(() => b.scatterRows(rows.handle, idx.handle, rows.handle, false), { instanceOf: ArgumentError, message: /src f32\[3,2\]@cpu shares its storage with dst/ });
    t.deepEqual(c.toArray(), [1, 2, 3, 4]); // nothing was written
    t.deepEqual(rows.toArray(), [1, 2, 3, 4, 5, 6]);
    // separate copies are fine
    b.matmulInto(c.handle, eye.handle, b.clone(c.handle), false, true, 1, 0);
    t.deepEqual(c.toArray(), [1, 3, 2, 4]);
  });
});

test('matmulInto takes c of the product\'s shape only (the kernel reads M and N from c\'s last two dims)', (t) => {
  const b = cpu();
  scope(() => {
    const a = tensor([1, 2, 3, 4, 5, 6], [2, 3]), w = tensor([1, 0, 0, 1, 1, 1], [3, 2]);
    for (const s of [[4], [2, 2, 1], [1, 4]]) {
      t.throws(() => b.matmulInto(tensor([0, 0, 0, 0], s).handle, a.handle, w.handle, false, false, 1, 0), { instanceOf: ShapeError, message: /c must have shape \[2,2\]/ }, String(s));
    }
    const c = tensor([0, 0, 0, 0], [2, 2]);
    b.matmulInto(c.handle, a.handle, w.handle, false, false, 1, 0);
    t.deepEqual(c.toArray(), [4, 5, 10, 11]);
  });
});

test('integer tensors from numbers hold them exactly or refuse them, and read back exactly', (t) => {
  scope(() => {
    t.deepEqual(tensor([16777217, 2 ** 40 + 1, -(2 ** 53)], [3], { dtype: 'i64' }).toArray(), [16777217, 2 ** 40 + 1, -(2 ** 53)]);
    t.deepEqual(tensor(Int32Array.from([16777217, -2147483648])).toArray(), [16777217, -2147483648]); // (once through f32: 16777216)
    t.deepEqual(tensor(new Float64Array([255, 0]), [2], { dtype: 'u8' }).toArray(), [255, 0]);
    t.is(tensor([2147483647], [1], { dtype: 'i32' }).item(), 2147483647);
    // Int32Array.from wrapped 3e9 to -1294967296 and truncated 1.5; f32 rounded i64s; the u8 cast saturated 300
    for (const [v, dtype] of [[3e9, 'i32'], [1.5, 'i32'], [NaN, 'i32'], [2 ** 63, 'i64'], [300, 'u8'], [-1, 'u8']] as const) {
      t.throws(() => tensor([0, v], [2], { dtype }), { instanceOf: ArgumentError, message: new RegExp(`value ${v} at index 1 is not a whole number that ${dtype} holds`) });
    }
    // a view of no dtype of its own needs one: its bytes were read as f32 (Uint32Array [1, 2, 3] -> three denormals)
    t.throws(() => tensor(new Uint32Array([1, 2, 3])), { instanceOf: ArgumentError, message: /Uint32Array data has no dtype of its own: give o.dtype/ });
    t.deepEqual(tensor(new Uint16Array([0x3f80, 0x4000]), [2], { dtype: 'bf16' }).toArray(), [1, 2]);
  });
});

// Worker threads each load the addon as their own JS environment, and call it at the same time as the main thread.
test('ops on several threads at once: one thread\'s op does not refuse another\'s dispose, queued reads stay intact', (t) => {
  const r = inChild(`
    const { Worker, isMainThread, parentPort } = require('node:worker_threads');
    function run(ms) {
      const x = addon.full('f32', [64, 64], 1);
      let refused = 0, wrong = 0, n = 0;
      for (const t0 = Date.now(); Date.now() - t0 < ms; n++) {
        const y = addon.matmul(x, x);
        const [by, bx] = addon.readTake(addon.readQueue([y, x]));
        if (new Float32Array(by)[4095] !== 64 || bx.byteLength !== 16384) wrong++;
        try { y.dispose(); } catch (e) { refused++; }
      }
      return { refused, wrong, n };
    }
    if (isMainThread) {
      const results = [];
      const finish = (res) => {
        results.push(res);
        if (results.length === 3) console.log('refused', results.reduce((s, q) => s + q.refused, 0), 'wrong', results.reduce((s, q) => s + q.wrong, 0), 'all ran', results.every((q) => q.n > 0));
      };
      for (let i = 0; i < 2; i++) new Worker(__filename).on('message', finish);
      finish(run(800));
    } else parentPort.postMessage(run(800));`);
  t.is(r.status, 0, r.out);
  t.regex(r.out, /refused 0 wrong 0 all ran true/);
});

test('fromBuffer reads a typed array on a SharedArrayBuffer (its memory was taken as address 0) and says which dim is too big', (t) => {
  const r = inChild(`
    const shared = new Float32Array(new SharedArrayBuffer(16));
    shared.set([1, 2.5, -3, 4]);
    try {
      console.log('f32', Array.from(new Float32Array(addon.fromBuffer('f32', [4], shared).read())).join(' '));
      console.log('bf16', Array.from(new Float32Array(addon.cast(addon.fromBuffer('bf16', [2], shared.subarray(1, 3)), 'f32').read())).join(' '));
    } catch (e) { console.log('refused', e.message); }
    try { addon.empty('i64', [2 ** 59]); } catch (e) { console.log(e.message); }`);
  t.is(r.status, 0, r.out);
  t.regex(r.out, /f32 1 2.5 -3 4\nbf16 2.5 -3\n/);
  t.regex(r.out, /empty: shape \(argument 1\) must hold non-negative integers of at most 9e15, got 5.76461e\+17 at index 0/);
});

test('backward refuses a grad that is not a Tensor of the loss\'s dtype before any op runs', (t) => {
  const w = keep(tensor([1, 2], [2], { requiresGrad: true }));
  scope(() => {
    const y = mul(w, w);
    t.throws(() => backward(y, 3 as never), { instanceOf: ArgumentError, message: /backward: grad must be a Tensor, got number/ });
    t.throws(() => backward(y, tensor(Int32Array.from([1, 1]))), { instanceOf: ArgumentError, message: /backward: grad i32\[2\] must have the loss's dtype \(f32\[2\]\)/ });
    t.is(w.grad, null);
    backward(y, tensor([1, 1])); // the tape is still there for a right one
    t.deepEqual(w.grad!.toArray(), [2, 4]);
  });
  w.dispose();
});

test('terminating a worker in the middle of its ops ends that worker only, and frees its tensors', (t) => {
  // (Napi's InstanceOf and Get answered the terminating environment with a JS error of their own, which cannot be
  // thrown there: a fatal abort of the whole process)
  const r = inChild(`
    const { Worker, isMainThread } = require('node:worker_threads');
    if (isMainThread) {
      let ended = 0;
      const start = () => {
        const w = new Worker(__filename);
        w.once('online', () => setTimeout(() => w.terminate().then(() => {
          if (++ended < 8) start();
          else console.log('terminated', ended, 'bytes in use', addon.memory().bytesInUse);
        }), 20 + 13 * ended));
      };
      start();
    } else {
      const x = addon.full('f32', [96, 96], 1);
      const held = [];
      for (;;) {
        held.push(addon.matmul(x, x));
        if (held.length > 20) held.shift().dispose();
        addon.readTake(addon.readQueue([x, held[0]]));
      }
    }`);
  t.is(r.status, 0, r.out);
  t.regex(r.out, /terminated 8 bytes in use 0/);
});

test('one-input ops name themselves when handed something that is not a Tensor (was: "reading \'quickGeluForward\'")', (t) => {
  const ops: [string, (x: never) => unknown][] = [['quickGelu', quickGelu], ['silu', silu], ['softmax', softmax], ['dropout', (x) => dropout(x, 0.5, 1)],
    ['rope', rope], ['slice', (x) => slice(x, 0, 0, 1)], ['split', (x) => split(x, 0, [1])], ['reshape', (x) => reshape(x, [1])],
    ['patchify', (x) => patchify(x, 2)], ['cast', (x) => cast(x, 'bf16')]];
  for (const [name, op] of ops) {
    for (const bad of [undefined, { shape: [1] }]) {
      t.throws(() => op(bad as never), { instanceOf: ArgumentError, message: new RegExp(`^${name}: an input is not a Tensor`) }, name);
    }
  }
  const x = tensor([1, 2]);
  x.dispose();
  t.throws(() => quickGelu(x), { instanceOf: DisposedError, message: /quickGelu: input .* was already disposed/ });
});

// A dropout probability just below 1 rounds to 1.0f in the kernels, which would drop every element and scale by 1/0:
// dropoutForward refused it, attention and LoRA took it (one rule for the three now, Args::dropout_p).
test('a dropout probability that rounds to 1 as a float is refused by dropout, attention and LoRA alike', (t) => {
  const almostOne = 1 - 2 ** -26;
  const b = cpu();
  const h = (shape: number[]) => b.fromBuffer('f32', shape, new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.5));
  const q = h([1, 2, 1, 4]), x = h([2, 4]), w = h([3, 4]), la = h([2, 4]), lb = h([3, 2]);
  try {
    for (const [name, call] of [
      ['dropoutForward', () => b.dropoutForward(x, almostOne, 1)],
      ['attentionForward', () => b.attentionForward(q, q, q, null, false, 0.5, almostOne, 1)],
      ['loraForward', () => b.loraForward(x, w, la, lb, 2, almostOne, 1)],
    ] as const) {
      t.throws(call, { code: 'OWLET_ARGUMENT', message: /must be a dropout probability in \[0, 1\) \(as a float\)/ }, name);
    }
    // (a p that stays below 1 as a float still runs)
    const [y, xa] = b.loraForward(x, w, la, lb, 2, 0.9999, 1);
    y.dispose(); xa.dispose();
  } finally {
    for (const v of [q, x, w, la, lb]) v.dispose();
  }
});
