// A safe reader for PyTorch `torch.save` state dicts (`pytorch_model.bin`): a zip holding `<prefix>/data.pkl` (the
// pickled dict) and `<prefix>/data/<key>` (one raw little-endian storage per key). The pickle runs on the data-only VM
// of pickle.ts with an allow-list of exactly what torch writes for a state dict: OrderedDict, the tensor and
// parameter rebuild functions, and the typed storage classes. No code from the file ever runs. Tensors are read
// lazily, one at a time, straight from their storage's byte range.
import { existsSync, readSync, closeSync } from 'node:fs';
import type { Tensor } from '../../tensor/index.ts';
import { openRegularFile, Scratch, tensorFromBytes, type TensorLoadOptions } from './bytes.ts';
import { numelOf, SAFETENSORS_DTYPES, type SafetensorsDType } from './dtypes.ts';
import { CheckpointError } from './errors.ts';
import { PickleTuple, unpickle, type AllowedGlobal } from './pickle.ts';
import { readFromSource, type LoadOptions, type TensorSource } from './source.ts';
import { ZipFile } from './zip.ts';

/** Storage classes → element type. Types owlet cannot hold are still parsed so the error names the tensor. */
const STORAGE_TYPES: Record<string, SafetensorsDType | 'I16' | 'I8' | 'C64'> = {
  FloatStorage: 'F32', DoubleStorage: 'F64', HalfStorage: 'F16', BFloat16Storage: 'BF16', LongStorage: 'I64',
  IntStorage: 'I32', ByteStorage: 'U8', BoolStorage: 'BOOL', ShortStorage: 'I16', CharStorage: 'I8',
  ComplexFloatStorage: 'C64',
};
const ELEM_SIZE: Record<string, number> = { I16: 2, I8: 1, C64: 8 };
const elemSize = (d: string) => (d in SAFETENSORS_DTYPES ? SAFETENSORS_DTYPES[d as SafetensorsDType].size : ELEM_SIZE[d]);

interface StorageType { readonly kind: 'storage-type'; readonly dtype: string }
export interface StorageRef { key: string; dtype: string; numel: number; location: string }
export interface TensorRef { storage: StorageRef; offset: number; shape: number[]; stride: number[] }

const isTensorRef = (v: unknown): v is TensorRef => !!v && typeof v === 'object' && 'storage' in v && 'stride' in v;
const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

function ints(v: unknown, what: string, fail: (m: string) => never): number[] {
  const items = v instanceof PickleTuple ? v.items : Array.isArray(v) ? v : null;
  if (!items || !items.every(isInt)) fail(`${what} is not a tuple of non-negative integers`);
  return items as number[];
}

/** The allow-list: module.name → what REDUCE on it returns. */
function torchGlobals(file: string): Map<string, AllowedGlobal> {
  const fail = (m: string): never => { throw new CheckpointError(m, { file }); };
  const g = new Map<string, AllowedGlobal>();
  const add = (module: string, name: string, call?: (args: unknown[]) => unknown) => g.set(`${module}.${name}`, { module, name, call });
  add('collections', 'OrderedDict', (args) => {
    const m = new Map<unknown, unknown>();
    if (args.length && Array.isArray(args[0])) {
      for (const kv of args[0]) if (kv instanceof PickleTuple && kv.items.length === 2) m.set(kv.items[0], kv.items[1]);
    }
    return m;
  });
  const rebuild = (args: unknown[]): TensorRef => {
    const [storage, offset, size, stride] = args;
    if (!storage || typeof storage !== 'object' || !('key' in storage)) fail('_rebuild_tensor: first argument is not a storage');
    if (!isInt(offset)) fail('_rebuild_tensor: storage offset is not a non-negative integer');
    const shape = ints(size, '_rebuild_tensor: size', fail), st = ints(stride, '_rebuild_tensor: stride', fail);
    if (shape.length !== st.length) fail(`_rebuild_tensor: size and stride have different ranks`);
    return { storage: storage as StorageRef, offset: offset as number, shape, stride: st };
  };
  add('torch._utils', '_rebuild_tensor_v2', rebuild);
  add('torch._utils', '_rebuild_tensor', rebuild);
  add('torch._utils', '_rebuild_parameter', (args) => args[0]);
  add('torch._utils', '_rebuild_parameter_with_state', (args) => args[0]);
  for (const name of Object.keys(STORAGE_TYPES)) add('torch', name); // referenced in persistent ids, never called
  return g;
}

/** A torch.save zip opened for lazy reading: the pickled state dict is parsed, storages are read on demand. */
export class TorchCheckpoint implements TensorSource {
  readonly path: string;
  readonly tensors = new Map<string, TensorRef>();
  /** Top-level keys whose values are not tensors (ignored). */
  readonly skipped: string[] = [];
  private zip: ZipFile;
  private prefix: string;
  private scratch = new Scratch();

