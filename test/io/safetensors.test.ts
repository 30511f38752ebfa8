// safetensors single-file read/write: the fixture against its raw bytes, bit-identical round trips for every dtype,
// the lazy view, and one test per way a file can be corrupt (each error must name the file and the tensor).
import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync, existsSync, readdirSync, truncateSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scope, tensor, liveTensors, type Tensor } from '../../lib/tensor/index.ts';
import { readSafetensorsFile, writeSafetensorsFile, SafetensorsFile } from '../../lib/model/io/safetensors.ts';
import { CheckpointError } from '../../lib/model/io/errors.ts';
import { FIXTURE, rawHeader, craftSafetensors } from './helpers.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'owlet-st-'));

test('fixture model.safetensors: every shape and sampled values equal the raw bytes', (t) => {
  const file = join(FIXTURE, 'model.safetensors');
  const { header, dataStart, bytes } = rawHeader(file);
  scope(() => {
    const { tensors, metadata } = readSafetensorsFile(file);
    t.deepEqual(metadata, { format: 'pt' });
    t.is(tensors.size, Object.keys(header).length);
    for (const [name, h] of Object.entries(header)) {
      const x = tensors.get(name)!;
      t.deepEqual([...x.shape], h.shape, name);
      t.is(x.dtype, 'f32');
      t.is(x.name, name);
      // Decode the raw bytes independently with a DataView and compare first, middle and last values exactly.
      const v = x.data<'f32'>();
      const dv = new DataView(bytes.buffer, bytes.byteOffset + dataStart + h.data_offsets[0]);
      for (const i of [0, v.length >> 1, v.length - 1]) t.is(v[i], dv.getFloat32(i * 4, true), `${name}[${i}]`);
    }
  });
});

test('round trip of the fixture is byte-identical to the original file', (t) => {
  const dir = tmp();
  const src = join(FIXTURE, 'model.safetensors');
  scope(() => {
    const { tensors, metadata } = readSafetensorsFile(src);
    writeSafetensorsFile(join(dir, 'copy.safetensors'), tensors, { metadata });
  });
  t.true(Buffer.compare(readFileSync(src), readFileSync(join(dir, 'copy.safetensors'))) === 0);
  t.deepEqual(readdirSync(dir), ['copy.safetensors']); // no temporary left behind
});

function sample(): Map<string, Tensor> {
  const m = new Map<string, Tensor>();
  m.set('f32', tensor(Float32Array.from([1.5, -2, 3.25, 1e-30, -0, Infinity, 7]), [7]));
  m.set('bf16', tensor(Float32Array.from([1, -2.5, 3.140625, 65280, 0.0078125]), [5], { dtype: 'bf16' }));
  // IEEE half bit patterns of [1, -2.5, 0.333251953125, 65504, 6.103515625e-5, 0] (the CPU backend cannot cast to f16).
  m.set('f16', tensor(Uint16Array.from([0x3c00, 0xc100, 0x3555, 0x7bff, 0x0400, 0x0000]), [2, 3], { dtype: 'f16' }));
  m.set('i64', tensor(BigInt64Array.from([1n, -1n, 40000000000n]), [3]));
  m.set('i32', tensor(Int32Array.from([7, -8, 2147483647]), [3, 1]));
  m.set('u8', tensor(Uint8Array.from([0, 1, 255]), [3]));
  m.set('scalar', tensor(Float32Array.from([42]), []));
  m.set('empty', tensor(new Float32Array(0), [0, 5]));
  return m;
}

const bytesOf = (x: Tensor) => new Uint8Array(x.handle.read());

test('every dtype round-trips bit-identically; data starts 8-byte aligned; header is valid', (t) => {
  const dir = tmp();
  const f = join(dir, 'all.safetensors');
  scope(() => {
    const m = sample();
    writeSafetensorsFile(f, m, { metadata: { who: 'owlet' } });
    const { header, metadata, dataStart } = rawHeader(f);
    t.is(dataStart % 8, 0);
    t.deepEqual(metadata, { who: 'owlet' });
    t.is(header.bf16.dtype, 'BF16');
    t.is(header.i64.dtype, 'I64');
    const back = readSafetensorsFile(f).tensors;
    t.deepEqual([...back.keys()], [...m.keys()]);
    for (const [k, v] of m) {
      t.is(back.get(k)!.dtype, v.dtype, k);
      t.deepEqual([...back.get(k)!.shape], [...v.shape], k);
      t.deepEqual(bytesOf(back.get(k)!), bytesOf(v), k);
    }
  });
});

