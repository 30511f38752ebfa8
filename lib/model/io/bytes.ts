// The bridge between file bytes and runtime tensors: one tensor's bytes become one Tensor (and back), with the dtype
// conversions the formats need. Everything here handles one tensor at a time, so no caller ever holds a whole
// checkpoint twice.
import { closeSync, constants, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { Tensor, type DType, type Device } from '../../tensor/index.ts';
import { backendFor } from '../../native.ts';
import { CheckpointError } from './errors.ts';
import { isFloating, type DTypeInfo } from './dtypes.ts';

/** Options shared by every loader. */
export interface TensorLoadOptions {
  /** Floating-point tensors are converted to this dtype on load (e.g. bf16 → f32); integer tensors keep theirs. */
  dtype?: DType;
  device?: Device;
}

/**
 * A tensor made from `bytes` holding `shape` elements of the file dtype `info` (little-endian). `bytes` must start at
 * an offset that is a multiple of 8 in its ArrayBuffer when a conversion is needed (callers read into fresh scratch).
 */
export function tensorFromBytes(bytes: Uint8Array, info: DTypeInfo, shape: readonly number[],
  opts: TensorLoadOptions = {}): Tensor {
  const device = opts.device ?? 'cpu';
  const be = backendFor(device);
  let runtime = info.runtime;
  let src: ArrayBufferView = bytes;
  if (info.convert) {
    // F64 → f32 in JS (the only converting file dtype): the runtime has no f64.
    const f64 = new Float64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8);
    src = Float32Array.from(f64);
    runtime = 'f32';
  }
  const want = opts.dtype && isFloating(runtime) && isFloating(opts.dtype) && opts.dtype !== runtime ? opts.dtype : undefined;
  if (!want) return new Tensor(be.fromBuffer(runtime, [...shape], src, device), be);
  const raw = be.fromBuffer(runtime, [...shape], src, device);
  try { return new Tensor(be.cast(raw, want), be); } finally { raw.dispose(); }
}

/** The bytes of `t` as they go into a file, optionally converted to another floating dtype first. */
export function tensorBytes(t: Tensor, dtype?: DType): Uint8Array {
  if (dtype && dtype !== t.dtype && isFloating(dtype) && isFloating(t.dtype)) {
    const c = t.backend.cast(t.handle, dtype);
    try { return new Uint8Array(c.read()); } finally { c.dispose(); }
  }
  return new Uint8Array(t.handle.read());
}

/** The dtype `t` is written with under a save-time dtype request. */
export function savedDType(t: Tensor, dtype?: DType): DType {
  return dtype && isFloating(dtype) && isFloating(t.dtype) ? dtype : t.dtype;
}

const CHUNK = 1 << 30; // positional reads/writes above 2 GiB fail in Node; stay well under

/** Fills `dst` from `fd` at `position`, looping over short reads; a file that ends early is a typed error. */
export function readExact(fd: number, dst: Uint8Array, position: number, where: { file: string; tensor?: string }): void {
  let done = 0;
  while (done < dst.byteLength) {
    const n = readSync(fd, dst, done, Math.min(CHUNK, dst.byteLength - done), position + done);
    if (n === 0) {
      throw new CheckpointError(`file ends at byte ${position + done} while reading ${dst.byteLength} bytes at ` +
        `offset ${position} (truncated or changed while reading)`, where);
    }
    done += n;
  }
}

/**
 * Opens a checkpoint file for reading; anything but a regular file is a typed error. (A folder failed later with a
 * bare EISDIR, and a FIFO blocked the open forever: O_NONBLOCK lets the open return so fstat can refuse it.)
 */
export function openRegularFile(file: string): number {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (e) {
    throw new CheckpointError(`cannot open: ${(e as Error).message}`, { file });
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new CheckpointError('is not a regular file (a folder, FIFO or device cannot be a checkpoint)', { file });
  }
  return fd;
}

export function writeAll(fd: number, src: Uint8Array): void {
  let done = 0;
  while (done < src.byteLength) done += writeSync(fd, src, done, Math.min(CHUNK, src.byteLength - done));
}

/** A growable scratch buffer, so loading N tensors allocates once (at the size of the largest). */
export class Scratch {
  private buf = new Uint8Array(0);
  get(n: number): Uint8Array {
    if (this.buf.byteLength < n) this.buf = new Uint8Array(new ArrayBuffer(n));
    return this.buf.subarray(0, n);
  }
}
