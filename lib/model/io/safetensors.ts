// safetensors, single file: u64-LE header length N, N bytes of UTF-8 JSON
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}), then the raw little-endian data,
// offsets relative to the data start (8 + N). Reading parses and validates the header, then reads each tensor's byte
// range with positional reads into a scratch buffer that is copied into native storage: a checkpoint is never held
// twice. Writing streams tensor by tensor into a temporary file (atomic.ts) and renames it into place.
import { closeSync, fstatSync } from 'node:fs';
import type { DType, Tensor } from '../../tensor/index.ts';
import { commitStaged, stageFile, type StagedFile } from './atomic.ts';
import { openRegularFile, readExact, Scratch, savedDType, tensorBytes, tensorFromBytes, writeAll, type TensorLoadOptions } from './bytes.ts';
import { isSafetensorsDType, numelOf, SAFETENSORS_DTYPES, safetensorsDTypeOf, UNSUPPORTED_SAFETENSORS_DTYPES,
  RUNTIME_SIZE, type SafetensorsDType } from './dtypes.ts';
import { CheckpointError } from './errors.ts';
import { readFromSource, type LoadOptions, type TensorSource } from './source.ts';

/** One tensor's table-of-contents entry; `begin`/`end` are absolute byte offsets in the file. */
export interface SafetensorsEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  entries: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
  /** Absolute offset of the data section (8 + header length). */
  dataStart: number;
  fileSize: number;
}

/** The reference implementation's limit; a larger "header" is a corrupt length field, not a header. */
const MAX_HEADER_BYTES = 100_000_000;

const isNatural = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Parses and validates the header of an open file. Every lie a header can tell is caught here, before any data read. */
export function readSafetensorsHeader(file: string, fd: number): SafetensorsHeader {
  const fileSize = fstatSync(fd).size;
  if (fileSize < 8) {
    throw new CheckpointError(`truncated: ${fileSize} bytes, too short for the 8-byte safetensors header length`, { file });
  }
  const lenBytes = new Uint8Array(8);
  readExact(fd, lenBytes, 0, { file });
  const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (n > BigInt(fileSize - 8)) {
    throw new CheckpointError(`header length ${n} runs past the end of the file (${fileSize} bytes): truncated, or not ` +
      'a safetensors file', { file });
  }
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new CheckpointError(`header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit: corrupt length field`, { file });
  }
  const headerLen = Number(n);
  const headerBytes = new Uint8Array(headerLen);
  readExact(fd, headerBytes, 8, { file });
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (e) {
    throw new CheckpointError(`header is not valid UTF-8 JSON (${(e as Error).message}): corrupt, or not a safetensors ` +
      'file', { file });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new CheckpointError('header JSON is not an object', { file });
  }
  const dataStart = 8 + headerLen;
  const dataLen = fileSize - dataStart;
  const entries = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(file, raw);
      continue;
    }
    entries.set(name, parseEntry(file, name, raw, dataStart, dataLen));
  }
  checkNoOverlap(file, entries, dataStart, dataLen);
  return { entries, metadata, dataStart, fileSize };
}

function parseMetadata(file: string, raw: unknown): Record<string, string> {
  if (raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new CheckpointError('__metadata__ is not an object', { file });
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (typeof v !== 'string') throw new CheckpointError(`__metadata__.${k} is not a string`, { file });
  }
  return { ...(raw as Record<string, string>) };
}

