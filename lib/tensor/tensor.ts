// Tensor: a typed, shaped handle on native storage, with deterministic disposal and autograd bookkeeping.
import { backendFor, cpu, type DTypeName, type NativeBackend, type NativeTensor } from '../native.ts';
import { ArgumentError, DisposedError, ShapeError, DeviceError, wrapNativeError } from './errors.ts';
import { track } from './scope.ts';

export type DType = DTypeName;
export type Device = string; // "cpu" | "cuda" | "cuda:N"

let liveCount = 0;
let nextId = 1;
// The tensors that own one native handle. A share of the same shape (what the autograd tape keeps of every saved
// operand: ~500 per stage-2 step, ~1000 per stage-1 step) joins the owners of its source's handle instead of making a
// native view (a handle object, its wrap and finalizer: ~1.3 µs each way, and the garbage behind them); the handle is
// disposed with its last owner.
class Owners {
  count = 1;
  constructor(readonly handle: NativeTensor) {}
  release(): void {
    if (--this.count === 0 && !this.handle.disposed) this.handle.dispose();
  }
}

// Backstop only: a tensor that became unreachable without dispose() still gives up its share of the storage at GC time.
const finalizer = new FinalizationRegistry<Owners>((o) => {
  liveCount--;
  o.release();
});

/** Number of tensors created and not yet disposed (tests assert that a step leaves this unchanged). */
export function liveTensors(): number { return liveCount; }

// With OWLET_TRACK_TENSORS=1 every live tensor remembers where it was created, for finding leaks.
const tracking = process.env.OWLET_TRACK_TENSORS === '1';
const origins = new Map<number, string>();
/** Live tensors with their shapes and creation stacks (only with OWLET_TRACK_TENSORS=1). */
export function liveTensorOrigins(): string[] { return [...origins.values()]; }

/** Bytes of storage held by the backend of `device` (views share storage and count once). */
export function bytesInUse(device: Device = 'cpu'): number { return backendFor(device).memory(device).bytesInUse; }

export type TypedArrayOf<D extends DType> = D extends 'f32' ? Float32Array : D extends 'i32' ? Int32Array
  : D extends 'i64' ? BigInt64Array : D extends 'u8' ? Uint8Array : Uint16Array;

/** A tensor's bytes as the typed array of its dtype (bf16/f16: raw Uint16Array). */
export function typedView(dtype: DType, buf: ArrayBuffer): TypedArrayOf<DType> {
  switch (dtype) {
    case 'f32': return new Float32Array(buf);
    case 'i32': return new Int32Array(buf);
    case 'i64': return new BigInt64Array(buf);
    case 'u8': return new Uint8Array(buf);
    default: return new Uint16Array(buf);
  }
}

export class Tensor {
  readonly id = nextId++;
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly backend: NativeBackend;
  /** True for parameters that train and for values computed from them while grad mode is on. */
  requiresGrad = false;
  /** Accumulated gradient (parameters only). Of the parameter's dtype, except after a backward with
   *  lowPrecisionLeafGrads, where an fp32 master's may be the bf16 gradient of its working copy (the same values). */
  grad: Tensor | null = null;
  /** Optional name (parameters: the official checkpoint key). */
  name: string | undefined;
  /** Set by the autograd tape on tensors an op produced (not leaves). */
  fromTape = false;
  private _owners: Owners | null;

  /** `like`: a tensor whose shape and dtype the handle is known to have (a view of it), read from there instead of
   *  through the handle (two native calls per tensor, ~0.4 µs). `handle` may be another tensor's Owners (share()). */
  constructor(handle: NativeTensor | Owners, backend: NativeBackend, like?: { shape: readonly number[]; dtype: DType }) {
    let owners: Owners;
    if (handle instanceof Owners) {
      owners = handle;
      owners.count++;
    } else owners = new Owners(handle);
    this._owners = owners;
    this.backend = backend;
    this.shape = like ? like.shape : Object.freeze(owners.handle.shape);
    this.dtype = like ? like.dtype : owners.handle.dtype;
    liveCount++;
    if (tracking) origins.set(this.id, `${this.describe()} ${new Error().stack?.split('\n').slice(2, 7).join(' <')}`);
    finalizer.register(this, owners, this);
    track(this);
  }

  private get owners(): Owners {
    if (!this._owners) throw new DisposedError(`tensor #${this.id} ${this.describe()} was already disposed`, 'tensor');
    return this._owners;
  }
  /** The native handle; throws DisposedError after dispose(). */
  get handle(): NativeTensor { return this.owners.handle; }
  get disposed(): boolean { return this._owners === null; }
  /** Whether another live tensor or handle uses this one's storage (writing in place through this one would change it
   *  too): a share of the same shape (the same handle) or a native view. */
  get storageShared(): boolean { const o = this.owners; return o.count > 1 || o.handle.storageShared; }
  // (reads the handle on every backend, so a disposed tensor throws here on the CPU as on CUDA: answering 'cpu' without
  // it once hid backward closures that read a freed input's device, which failed only on the GPU)
  get device(): Device { const h = this.handle; return this.backend.backend === 'cpu' ? 'cpu' : h.device; }
  get numel(): number { return this.shape.reduce((a, b) => a * b, 1); }
  get ndim(): number { return this.shape.length; }

