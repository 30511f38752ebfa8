// TensorBoard event files written by hand: TFRecord framing (length, masked CRC-32C of the length, data, masked
// CRC-32C of the data) around Event protobufs encoded field by field. Only what scalars need:
//   Event   { 1: wall_time double, 2: step int64, 3: file_version string, 5: summary Summary, 7: session_log SessionLog }
//   Summary { 1: repeated Value }   Value { 1: tag string, 2: simple_value float }   SessionLog { 1: status enum }
import { closeSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { maskedCrc32c } from './crc32c.ts';

class ProtoWriter {
  private parts: number[] = [];
  private varint(v: bigint): void {
    let x = BigInt.asUintN(64, v);
    while (x >= 0x80n) { this.parts.push(Number(x & 0x7fn) | 0x80); x >>= 7n; }
    this.parts.push(Number(x));
  }
  private tag(field: number, wire: number): void { this.varint(BigInt((field << 3) | wire)); }
  double(field: number, v: number): this {
    this.tag(field, 1);
    const b = new Uint8Array(8); new DataView(b.buffer).setFloat64(0, v, true);
    this.parts.push(...b); return this;
  }
  float(field: number, v: number): this {
    this.tag(field, 5);
    const b = new Uint8Array(4); new DataView(b.buffer).setFloat32(0, v, true);
    this.parts.push(...b); return this;
  }
  int64(field: number, v: number | bigint): this { this.tag(field, 0); this.varint(BigInt(v)); return this; }
  bytes(field: number, b: Uint8Array): this { this.tag(field, 2); this.varint(BigInt(b.length)); this.parts.push(...b); return this; }
  string(field: number, s: string): this { return this.bytes(field, new TextEncoder().encode(s)); }
  message(field: number, m: ProtoWriter): this { return this.bytes(field, m.finish()); }
  finish(): Uint8Array { return Uint8Array.from(this.parts); }
}

/** One TFRecord: u64 length, u32 masked crc(length), data, u32 masked crc(data), little-endian. */
export function tfrecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length + 4);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(data.length), true);
  dv.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  dv.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

export function encodeFileVersionEvent(wallTime: number): Uint8Array {
  return new ProtoWriter().double(1, wallTime).string(3, 'brain.Event:2').finish();
}

export function encodeScalarsEvent(wallTime: number, step: number, scalars: Record<string, number>): Uint8Array {
  const summary = new ProtoWriter();
  for (const [tag, v] of Object.entries(scalars)) summary.message(1, new ProtoWriter().string(1, tag).float(2, v));
  return new ProtoWriter().double(1, wallTime).int64(2, step).message(5, summary).finish();
}

/** SessionLog START at `step`: TensorBoard drops events of an earlier attempt with a larger step (a resumed run). */
export function encodeSessionStartEvent(wallTime: number, step: number): Uint8Array {
  return new ProtoWriter().double(1, wallTime).int64(2, step).message(7, new ProtoWriter().int64(1, 1)).finish();
}

/** Appends scalar events to `<dir>/events.out.tfevents.<time>.<host>`. */
export class TensorBoardWriter {
  readonly path: string;
  private fd: number | null;

  constructor(dir: string, opts: { resumeStep?: number } = {}) {
    mkdirSync(dir, { recursive: true });
    const now = Date.now() / 1000;
    this.path = join(dir, `events.out.tfevents.${Math.floor(now)}.${hostname()}.${process.pid}`);
    this.fd = openSync(this.path, 'a');
    this.append(encodeFileVersionEvent(now));
    if (opts.resumeStep !== undefined) this.append(encodeSessionStartEvent(now, opts.resumeStep));
  }

  private append(event: Uint8Array): void {
    if (this.fd === null) throw new Error('TensorBoardWriter: already closed');
    const rec = tfrecord(event);
    let off = 0;
    while (off < rec.length) off += writeSync(this.fd, rec, off, rec.length - off);
  }

  /** Writes the finite values of `scalars` at `step`. */
  scalars(step: number, scalars: Record<string, number | null | undefined>, wallTime = Date.now() / 1000): void {
    const finite: Record<string, number> = {};
    for (const [k, v] of Object.entries(scalars)) if (typeof v === 'number' && Number.isFinite(v)) finite[k] = v;
    if (Object.keys(finite).length) this.append(encodeScalarsEvent(wallTime, step, finite));
  }

  flush(): void { if (this.fd !== null) fsyncSync(this.fd); }
  close(): void {
    if (this.fd === null) return;
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = null;
  }
}