test('{dtype: f32} widens bf16/f16 exactly and leaves integers alone; bf16 storage is kept by default', (t) => {
  const dir = tmp();
  const f = join(dir, 'half.safetensors');
  scope(() => {
    const m = sample();
    writeSafetensorsFile(f, m);
    const wide = readSafetensorsFile(f, { dtype: 'f32' }).tensors;
    t.is(wide.get('bf16')!.dtype, 'f32');
    t.deepEqual(Array.from(wide.get('bf16')!.data<'f32'>()), [1, -2.5, 3.140625, 65280, 0.0078125]);
    t.is(wide.get('f16')!.dtype, 'f32');
    t.deepEqual(Array.from(wide.get('f16')!.data<'f32'>()), [1, -2.5, 0.333251953125, 65504, 6.103515625e-5, 0]);
    t.is(wide.get('i64')!.dtype, 'i64');
    t.is(wide.get('u8')!.dtype, 'u8');
    t.is(readSafetensorsFile(f).tensors.get('bf16')!.dtype, 'bf16');
    // Saving with {dtype: 'bf16'} narrows floating tensors only.
    const g = join(dir, 'narrow.safetensors');
    writeSafetensorsFile(g, m, { dtype: 'bf16' });
    const { header } = rawHeader(g);
    t.is(header.f32.dtype, 'BF16');
    t.is(header.i32.dtype, 'I32');
  });
});

test('F64 and BOOL files (other writers) load as f32 and u8', (t) => {
  const dir = tmp();
  const f = join(dir, 'f64.safetensors');
  const data = new Uint8Array(8 * 3 + 2);
  const dv = new DataView(data.buffer);
  [0.1, -2, 1e300].forEach((v, i) => dv.setFloat64(i * 8, v, true));
  data.set([1, 0], 24);
  writeFileSync(f, craftSafetensors({
    d: { dtype: 'F64', shape: [3], data_offsets: [0, 24] }, b: { dtype: 'BOOL', shape: [2], data_offsets: [24, 26] },
  }, data));
  scope(() => {
    const m = readSafetensorsFile(f).tensors;
    t.deepEqual(Array.from(m.get('d')!.data<'f32'>()), [Math.fround(0.1), -2, Infinity]);
    t.is(m.get('b')!.dtype, 'u8');
    t.deepEqual(Array.from(m.get('b')!.data<'u8'>()), [1, 0]);
  });
});

test('lazy view: opening reads the header only; tensors are read on demand, filter skips the rest', (t) => {
  const file = join(FIXTURE, 'model.safetensors');
  scope(() => {
    const before = liveTensors();
    using f = SafetensorsFile.open(file);
    t.is(liveTensors(), before);
    t.true(f.has('query_tokens'));
    t.deepEqual(f.entry('query_tokens').shape, [1, 8, 64]);
    const q = f.tensor('query_tokens');
    t.deepEqual([...q.shape], [1, 8, 64]);
    const some = f.readAll({ filter: (n) => n.startsWith('vision_model.') });
    t.true([...some.keys()].every((n) => n.startsWith('vision_model.')));
    t.is(some.size, 2 * 12 + 7);
  });
});

// ---- corruption: every case names the file and, where one is involved, the tensor ----

function corruptCase(t: import('ava').ExecutionContext, bytes: Uint8Array, re: RegExp, tensorName?: string): void {
  const f = join(tmp(), 'bad.safetensors');
  writeFileSync(f, bytes);
  const before = liveTensors();
  const err = t.throws(() => readSafetensorsFile(f), { instanceOf: CheckpointError, message: re });
  t.true(err!.message.includes(f), `message names the file: ${err!.message}`);
  if (tensorName) {
    t.is(err!.tensor, tensorName);
    t.true(err!.message.includes(`'${tensorName}'`), `message names the tensor: ${err!.message}`);
  }
  t.is(liveTensors(), before, 'nothing leaks on failure');
}

const good = () => craftSafetensors({
  a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [3], data_offsets: [16, 28] },
}, new Uint8Array(28));

test('corrupt: a file shorter than 8 bytes', (t) => corruptCase(t, new Uint8Array(5), /too short/));

test('corrupt: header length beyond the end of the file', (t) => {
  const b = good();
  new DataView(b.buffer).setBigUint64(0, 1n << 40n, true);
  corruptCase(t, b, /header length 1099511627776 runs past the end/);
});