  private constructor(path: string, zip: ZipFile, prefix: string) {
    this.path = path;
    this.zip = zip;
    this.prefix = prefix;
  }

  static open(path: string): TorchCheckpoint {
    rejectLegacy(path);
    const zip = ZipFile.open(path);
    try {
      const pkl = [...zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n) || n === 'data.pkl');
      if (pkl.length !== 1) {
        throw new CheckpointError(`not a torch.save archive: expected one <name>/data.pkl, found ${pkl.length}`, { file: path });
      }
      const prefix = pkl[0].slice(0, -'data.pkl'.length);
      const order = zip.entries.get(`${prefix}byteorder`);
      if (order && new TextDecoder().decode(zip.readAll(order.name)).trim() !== 'little') {
        throw new CheckpointError('big-endian torch archives are not supported', { file: path });
      }
      const c = new TorchCheckpoint(path, zip, prefix);
      c.parse(zip.readAll(pkl[0]));
      return c;
    } catch (e) {
      zip.close();
      throw e;
    }
  }

  private parse(pkl: Uint8Array): void {
    const file = this.path;
    const fail = (m: string): never => { throw new CheckpointError(m, { file }); };
    const storages = new Map<string, StorageRef>();
    const types = new Map<string, StorageType>();
    const globals = torchGlobals(file);
    for (const [k, g] of globals) {
      if (g.module === 'torch' && STORAGE_TYPES[g.name]) types.set(k, { kind: 'storage-type', dtype: STORAGE_TYPES[g.name] });
    }
    const root = unpickle(pkl, {
      globals,
      persistentLoad: (pid) => {
        // ('storage', storage_type, key, location, numel)
        const t = pid instanceof PickleTuple ? pid.items : null;
        // (described, not printed: a hostile id nested a million levels deep overflowed the stack when stringified)
        if (!t || t[0] !== 'storage' || t.length < 5) fail(`unsupported persistent id (${t ? `a ${t.length}-tuple` : typeof pid})`);
        const [, type, key, location, numel] = t!;
        const g = type as AllowedGlobal;
        const st = g && typeof g === 'object' ? types.get(`${g.module}.${g.name}`) : undefined;
        if (!st) fail('persistent id names something that is not a torch storage class');
        if (typeof key !== 'string' || !/^[A-Za-z0-9_]+$/.test(key)) {
          fail(`storage key ${typeof key === 'string' ? JSON.stringify(key.slice(0, 80)) : `(a ${typeof key})`} is not a plain name`);
        }
        if (!isInt(numel)) fail(`storage ${key} has no valid element count`);
        const prev = storages.get(key as string);
        if (prev && (prev.dtype !== st!.dtype || prev.numel !== numel)) {
          fail(`storage ${key} is declared twice, as ${prev.dtype}[${prev.numel}] and ${st!.dtype}[${String(numel)}]`);
        }
        if (prev) return prev; // shared storage: the same reference for every tensor that views it
        const ref: StorageRef = { key: key as string, dtype: st!.dtype, numel: numel as number, location: String(location) };
        storages.set(ref.key, ref);
        return ref;
      },
      build: (obj, state) => {
        // OrderedDict(...) followed by BUILD {'_metadata': …}: state dict bookkeeping, not weights.
        if (!(obj instanceof Map)) fail('BUILD on a value that is not an OrderedDict');
        void state;
      },
    }, file);
    if (!(root instanceof Map)) fail('the pickled object is not a dict of tensors (a state dict)');
    for (const [k, v] of root as Map<unknown, unknown>) {
      if (typeof k !== 'string') { this.skipped.push(`(a ${typeof k} key)`); continue; }
      if (isTensorRef(v)) this.tensors.set(k, v);
      else this.skipped.push(k);
    }
    // A training checkpoint ({'model': state_dict, 'optimizer': …, 'epoch': 3}) has its tensors one level down; read
    // as a state dict it held no tensors at all and loaded as an empty checkpoint without a word.
    if (!this.tensors.size) {
      const nested = [...(root as Map<unknown, unknown>)].find(([k, v]) =>
        typeof k === 'string' && v instanceof Map && [...v.values()].some(isTensorRef));
      if (nested) {
        fail(`holds no tensors at its top level, but its key '${nested[0]}' is a dict of tensors: a training checkpoint, ` +
          `not a state dict; save the state dict itself (torch.save(checkpoint['${nested[0]}'], path))`);
      }
    }
    for (const s of storages.values()) {
      const entry = this.zip.entries.get(`${this.prefix}data/${s.key}`);
      if (!entry) fail(`storage ${s.key} is referenced by the pickle but missing from the archive`);
      const need = s.numel * elemSize(s.dtype);
      if (entry!.size < need) {
        const user = [...this.tensors].find(([, t]) => t.storage === s)?.[0];
        throw new CheckpointError(`storage data/${s.key} holds ${entry!.size} bytes but the pickle says ${s.numel} ` +
          `${s.dtype} elements (${need} bytes): truncated or inconsistent`, { file, tensor: user });
      }
    }
  }

  get names(): string[] { return [...this.tensors.keys()]; }
  has(name: string): boolean { return this.tensors.has(name); }
  shapeOf(name: string): number[] { return this.ref(name).shape; }
  fileOf(): string { return this.path; }

  private ref(name: string): TensorRef {
    const r = this.tensors.get(name);
    if (!r) throw new CheckpointError('missing from this file', { file: this.path, tensor: name });
    return r;
  }

  /** Reads one tensor into a new contiguous Tensor (strided views are gathered; shared storages read their slice). */
  tensor(name: string, opts: TensorLoadOptions = {}): Tensor {
    const r = this.ref(name);
    const where = { file: this.path, tensor: name };
    const s = r.storage;
    if (!(s.dtype in SAFETENSORS_DTYPES)) {
      throw new CheckpointError(`dtype ${s.dtype} (torch ${Object.keys(STORAGE_TYPES).find((k) => STORAGE_TYPES[k] === s.dtype)}) ` +
        'cannot be held by owlet', where);
    }
    const info = SAFETENSORS_DTYPES[s.dtype as SafetensorsDType];
    const es = info.size, n = numelOf(r.shape);
    // Elements of the storage the view touches: [offset, offset + extent).
    const extent = n === 0 ? 0 : r.shape.reduce((a, d, i) => a + (d - 1) * r.stride[i], 0) + 1;
    if (r.offset + extent > s.numel) {
      throw new CheckpointError(`view (offset ${r.offset}, size [${r.shape}], stride [${r.stride}]) reaches element ` +
        `${r.offset + extent} of a ${s.numel}-element storage`, where);
    }
    // More elements than the storage holds (stride 0, overlapping strides) would turn a few stored bytes into a huge
    // tensor (a 519-byte file became 8 GB); torch writes weights contiguous, so such a view is refused.
    if (n > s.numel || r.stride.some((x) => x < 0)) {
      throw new CheckpointError(`view (size [${r.shape}], stride [${r.stride}]) repeats elements: ${n} elements over a ` +
        `${s.numel}-element storage (save the tensor .contiguous())`, where);
    }
    const out = this.scratch.get(n * es);
    if (n > 0) {
      const entry = `${this.prefix}data/${s.key}`;
      if (isContiguous(r.shape, r.stride)) {
        this.zip.readRange(entry, r.offset * es, out, name);
      } else {
        const span = new Uint8Array(extent * es);
        this.zip.readRange(entry, r.offset * es, span, name);
        gatherStrided(span, out, r.shape, r.stride, es);
      }
    }
    const t = tensorFromBytes(out, info, r.shape, opts);
    t.name = name;
    return t;
  }

  readAll(opts: LoadOptions = {}): Map<string, Tensor> { return readFromSource(this, opts); }

  close(): void { this.zip.close(); }
  [Symbol.dispose](): void { this.close(); }
}