  describe(): string { return `${this.dtype}[${this.shape.join(',')}]`; }
  toString(): string { return `Tensor(${this.describe()}${this._owners ? '' : ', disposed'})`; }

  dispose(): void {
    if (!this._owners) return;
    finalizer.unregister(this);
    this._owners.release();
    this._owners = null;
    liveCount--;
    if (tracking) origins.delete(this.id);
    if (this.grad) { this.grad.dispose(); this.grad = null; }
  }
  [Symbol.dispose](): void { this.dispose(); }

  /** Contents as a typed array (a copy). bf16/f16 come back as raw Uint16Array; use toFloat32() for values. */
  data<D extends DType = DType>(): TypedArrayOf<D> {
    let buf: ArrayBuffer;
    try { buf = this.handle.read(); } catch (e) { throw wrapNativeError(e, 'read'); }
    return typedView(this.dtype, buf) as TypedArrayOf<D>;
  }
  /** Values as float32, whatever the storage dtype. */
  toFloat32(): Float32Array {
    if (this.dtype === 'f32') return this.data<'f32'>();
    const c = new Tensor(this.backend.cast(this.handle, 'f32'), this.backend);
    try { return c.data<'f32'>(); } finally { c.dispose(); }
  }
  toArray(): number[] {
    if (this.dtype === 'i64') return Array.from(this.data<'i64'>(), Number);
    // (integers as stored: through f32 an i32 above 2^24 came back rounded)
    if (this.dtype === 'i32' || this.dtype === 'u8') return Array.from(this.data<'i32' | 'u8'>());
    return Array.from(this.toFloat32());
  }
  /** The single value of a one-element tensor (synchronises a device). */
  item(): number {
    if (this.numel !== 1) throw new ShapeError(`item() needs a one-element tensor, got ${this.describe()}`, 'item');
    return this.dtype === 'i32' || this.dtype === 'i64' ? this.toArray()[0] : this.toFloat32()[0];
  }

  /** A new tensor on another device (copy through host memory). */
  to(device: Device): Tensor {
    const target = backendFor(device);
    if (target === this.backend && (device === this.device || (device === 'cuda' && this.device === 'cuda:0'))) {
      return new Tensor(this.backend.clone(this.handle), this.backend);
    }
    return new Tensor(target.fromBuffer(this.dtype, [...this.shape], this.handle.read(), device), target);
  }
  /** Another tensor on the same storage (no autograd link); the storage lives until every one is disposed. Of the
   *  same shape it shares this tensor's native handle (no native call); of another, a native view. */
  share(shape: readonly number[] = this.shape): Tensor {
    if (shape === this.shape || sameShape(shape, this.shape)) return new Tensor(this.owners, this.backend, this);
    let h: NativeTensor;
    try {
      h = this.handle.view([...shape]);
    } catch (e) {
      throw wrapNativeError(e, 'view');
    }
    // (another shape was checked by view, and is copied before it is frozen)
    return new Tensor(h, this.backend, { shape: Object.freeze([...shape]), dtype: this.dtype });
  }
}

/** Whether two shapes have the same dims (false for anything that is not a shape's array). */
export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return Array.isArray(a) && a.length === b.length && a.every((v, i) => v === b[i]);
}

function backendOf(device: Device): NativeBackend { return backendFor(device); }

export interface CreateOptions { dtype?: DType; device?: Device; requiresGrad?: boolean; name?: string }

function finish(t: Tensor, o: CreateOptions): Tensor {
  if (o.requiresGrad) t.requiresGrad = true;
  if (o.name) t.name = o.name;
  return t;
}

function checkShape(shape: readonly number[], op: string): number[] {
  // (JSON.stringify shows what came from JS: ['2','3'] printed as [2,3] hid that they were strings)
  if (!Array.isArray(shape)) throw new ShapeError(`${op}: the shape must be an array of dims, got ${JSON.stringify(shape) ?? String(shape)}`, op);
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new ShapeError(`${op}: shape ${JSON.stringify(shape)} must hold non-negative integers`, op);
  }
  return [...shape];
}

export function empty(shape: readonly number[], o: CreateOptions = {}): Tensor {
  const b = backendOf(o.device ?? 'cpu');
  return finish(new Tensor(b.empty(o.dtype ?? 'f32', checkShape(shape, 'empty'), o.device), b), o);
}
export function full(shape: readonly number[], value: number, o: CreateOptions = {}): Tensor {
  const b = backendOf(o.device ?? 'cpu');
  return finish(new Tensor(b.full(o.dtype ?? 'f32', checkShape(shape, 'full'), value, o.device), b), o);
}
export function zeros(shape: readonly number[], o: CreateOptions = {}): Tensor { return full(shape, 0, o); }
export function ones(shape: readonly number[], o: CreateOptions = {}): Tensor { return full(shape, 1, o); }