test('corrupt: truncated data names the tensor whose bytes are cut', (t) => {
  const b = good();
  corruptCase(t, b.subarray(0, b.length - 5), /run past the end of the data section/, 'b');
});

test('corrupt: a truncated copy of the fixture', (t) => {
  const src = readFileSync(join(FIXTURE, 'model.safetensors'));
  const f = join(tmp(), 'cut.safetensors');
  writeFileSync(f, src);
  truncateSync(f, statSync(f).size - 1000);
  const { header, dataStart } = rawHeader(f);
  const dataLen = statSync(f).size - dataStart;
  // The first entry (in header order) whose bytes are no longer all there.
  const cut = Object.entries(header).find(([, h]) => h.data_offsets[1] > dataLen)![0];
  const err = t.throws(() => readSafetensorsFile(f), { instanceOf: CheckpointError });
  t.regex(err!.message, /truncated/);
  t.is(err!.file, f);
  t.is(err!.tensor, cut);
});

test('corrupt: data_offsets that do not match numel × dtype size', (t) => corruptCase(t, craftSafetensors({
  a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 12] },
}, new Uint8Array(16)), /lies about the size: data_offsets \[0, 12\] span 12 bytes but F32\[2, 2\] needs 16/, 'a'));

test('corrupt: overlapping tensors', (t) => corruptCase(t, craftSafetensors({
  a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] },
}, new Uint8Array(16)), /overlap those of 'a'/, 'b'));

test('corrupt: unknown and unsupported dtypes', (t) => {
  corruptCase(t, craftSafetensors({ a: { dtype: 'F17', shape: [1], data_offsets: [0, 2] } }, new Uint8Array(2)),
    /unknown dtype 'F17'/, 'a');
  corruptCase(t, craftSafetensors({ a: { dtype: 'I16', shape: [1], data_offsets: [0, 2] } }, new Uint8Array(2)),
    /I16 is valid safetensors but owlet cannot hold it/, 'a');
});

test('corrupt: malformed header JSON, shape and offsets', (t) => {
  const junk = new Uint8Array(16);
  new DataView(junk.buffer).setBigUint64(0, 8n, true);
  junk.set(new TextEncoder().encode('{"a":[1,'), 8);
  corruptCase(t, junk, /not valid UTF-8 JSON/);
  corruptCase(t, craftSafetensors({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, new Uint8Array(4)),
    /shape \[-1\] is not a list of non-negative integers/, 'a');
  corruptCase(t, craftSafetensors({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, new Uint8Array(4)),
    /data_offsets \[4,0\] is not \[begin, end\]/, 'a');
});

test('missing tensor and wrong shape against an expected map', (t) => {
  const f = join(tmp(), 'ok.safetensors');
  writeFileSync(f, good());
  const e1 = t.throws(() => readSafetensorsFile(f, { expected: new Map([['a', [2, 2]], ['c', [5]]]) }),
    { instanceOf: CheckpointError, message: /missing \(expected shape \[5\]\)/ });
  t.is(e1!.tensor, 'c');
  t.true(e1!.message.includes(f));
  const e2 = t.throws(() => readSafetensorsFile(f, { expected: new Map([['a', [4]], ['b', [3]]]) }),
    { instanceOf: CheckpointError, message: /has shape \[2, 2\] but the config expects \[4\]/ });
  t.is(e2!.tensor, 'a');
  t.is(e2!.file, f);
  t.throws(() => readSafetensorsFile(f, { expected: new Map([['a', [2, 2]]]), strict: true }),
    { instanceOf: CheckpointError, message: /'b'.*unexpected key/ });
  scope(() => t.is(readSafetensorsFile(f, { expected: new Map([['a', [2, 2]]]) }).tensors.size, 2));
});

test('a failed write leaves the previous file intact and no temporary behind', (t) => {
  const dir = tmp();
  const f = join(dir, 'keep.safetensors');
  writeFileSync(f, good());
  const before = readFileSync(f);
  scope(() => {
    const a = tensor([1, 2, 3]);
    const b = tensor([4, 5]);
    b.dispose();
    t.throws(() => writeSafetensorsFile(f, new Map([['a', a], ['b', b]])), { message: /'b'|disposed/ });
  });
  t.deepEqual(readFileSync(f), before);
  t.deepEqual(readdirSync(dir), ['keep.safetensors']);
  t.true(existsSync(f));
});