function isContiguous(shape: number[], stride: number[]): boolean {
  let expect = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== expect) return false;
    expect *= shape[i];
  }
  return true;
}

/** Copies a strided view (element size `es`) out of `span` (which starts at the view's offset) into row-major `out`. */
function gatherStrided(span: Uint8Array, out: Uint8Array, shape: number[], stride: number[], es: number): void {
  const nd = shape.length, idx = new Array<number>(nd).fill(0), n = numelOf(shape);
  let src = 0;
  for (let k = 0; k < n; k++) {
    out.set(span.subarray(src * es, src * es + es), k * es);
    for (let d = nd - 1; d >= 0; d--) {
      idx[d]++;
      src += stride[d];
      if (idx[d] < shape[d]) break;
      src -= stride[d] * shape[d];
      idx[d] = 0;
    }
  }
}

/** Pre-1.6 torch.save files are a bare pickle stream with a magic number, not a zip: say so instead of failing oddly. */
function rejectLegacy(path: string): void {
  if (!existsSync(path)) throw new CheckpointError('not found', { file: path });
  const fd = openRegularFile(path);
  try {
    const head = new Uint8Array(4);
    const n = readSync(fd, head, 0, 4, 0);
    if (n === 4 && head[0] === 0x50 && head[1] === 0x4b) return; // "PK"
    if (n >= 2 && head[0] === 0x80) {
      throw new CheckpointError('legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it with a newer ' +
        'torch, or convert to safetensors', { file: path });
    }
    throw new CheckpointError('not a torch.save zip archive', { file: path });
  } finally {
    closeSync(fd);
  }
}

/** Reads a whole pytorch_model.bin (or the filtered part) as tensors. */
export function readTorchFile(path: string, opts: LoadOptions = {}): Map<string, Tensor> {
  const c = TorchCheckpoint.open(path);
  try {
    return c.readAll(opts);
  } finally {
    c.close();
  }
}
