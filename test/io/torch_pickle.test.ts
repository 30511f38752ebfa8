// The safe torch.save reader: values, dtypes, shared storages and strided views of files torch itself wrote
// (test/fixtures/torch, made by scripts/make_torch_fixtures.py, with torch's own account of the contents in
// state_dict.expected.json), ZIP64 and deflated archives, and rejection of everything that is not plain data.
import test from 'ava';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scope, liveTensors, type Tensor } from '../../lib/tensor/index.ts';
import { TorchCheckpoint, readTorchFile } from '../../lib/model/io/torch_pickle.ts';
import { unpickle, PickleTuple } from '../../lib/model/io/pickle.ts';
import { loadCheckpoint } from '../../lib/model/io/checkpoint.ts';
import { CheckpointError } from '../../lib/model/io/errors.ts';

const DIR = new URL('../fixtures/torch/', import.meta.url).pathname;
const expected: Record<string, { dtype: string; shape: number[]; values: number[] }> =
  JSON.parse(readFileSync(join(DIR, 'state_dict.expected.json'), 'utf8'));
const RUNTIME: Record<string, string> = {
  float32: 'f32', float16: 'f16', bfloat16: 'bf16', int64: 'i64', int32: 'i32', uint8: 'u8', bool: 'u8', float64: 'f32',
};

function values(t: Tensor): number[] {
  return t.dtype === 'i64' ? Array.from(t.data<'i64'>(), Number) : t.dtype === 'i32' || t.dtype === 'u8'
    ? Array.from(t.data<'i32'>()) : Array.from(t.toFloat32());
}

function checkAgainstTorch(t: import('ava').ExecutionContext, m: Map<string, Tensor>): void {
  t.deepEqual([...m.keys()], Object.keys(expected));
  for (const [k, e] of Object.entries(expected)) {
    const x = m.get(k)!;
    t.is(x.dtype as string, RUNTIME[e.dtype], k);
    t.deepEqual([...x.shape], e.shape, k);
    const want = e.dtype === 'float64' ? e.values.map(Math.fround) : e.dtype === 'bool' ? e.values.map(Number) : e.values;
    t.deepEqual(values(x), want, k);
  }
}

test('state_dict.bin: every tensor, dtype and value as torch wrote it (f16, bf16, i64, bool, f64, views, scalar)', (t) => {
  scope(() => checkAgainstTorch(t, readTorchFile(join(DIR, 'state_dict.bin'))));
});

test('the same archive re-zipped with ZIP64 records and with deflate reads identically', (t) => {
  scope(() => {
    checkAgainstTorch(t, readTorchFile(join(DIR, 'zip64.bin')));
    checkAgainstTorch(t, readTorchFile(join(DIR, 'deflated.bin')));
  });
});