function parseEntry(file: string, name: string, raw: unknown, dataStart: number, dataLen: number): SafetensorsEntry {
  const where = { file, tensor: name };
  if (typeof raw !== 'object' || raw === null) throw new CheckpointError('header entry is not an object', where);
  const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
  if (typeof dtype !== 'string') throw new CheckpointError('header entry has no dtype', where);
  if (!isSafetensorsDType(dtype)) {
    throw new CheckpointError(UNSUPPORTED_SAFETENSORS_DTYPES.has(dtype)
      ? `dtype ${dtype} is valid safetensors but owlet cannot hold it (supported: ${Object.keys(SAFETENSORS_DTYPES).join(', ')})`
      : `unknown dtype '${dtype}'`, where);
  }
  if (!Array.isArray(shape) || !shape.every(isNatural)) {
    throw new CheckpointError(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`, where);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNatural) || offsets[0] > offsets[1]) {
    throw new CheckpointError(`data_offsets ${JSON.stringify(offsets)} is not [begin, end] with 0 <= begin <= end`, where);
  }
  const [b, e] = offsets as [number, number];
  const want = numelOf(shape) * SAFETENSORS_DTYPES[dtype].size;
  if (e - b !== want) {
    throw new CheckpointError(`header lies about the size: data_offsets [${b}, ${e}] span ${e - b} bytes but ` +
      `${dtype}[${shape.join(', ')}] needs ${want}`, where);
  }
  if (e > dataLen) {
    throw new CheckpointError(`data_offsets [${b}, ${e}] run past the end of the data section (${dataLen} bytes): ` +
      'the file is truncated or the header lies', where);
  }
  return { name, dtype, shape: shape as number[], begin: dataStart + b, end: dataStart + e };
}

/**
 * The tensors' byte ranges must tile the data section exactly, as the format requires ("entirely indexed, no holes")
 * and the reference reader checks. An overlap lets two tensors share bytes; a hole is what a tensor named twice in the
 * header leaves behind (JSON.parse keeps the last of two equal keys, so one of two different tensors was dropped
 * without a word), or a header that does not describe the file.
 */
function checkNoOverlap(file: string, entries: Map<string, SafetensorsEntry>, dataStart: number, dataLen: number): void {
  const sorted = [...entries.values()].filter((x) => x.end > x.begin).sort((x, y) => x.begin - y.begin);
  let covered = dataStart;
  for (let i = 0; i < sorted.length; i++) {
    if (i > 0 && sorted[i].begin < sorted[i - 1].end) {
      throw new CheckpointError(`header lies: its bytes overlap those of '${sorted[i - 1].name}'`,
        { file, tensor: sorted[i].name });
    }
    if (sorted[i].begin > covered) throw holeError(file, covered - dataStart, sorted[i].begin - dataStart, sorted[i].name);
    covered = sorted[i].end;
  }
  if (covered < dataStart + dataLen) throw holeError(file, covered - dataStart, dataLen);
}

function holeError(file: string, from: number, to: number, before?: string): CheckpointError {
  return new CheckpointError(`bytes [${from}, ${to}) of the data section belong to no tensor` +
    (before ? ` (the next tensor is '${before}')` : ' (after the last tensor)') + ': the header does not describe the ' +
    'data (a tensor named twice in the header, or bytes appended to the file)', { file });
}

/**
 * An open safetensors file whose tensors are read on demand (the lazy view): opening reads only the header, and
 * `tensor(name)` reads that tensor's bytes. Close it (or use `using`) to release the file descriptor.
 */
export class SafetensorsFile implements TensorSource {
  readonly path: string;
  readonly header: SafetensorsHeader;
  private fd: number | null;
  private scratch = new Scratch();

  private constructor(path: string, fd: number, header: SafetensorsHeader) {
    this.path = path;
    this.fd = fd;
    this.header = header;
  }

  static open(path: string): SafetensorsFile {
    const fd = openRegularFile(path);
    try {
      return new SafetensorsFile(path, fd, readSafetensorsHeader(path, fd));
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  get names(): string[] { return [...this.header.entries.keys()]; }
  get metadata(): Record<string, string> { return this.header.metadata; }
  has(name: string): boolean { return this.header.entries.has(name); }
  shapeOf(name: string): number[] { return this.entry(name).shape; }
  fileOf(): string { return this.path; }
  entry(name: string): SafetensorsEntry {
    const e = this.header.entries.get(name);
    if (!e) throw new CheckpointError('missing from this file', { file: this.path, tensor: name });
    return e;
  }

  /** Reads one tensor (a new Tensor the caller owns). */
  tensor(name: string, opts: TensorLoadOptions = {}): Tensor {
    if (this.fd === null) throw new CheckpointError('file was already closed', { file: this.path, tensor: name });
    const e = this.entry(name);
    const bytes = this.scratch.get(e.end - e.begin);
    readExact(this.fd, bytes, e.begin, { file: this.path, tensor: name });
    const t = tensorFromBytes(bytes, SAFETENSORS_DTYPES[e.dtype], e.shape, opts);
    t.name = name;
    return t;
  }

  /** Every tensor (or those passing `filter`), checked against `expected` before any data is read. */
  readAll(opts: LoadOptions = {}): Map<string, Tensor> { return readFromSource(this, opts); }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
  [Symbol.dispose](): void { this.close(); }
}

/** Reads a single safetensors file: its tensors (in header order) and its `__metadata__`. */
export function readSafetensorsFile(path: string, opts: LoadOptions = {}):
  { tensors: Map<string, Tensor>; metadata: Record<string, string> } {
  const f = SafetensorsFile.open(path);
  try {
    return { tensors: f.readAll(opts), metadata: { ...f.metadata } };
  } finally {
    f.close();
  }
}

export interface SafetensorsSaveOptions {
  metadata?: Record<string, string>;
  /** Floating tensors are written in this dtype (e.g. 'bf16' to halve a checkpoint); integer tensors keep theirs. */
  dtype?: DType;
}

/** The header JSON bytes for `tensors`, padded with spaces so the data starts 8-byte aligned. */
export function encodeHeader(tensors: Iterable<[string, { dtype: DType; shape: readonly number[] }]>,
  metadata: Record<string, string> | undefined): { header: Uint8Array; totalData: number } {
  const obj: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, { dtype, shape }] of tensors) {
    if (name === '__metadata__' || name === '') throw new CheckpointError(`'${name}' cannot be a tensor name`, { tensor: name });
    const size = numelOf(shape) * RUNTIME_SIZE[dtype];
    obj[name] = { dtype: safetensorsDTypeOf(dtype), shape: [...shape], data_offsets: [offset, offset + size] };
    offset += size;
  }
  if (metadata && Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new CheckpointError(`metadata value for '${k}' must be a string`);
    }
    obj.__metadata__ = metadata;
  }
  const json = new TextEncoder().encode(JSON.stringify(obj));
  const padded = Math.ceil((8 + json.byteLength) / 8) * 8 - 8;
  const header = new Uint8Array(8 + padded).fill(0x20);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(json, 8);
  return { header, totalData: offset };
}

/** Writes one safetensors file atomically, streaming one tensor at a time (peak extra memory: one tensor). */
export function writeSafetensorsFile(path: string, tensors: Iterable<[string, Tensor]>, opts: SafetensorsSaveOptions = {}):
  void {
  commitStaged(stageSafetensorsFile(path, tensors, opts));
}

/** Writes the file beside `path` under a temporary name, complete and fsynced; `commitStaged` moves it into place. */
export function stageSafetensorsFile(path: string, tensors: Iterable<[string, Tensor]>, opts: SafetensorsSaveOptions = {}):
  StagedFile {
  const list = [...tensors];
  const { header } = encodeHeader(list.map(([n, t]) => [n, { dtype: savedDType(t, opts.dtype), shape: t.shape }]),
    opts.metadata);
  return stageFile(path, (fd) => {
    writeAll(fd, header);
    for (const [name, t] of list) {
      let bytes: Uint8Array;
      try {
        bytes = tensorBytes(t, opts.dtype);
      } catch (e) {
        throw new CheckpointError(`cannot read the tensor to save it: ${(e as Error).message}`, { file: path, tensor: name });
      }
      writeAll(fd, bytes);
    }
  });
}
