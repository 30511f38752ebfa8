import test from 'ava';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32c, maskedCrc32c } from '../../lib/train/crc32c.ts';
import { TensorBoardWriter } from '../../lib/train/tensorboard.ts';
import { MetricsWriter, type LogRecord } from '../../lib/train/metrics.ts';

// ---- an independent reader: bit-by-bit CRC-32C and a hand-written protobuf walker ----
function crcBitwise(data: Uint8Array): number {
  let c = ~0 >>> 0;
  for (const byte of data) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0x82f63b78 & -(c & 1));
  }
  return ~c >>> 0;
}
const mask = (c: number) => ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;

type Field = { no: number; wire: number; value: bigint | Uint8Array };
function fields(buf: Uint8Array): Field[] {
  const out: Field[] = [];
  let i = 0;
  const varint = () => { let r = 0n, s = 0n; for (;;) { const b = buf[i++]; r |= BigInt(b & 0x7f) << s; s += 7n; if (!(b & 0x80)) return r; } };
  while (i < buf.length) {
    const key = Number(varint());
    const no = key >>> 3, wire = key & 7;
    if (wire === 0) out.push({ no, wire, value: varint() });
    else if (wire === 1) { out.push({ no, wire, value: buf.slice(i, i + 8) }); i += 8; }
    else if (wire === 5) { out.push({ no, wire, value: buf.slice(i, i + 4) }); i += 4; }
    else if (wire === 2) { const n = Number(varint()); out.push({ no, wire, value: buf.slice(i, i + n) }); i += n; }
    else throw new Error(`unexpected wire type ${wire}`);
  }
  return out;
}
const f64 = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset).getFloat64(0, true);
const f32 = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset).getFloat32(0, true);

interface Decoded { wallTime?: number; step?: number; fileVersion?: string; scalars?: Record<string, number>; sessionStatus?: number }
function readEvents(path: string): Decoded[] {
  const buf = new Uint8Array(readFileSync(path));
  const dv = new DataView(buf.buffer, buf.byteOffset);
  const events: Decoded[] = [];
  let off = 0;
  while (off < buf.length) {
    const len = Number(dv.getBigUint64(off, true));
    if (dv.getUint32(off + 8, true) !== mask(crcBitwise(buf.subarray(off, off + 8)))) throw new Error('bad length crc');
    const data = buf.subarray(off + 12, off + 12 + len);
    if (dv.getUint32(off + 12 + len, true) !== mask(crcBitwise(data))) throw new Error('bad data crc');
    off += 12 + len + 4;
    const e: Decoded = {};
    for (const f of fields(data)) {
      if (f.no === 1 && f.wire === 1) e.wallTime = f64(f.value as Uint8Array);
      else if (f.no === 2 && f.wire === 0) e.step = Number(f.value);
      else if (f.no === 3 && f.wire === 2) e.fileVersion = new TextDecoder().decode(f.value as Uint8Array);
      else if (f.no === 5 && f.wire === 2) {
        e.scalars = {};
        for (const v of fields(f.value as Uint8Array)) {
          if (v.no !== 1) throw new Error('Summary: unexpected field');
          let tag = '', val = NaN;
          for (const x of fields(v.value as Uint8Array)) {
            if (x.no === 1) tag = new TextDecoder().decode(x.value as Uint8Array);
            if (x.no === 2 && x.wire === 5) val = f32(x.value as Uint8Array);
          }
          e.scalars[tag] = val;
        }
      } else if (f.no === 7 && f.wire === 2) e.sessionStatus = Number(fields(f.value as Uint8Array).find((x) => x.no === 1)!.value);
      else throw new Error(`Event: unexpected field ${f.no}`);
    }
    events.push(e);
  }
  return events;
}

test('CRC-32C check value: "123456789" → 0xe3069283 (lib and the independent bitwise version)', (t) => {
  const v = new TextEncoder().encode('123456789');
  t.is(crc32c(v), 0xe3069283);
  t.is(crcBitwise(v), 0xe3069283);
  t.is(crc32c(new Uint8Array(0)), 0);
  const rnd = Uint8Array.from({ length: 1001 }, (_, i) => (i * 131 + 7) & 0xff);
  t.is(crc32c(rnd), crcBitwise(rnd));
  t.is(maskedCrc32c(rnd), mask(crcBitwise(rnd)));
});

test('scalar events decode with an independent TFRecord + protobuf reader', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'owlet-tb-'));
  const w = new TensorBoardWriter(dir, { resumeStep: 40 });
  w.scalars(41, { 'train/loss': 2.5, 'train/lr': 1e-4, skipped: NaN, missing: null }, 1700000000.25);
  w.scalars(300000000000, { big: -0.125 }, 1700000001);
  w.close();
  const files = readdirSync(dir);
  t.is(files.length, 1);
  t.regex(files[0], /^events\.out\.tfevents\.\d+\./);
  const ev = readEvents(join(dir, files[0]));
  t.is(ev.length, 4);
  t.is(ev[0].fileVersion, 'brain.Event:2');
  t.true(ev[0].wallTime! > 1.6e9);
  t.deepEqual([ev[1].step, ev[1].sessionStatus], [40, 1], 'SessionLog START at the resume step');
  t.is(ev[2].wallTime, 1700000000.25);
  t.is(ev[2].step, 41);
  t.deepEqual(ev[2].scalars, { 'train/loss': 2.5, 'train/lr': Math.fround(1e-4) }, 'non-finite and null values are left out');
  t.is(ev[3].step, 300000000000, 'int64 steps beyond 32 bits');
  t.deepEqual(ev[3].scalars, { big: -0.125 });
});

test('metrics records go to metrics.jsonl and TensorBoard with the same values', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'owlet-metrics-'));
  const w = new MetricsWriter(dir);
  const r: LogRecord = { step: 12, time: 'now', loss: 1.25, grad_norm: 0.5, lr: 2e-5, ms_per_step: 812, tokens_per_s: 5040,
    images_per_s: 19.5, utilisation: 0.375, peak_mem_bytes: 2 ** 30, accuracy: 0.75, skipped: 0, eval_loss: 1.5 };
  w.write(r);
  w.close();
  const lines = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n');
  t.deepEqual(JSON.parse(lines[0]), r);
  const tb = readdirSync(join(dir, 'tensorboard'));
  const ev = readEvents(join(dir, 'tensorboard', tb[0]));
  t.deepEqual([ev[1].step, ev[1].sessionStatus], [0, 1], 'a fresh run starts a session at step 0');
  t.deepEqual(ev[2].scalars, { 'train/loss': 1.25, 'train/grad_norm': 0.5, 'train/lr': Math.fround(2e-5), 'perf/ms_per_step': 812,
    'perf/tokens_per_s': 5040, 'perf/images_per_s': 19.5, 'perf/utilisation': 0.375, 'perf/peak_mem_bytes': 2 ** 30,
    'train/skipped': 0, 'train/accuracy': 0.75, 'eval/loss': 1.5 });
});