test('shared storages are one reference; views at offsets and non-contiguous strides are gathered', (t) => {
  using c = TorchCheckpoint.open(join(DIR, 'state_dict.bin'));
  const a = c.tensors.get('shared.a')!, b = c.tensors.get('shared.b')!;
  t.is(a.storage, b.storage);
  t.is(a.offset, 2);
  t.is(b.offset, 10);
  t.deepEqual(c.tensors.get('transposed')!.stride, [1, 4]);
  t.deepEqual(c.tensors.get('strided')!.stride, [5, 2]);
  scope(() => {
    t.deepEqual(Array.from(c.tensor('shared.a').data<'f32'>()), [2, 3, 4, 5, 6, 7]);
    t.deepEqual(Array.from(c.tensor('transposed').data<'f32'>()), [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
    t.deepEqual(Array.from(c.tensor('strided').data<'f32'>()), [5, 7, 9, 10, 12, 14, 15, 17, 19]);
    const w = c.tensor('half', { dtype: 'f32' });
    t.is(w.dtype, 'f32');
  });
  t.deepEqual(c.skipped, []);
});

test('sharded pytorch_model.bin.index.json through loadCheckpoint(dir)', (t) => {
  scope(() => {
    const m = loadCheckpoint(join(DIR, 'sharded'));
    t.deepEqual([...m.keys()], ['a', 'b', 'c']);
    t.deepEqual(Array.from(m.get('a')!.data<'f32'>()), [0, 1, 2, 3, 4, 5]);
    t.deepEqual(Array.from(m.get('b')!.data<'i64'>(), Number), [5, 6]);
    t.is(m.get('c')!.dtype, 'bf16');
    t.deepEqual(Array.from(m.get('c')!.toFloat32()), [1, 1, 1, 1]);
  });
});

test('a pickle that calls os.system is rejected before anything runs', (t) => {
  const before = liveTensors();
  const err = t.throws(() => readTorchFile(join(DIR, 'evil.bin')), { instanceOf: CheckpointError });
  t.regex(err!.message, /global '(posix|os)\.system' is not on the allow-list/);
  t.true(err!.message.includes('evil.bin'));
  t.is(liveTensors(), before);
});

test('legacy (pre-zip) torch.save files and non-archives get a clear message', (t) => {
  t.throws(() => readTorchFile(join(DIR, 'legacy.bin')), { instanceOf: CheckpointError, message: /legacy \(pre-1\.6, non-zip\)/ });
  const f = join(mkdtempSync(join(tmpdir(), 'owlet-pt-')), 'junk.bin');
  writeFileSync(f, 'hello, not a checkpoint');
  t.throws(() => readTorchFile(f), { instanceOf: CheckpointError, message: /not a torch\.save zip archive/ });
});

test('a truncated archive and a storage shorter than the pickle says are typed errors naming file and tensor', (t) => {
  const src = readFileSync(join(DIR, 'state_dict.bin'));
  const dir = mkdtempSync(join(tmpdir(), 'owlet-pt-'));
  const cut = join(dir, 'cut.bin');
  writeFileSync(cut, src.subarray(0, src.length - 300));
  t.throws(() => readTorchFile(cut), { instanceOf: CheckpointError, message: /cut\.bin.*(end-of-central-directory|truncated|beyond)/ });

  // Shrink the central-directory sizes of the storage behind 'transposed'.
  let key = '';
  {
    using c = TorchCheckpoint.open(join(DIR, 'state_dict.bin'));
    key = c.tensors.get('transposed')!.storage.key;
  }
  const bad = Buffer.from(src);
  const at = bad.lastIndexOf(Buffer.from(`state_dict/data/${key}`)) - 46;
  t.is(bad.readUInt32LE(at), 0x02014b50);
  bad.writeUInt32LE(20, at + 20);
  bad.writeUInt32LE(20, at + 24);
  const short = join(dir, 'short.bin');
  writeFileSync(short, bad);
  const err = t.throws(() => readTorchFile(short), { instanceOf: CheckpointError, message: /holds 20 bytes but the pickle says 12 F32 elements/ });
  t.is(err!.tensor, 'transposed');
  t.is(err!.file, short);
});

// ---- the pickle VM on hand-made streams ----

const hex = (s: string) => Uint8Array.from(Buffer.from(s, 'hex'));
const noGlobals = { globals: new Map() };

test('pickle VM: plain data of protocol 4 (dict, list, tuple, float, bool, None, big int, bytes, memo)', (t) => {
  // pickle.dumps({'a': [1, 2.5, 'x'], 'b': (True, None, 2**70, -3, 300, 70000), 'c': b'hi'}, protocol=4)
  const v = unpickle(hex('80049546000000000000007d94288c0161945d94284b014740040000000000008c017894658c01629428884e8a09' +
    '0000000000000000404afdffffff4d2c014a7011010074948c0163944302686994752e'), noGlobals, 'p4') as Map<string, unknown>;
  t.deepEqual(v.get('a'), [1, 2.5, 'x']);
  t.true(v.get('b') instanceof PickleTuple);
  t.deepEqual((v.get('b') as PickleTuple).items, [true, null, 2n ** 70n, -3, 300, 70000]);
  t.deepEqual(v.get('c'), Uint8Array.from([0x68, 0x69]));
});

test('pickle VM: protocol 2 bytes go through _codecs.encode, which is not allowed', (t) => {
  const p2 = hex('80027d71002858010000006171015d7102284b01474004000000000000580100000078710365580100000062710428884e8a' +
    '090000000000000000404afdffffff4d2c014a701101007471055801000000637106635f636f646563730a656e636f64650a710758020000' +
    '006869710858060000006c6174696e31710986710a52710b752e');
  t.throws(() => unpickle(p2, noGlobals, 'p2'), { instanceOf: CheckpointError, message: /global '_codecs\.encode' is not on the allow-list/ });
});

test('pickle VM: code-constructing opcodes and misuse are rejected', (t) => {
  const bad: [string, Uint8Array, RegExp][] = [
    ['GLOBAL builtins.eval', Uint8Array.from([0x80, 2, ...Buffer.from('cbuiltins\neval\n'), 0x2e]), /builtins\.eval/],
    ['INST', Uint8Array.from([0x28, ...Buffer.from('ios\nsystem\n'), 0x2e]), /opcode INST is not allowed/],
    ['NEWOBJ', Uint8Array.from([0x80, 2, 0x4e, 0x29, 0x81, 0x2e]), /opcode NEWOBJ is not allowed/],
    ['REDUCE on a string', Uint8Array.from([0x80, 2, 0x58, 1, 0, 0, 0, 0x78, 0x29, 0x52, 0x2e]), /REDUCE on something that is not an allow-listed callable/],
    ['BUILD on a dict', Uint8Array.from([0x80, 2, 0x7d, 0x7d, 0x62, 0x2e]), /BUILD on an object this reader did not make/],
    ['truncated', Uint8Array.from([0x80, 2, 0x58, 9, 0, 0, 0, 0x78]), /truncated/],
    ['memo miss', Uint8Array.from([0x80, 2, 0x68, 7, 0x2e]), /memo slot 7/],
    ['persistent id', Uint8Array.from([0x80, 2, 0x4e, 0x51, 0x2e]), /persistent ids are not allowed/],
    ['no STOP', Uint8Array.from([0x80, 2, 0x4e]), /truncated/],
  ];
  for (const [what, bytes, re] of bad) t.throws(() => unpickle(bytes, noGlobals, what), { instanceOf: CheckpointError, message: re }, what);
});