const arrayDType = (a: ArrayBufferView): DType | undefined =>
  a instanceof Float32Array ? 'f32' : a instanceof Int32Array ? 'i32' : a instanceof BigInt64Array ? 'i64'
    : a instanceof Uint8Array ? 'u8' : undefined;

type IntegerDType = 'i32' | 'i64' | 'u8';
const isIntegerDType = (d: DType | undefined): d is IntegerDType => d === 'i32' || d === 'i64' || d === 'u8';
// The whole numbers each integer dtype holds (i64: up to the largest double below 2^63).
const integerRange: Record<IntegerDType, [number, number]> = { i32: [-(2 ** 31), 2 ** 31 - 1], i64: [-(2 ** 63), 2 ** 63 - 1024], u8: [0, 255] };

// number[] or Float64Array values as an integer dtype's array, exactly, refusing what it cannot hold as `full` does:
// Int32Array.from wrapped 3e9 modulo 2^32 and truncated 1.5 and NaN, and i64 went through f32 (16777217 -> 16777216).
function integerArray(values: ArrayLike<number>, dtype: IntegerDType): Int32Array | BigInt64Array | Uint8Array {
  const [lo, hi] = integerRange[dtype];
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isInteger(v) || v < lo || v > hi) {
      throw new ArgumentError(`tensor: value ${v} at index ${i} is not a whole number that ${dtype} holds`, 'tensor');
    }
  }
  if (dtype === 'i64') return BigInt64Array.from(values as ArrayLike<number>, (v) => BigInt(v));
  return dtype === 'i32' ? Int32Array.from(values) : Uint8Array.from(values);
}

/** A tensor holding a copy of `data` (Float32Array, Int32Array, BigInt64Array, Uint8Array, or number[] and Float64Array
 *  as f32 values; other views are taken as the raw bytes of `o.dtype`, which they need, e.g. a Uint16Array of bf16
 *  bits). */
export function tensor(data: ArrayBufferView | number[], shape?: readonly number[], o: CreateOptions = {}): Tensor {
  let arr: ArrayBufferView;
  // (a Float64Array's values, as number[]'s: its bytes read as f32 would be other numbers)
  if (Array.isArray(data)) {
    const bad = data.findIndex((v) => typeof v !== 'number');
    if (bad >= 0) throw new ArgumentError(`tensor: values must be numbers, got ${JSON.stringify(data[bad])} at index ${bad}`, 'tensor');
  } else if (!ArrayBuffer.isView(data)) {
    throw new ArgumentError(`tensor: data must be a number[] or a typed array, got ${data === null ? 'null' : typeof data}`, 'tensor');
  }
  if (Array.isArray(data) || data instanceof Float64Array) arr = isIntegerDType(o.dtype) ? integerArray(data, o.dtype) : Float32Array.from(data);
  else arr = data;
  const natural = arrayDType(arr);
  if (!natural && !o.dtype) {
    // (its bytes were read as f32: a Uint32Array [1, 2, 3] became three denormals)
    throw new ArgumentError(`tensor: ${arr.constructor.name} data has no dtype of its own: give o.dtype, the dtype its bytes hold ` +
      '(or pass a Float32Array, Int32Array, BigInt64Array, Uint8Array, Float64Array or number[])', 'tensor');
  }
  const dtype = o.dtype ?? natural ?? 'f32';
  const s = checkShape(shape ?? [(arr as Float32Array).length], 'tensor');
  const b = backendOf(o.device ?? 'cpu');
  // f32 values stored as bf16: rounded on the host as they go in (the native fromBuffer), as a cast would round them
  if (natural === 'f32' && dtype === 'bf16') return finish(new Tensor(b.fromBuffer(dtype, s, arr, o.device), b), o);
  if (natural && natural !== dtype) {
    // Convert through a temporary of the natural dtype (e.g. Int32Array stored as f32).
    const tmp = b.fromBuffer(natural, s, arr, o.device);
    try { return finish(new Tensor(b.cast(tmp, dtype), b), o); } finally { tmp.dispose(); }
  }
  return finish(new Tensor(b.fromBuffer(dtype, s, arr, o.device), b), o);
}

/** The backend of an op's one required input; a typed error naming the op for anything else (null and undefined
 *  too, which sameBackend passes over as absent optional inputs). */
export function inputBackend(op: string, x: Tensor): NativeBackend {
  if (x === null || x === undefined) throw new ArgumentError(`${op}: an input is not a Tensor (got ${x})`, op);
  return sameBackend(op, x);
}

/** Throws a typed error unless every tensor shares one backend (and so one device family). */
export function sameBackend(op: string, ...ts: (Tensor | null | undefined)[]): NativeBackend {
  let b: NativeBackend | undefined;
  for (const t of ts) {
    if (t === null || t === undefined) continue;
    if (!(t instanceof Tensor)) throw new ArgumentError(`${op}: an input is not a Tensor (got ${typeof t})`, op);
    if (t.disposed) throw new DisposedError(`${op}: input ${t.toString()} was already disposed`, op);
    if (b && t.backend !== b) throw new DeviceError(`${op}: inputs live on different devices`, op);
    b = t.backend;
  }
  return b ?? cpu();
}
