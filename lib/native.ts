// The whole native surface, declared once. Every other TS file reaches native code through `cpu()` / `backendFor()`.
// Loading: the CPU addon through node-gyp-build (build/Release or prebuilds/); the CUDA addon from build/Cuda or
// prebuilds/, only when asked for, because a binary linked against cuBLAS cannot even load where it is missing.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { wrapNativeError, BackendError } from './tensor/errors.ts';
import { opProfileAvailable, profiled } from './op-profile.ts';

export type DTypeName = 'f32' | 'bf16' | 'i32' | 'i64' | 'f16' | 'u8';

/** A handle owned by the addon. JS code outside lib/tensor never touches these directly. */
export interface NativeTensor {
  readonly dtype: DTypeName;
  readonly shape: number[];
  readonly device: string;
  readonly nbytes: number;
  readonly disposed: boolean;
  readonly storageId: number;
  /** Whether another live handle uses the same storage (writing in place through this one would change it too). */
  readonly storageShared: boolean;
  dispose(): void;
  /** Another handle on the same storage, optionally with another shape of the same size. */
  view(shape?: number[]): NativeTensor;
  /** A copy of the contents (downloads from the device when needed). */
  read(): ArrayBuffer;
}
type NT = NativeTensor;

export interface MemoryInfo { bytesInUse: number; peakBytes: number; liveStorages: number }

export interface NativeBackend {
  readonly backend: 'cpu' | 'cuda';
  // tensors
  empty(dtype: DTypeName, shape: number[], device?: string): NT;
  full(dtype: DTypeName, shape: number[], value: number, device?: string): NT;
  /** A copy of the bytes of `data`; for a bf16 tensor a Float32Array holds its values instead (rounded to bf16 on
   *  the host as they go in: half the bytes to move to a device, no f32 temporary). */
  fromBuffer(dtype: DTypeName, shape: number[], data: ArrayBufferView | ArrayBuffer, device?: string): NT;
  cast(x: NT, dtype: DTypeName): NT;
  /** cast of each tensor, one launch on a GPU for the f32<->bf16 ones (all on one device). */
  castMany(xs: NT[], dtype: DTypeName): NT[];
  clone(x: NT): NT;
  copyInto(dst: NT, src: NT): void;
  fill(x: NT, value: number): void;
  synchronize(): void;
  /** A mark queued on the device behind everything queued so far (profiling; lib/op-profile.ts's 'device' mode). */
  timelineMark(device?: string): void;
  /** When the device reached each mark since the last read: ms after the first mark (waits for the last). */
  timelineRead(device?: string): Float64Array;
  /** Copies of xs to the host queued behind the work queued so far; readTake(ticket) waits for those copies only (not
   *  for work queued after them) and returns each tensor's bytes; readDrop(ticket) forgets them unread. */
  readQueue(xs: NT[]): number;
  readTake(ticket: number): ArrayBuffer[];
  readDrop(ticket: number): void;
  memory(device?: string): MemoryInfo;
  resetPeakMemory(device?: string): void;
  info(): Record<string, unknown>;
  /** Devices this backend places tensors on (CUDA: visible GPUs, no context created); throws naming why there are none. */
  deviceCount(): number;
  setNumThreads(n: number): void;
  // elementwise
  add(a: NT, b: NT, alpha?: number, beta?: number): NT;
  mul(a: NT, b: NT): NT;
  scale(a: NT, s: number): NT;
  axpy(y: NT, x: NT, alpha?: number): void;
  sumRows(x: NT, shape: number[]): NT;
  // gemm
  matmul(a: NT, b: NT, transA?: boolean, transB?: boolean, alpha?: number): NT;
  matmulInto(c: NT, a: NT, b: NT, transA?: boolean, transB?: boolean, alpha?: number, beta?: number): void;
  /** x [rows, K] times w [N, K]ᵀ plus bias [N] on every row (on a GPU in the GEMM's epilogue). */
  linearForward(x: NT, w: NT, bias: NT): NT;
  /** A linear layer's weight gradient gyᵀ x (gy [rows, N], x [rows, K] → [N, K]) and, with wantBias, its bias gradient
   *  (the column sums of gy, [N]; on a GPU from the same GEMM's epilogue). */
  linearWeightGrad(gy: NT, x: NT, wantBias: boolean): [gw: NT, gb: NT | null];
  // layout
  concat(xs: NT[], axis: number): NT;
  slice(x: NT, axis: number, start: number, length: number): NT;
  sliceAssign(dst: NT, src: NT, axis: number, start: number, accumulate?: boolean): void;
  gatherRows(src: NT, idx: NT): NT;
  scatterRows(dst: NT, idx: NT, src: NT, accumulate?: boolean): void;
  patchify(img: NT, patch: number): NT;
  // norms: statistics in fp32; w/b may be null (no affine). needW asks for the affine gradients: gw (when w is given)
  // and gb together; what is not asked for comes back null.
  layerNormForward(x: NT, w: NT | null, b: NT | null, eps: number): [y: NT, mean: NT, rstd: NT];
  /** With a residual: sum = x + residual is normalised and returned last (the pre-norm residual add, fused). */
  layerNormForward(x: NT, w: NT | null, b: NT | null, eps: number, residual: NT): [y: NT, mean: NT, rstd: NT, sum: NT];
  /** gxAdd, when given, is added to gx in the same pass (the gradient of a fused residual sum from its other uses). */
  layerNormBackward(gy: NT, x: NT, w: NT | null, mean: NT, rstd: NT, needX: boolean, needW: boolean, gxAdd?: NT | null):
    [gx: NT | null, gw: NT | null, gb: NT | null];
  rmsNormForward(x: NT, w: NT, eps: number): [y: NT, rstd: NT];
  rmsNormForward(x: NT, w: NT, eps: number, residual: NT): [y: NT, rstd: NT, sum: NT];
  /** gxAdd, when given, is added to gx in the same pass (the gradient of a fused residual sum from its other uses). */
  rmsNormBackward(gy: NT, x: NT, w: NT, rstd: NT, needX: boolean, needW: boolean, gxAdd?: NT | null): [gx: NT | null, gw: NT | null];
  // rope: x [B, T, H, D], HF rotate-half, positions pos0..pos0+T-1
  ropeForward(x: NT, pos0: number, theta: number): NT;
  ropeBackward(gy: NT, pos0: number, theta: number): NT;
  // activations
  quickGeluForward(x: NT): NT;
  quickGeluBackward(gy: NT, x: NT): NT;
  /** [quickGeluBackward(gy, x), quickGeluForward(x)] in one pass over x. */
  quickGeluBackwardForward(gy: NT, x: NT): [NT, NT];
  siluForward(x: NT): NT;
  siluBackward(gy: NT, x: NT): NT;
  swigluForward(gate: NT, up: NT): NT;
  swigluBackward(gy: NT, gate: NT, up: NT, needGate?: boolean, needUp?: boolean): [ggate: NT | null, gup: NT | null];
  softmaxForward(x: NT): NT;
  softmaxBackward(gy: NT, y: NT): NT;
  dropoutForward(x: NT, p: number, seed: number): NT;
  dropoutBackward(gy: NT, p: number, seed: number): NT;
  // attention: q [B, Tq, H, D], k/v [B, Tk, H, D]; keyMask i32 [B, Tk] (nonzero = attend)
  attentionForward(q: NT, k: NT, v: NT, keyMask: NT | null, causal: boolean, scale: number, dropoutP: number, seed: number):
    [out: NT, lse: NT];
  attentionBackward(q: NT, k: NT, v: NT, out: NT, lse: NT, gout: NT, keyMask: NT | null, causal: boolean, scale: number,
    dropoutP: number, seed: number): [gq: NT, gk: NT, gv: NT];
  /** Packed self-attention: qkv [B, T, H, 3, D] holds each head's [q | k | v] (the fused projection's output); the
   *  same results as attentionForward of its three parts, read in place by the CUDA tensor-core kernels. */
  attentionQkvForward(qkv: NT, keyMask: NT | null, causal: boolean, scale: number, dropoutP: number, seed: number):
    [out: NT, lse: NT];
  /** The gradient of qkv in qkv's layout [B, T, H, 3, D] (gq, gk, gv side by side). */
  attentionQkvBackward(qkv: NT, out: NT, lse: NT, gout: NT, keyMask: NT | null, causal: boolean, scale: number,
    dropoutP: number, seed: number): NT;
  // LoRA linear with frozen W [N, K]: y = x Wᵀ + s·(drop(x) Aᵀ) Bᵀ
  loraForward(x: NT, w: NT, a: NT, b: NT, s: number, dropoutP: number, seed: number): [y: NT, xa: NT];
  loraBackward(gy: NT, x: NT, w: NT, a: NT, b: NT, xa: NT, s: number, dropoutP: number, seed: number, needX: boolean):
    [gx: NT | null, ga: NT, gb: NT];
  // loss: mean over rows whose label != ignoreIndex; the gradient of that mean in the same pass
  crossEntropy(logits: NT, labels: NT, ignoreIndex: number): [loss: NT, dlogits: NT];
  /** x *= s[0] in place, s a one-element tensor (the incoming gradient of a scalar loss), without a device sync. */
  mulScalarInplace(x: NT, s: NT): void;
  /** i32 [rows]: index of each row's largest value (first on ties; NaN never wins). Accuracy without a download of the logits. */
  argmaxRows(x: NT): NT;
  // optimizer
  /** AdamW in place; each gradient is read as g·gradScale (default 1: gradient clipping's coefficient, no pass of its own).
   *  copies[i] (bf16, optional) receives the updated params[i] rounded to bf16: its working copy, in the same pass. */
  adamw(params: NT[], grads: NT[], m: NT[], v: NT[], weightDecay: number[], lr: number, beta1: number, beta2: number,
    eps: number, step: number, gradScale?: number, control?: NT, copies?: (NT | null)[]): void;
  sumSquares(xs: NT[]): number;
  /** A training step's control block where the gradients are, without waiting for the device: i64 [3] holding three
   *  float64 values (global L2 norm, clipping's coefficient for maxNorm, 1 = skip: the norm or a loss not finite).
   *  adamw(..., control) reads it there. */
  stepControl(grads: NT[], losses: NT[], maxNorm: number): NT;
  scaleInplace(xs: NT[], s: number): void;
  allFinite(xs: NT[]): boolean;
}

/**
 * The CPU addon's multi-process surface (native/src/dist): one gloo process group per process, rendezvous through a
 * TCP key-value store, and a standalone store server for the launcher. Every call that waits is bounded by a timeout
 * and fails with DistributedError (code OWLET_DIST) naming the op and the rank.
 */
export interface DistNative {
  /** Rendezvous and connect; returns the store's port (the one this process hosts when hostStore; 0 picks one). */
  distInit(rank: number, worldSize: number, masterAddr: string, masterPort: number, hostStore: boolean,
    rendezvousTimeoutMs: number, opTimeoutMs: number, iface?: string): number;
  /** Sums f32 CPU tensors across ranks in place, one gloo call per bucket of about bucketBytes (default 25 MiB). */
  distAllReduce(xs: NT[], bucketBytes?: number): void;
  /** Sums a few numbers across ranks in place, in double precision (step statistics, flags). */
  distAllReduceNumbers(xs: Float64Array): void;
  /** Root's tensors into every rank's (any dtype), bucketed like distAllReduce. */
  distBroadcast(xs: NT[], root: number, bucketBytes?: number): void;
  distBarrier(): void;
  /** Small strings through the rendezvous store; get waits until the key is set or timeoutMs passes. */
  distStoreSet(key: string, value: string): void;
  distStoreGet(key: string, timeoutMs: number): string;
  distClose(): void;
  /** A rendezvous store on its own threads ('' binds every interface; port 0 picks a free one); returns the port. */
  storeServerStart(bindHost: string, port: number): number;
  storeServerStop(port: number): void;
}

/**
 * The CUDA addon's NCCL process group (native/src/dist/nccl), present when it was built with NCCL. It reads NCCL's
 * unique id from the rendezvous store that the CPU addon's gloo group (or the launcher) serves.
 */
export interface NcclNative {
  ncclInit(rank: number, worldSize: number, storeHost: string, storePort: number, device: number,
    rendezvousTimeoutMs: number, opTimeoutMs: number): void;
  ncclAllReduce(xs: NT[], bucketBytes?: number): void;
  ncclBroadcast(xs: NT[], root: number, bucketBytes?: number): void;
  /**
   * Starts summing f32 tensors (one bucket) across ranks on the group's communication stream, behind the work queued
   * so far on the compute stream; returns a ticket at once (the overlapped gradient all-reduce).
   */
  ncclAllReduceStart(xs: NT[]): number;
  /** The compute stream waits for that sum (no host synchronisation); the bucket's buffers are released. */
  ncclAllReduceWait(ticket: number): void;
  /** Started overlapped all-reduces not yet waited for. */
  ncclInFlight(): number;
  ncclClose(): void;
}

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

// Every exported function is wrapped so a native failure surfaces as a typed OwletError subclass.
// With OWLET_PROFILE_OPS=1 every call can be timed (lib/op-profile.ts).
function typed(addon: Record<string, unknown>): NativeBackend {
  const out: Record<string, unknown> = {};
  const sync = addon.synchronize as () => void, mark = addon.timelineMark as (() => void) | undefined;
  const profiling = opProfileAvailable() && typeof sync === 'function';
  for (const [name, fn] of Object.entries(addon)) {
    if (typeof fn !== 'function' || name === 'NativeTensor') { out[name] = fn; continue; }
    const f = profiling ? profiled(name, fn as (...args: unknown[]) => unknown, sync, mark, String(addon.backend)) : fn as (...args: unknown[]) => unknown;
    out[name] = (...args: unknown[]) => {
      try { return f(...args); } catch (e) { throw wrapNativeError(e, name); }
    };
  }
  return out as unknown as NativeBackend;
}

let cpuBackend: NativeBackend | undefined;
let cudaBackend: NativeBackend | undefined;

// OpenBLAS (pthreads) and owlet's OpenMP kernels share the cores: with libgomp's default spin-waiting, idle OpenMP
// threads burn the cores OpenBLAS needs right after every parallel region (measured: elementwise ops 10-50x slower,
// a demo step 900 ms instead of 210). libgomp reads this when the addon loads, so it is set before the first load.
if (process.env.OMP_WAIT_POLICY === undefined) process.env.OMP_WAIT_POLICY = 'PASSIVE';

/** Where the CPU addon is loaded from: OWLET_NATIVE_CPU overrides (tests of a second build), else node-gyp-build. */
export function cpu(): NativeBackend {
  if (cpuBackend) return cpuBackend;
  let addon: Record<string, unknown>;
  const override = process.env.OWLET_NATIVE_CPU;
  try {
    addon = override ? require(override) : require('node-gyp-build')(root);
  } catch (e) {
    throw new BackendError(`cannot load owlet's CPU addon (${(e as Error).message}). Build it with \`npm run build\` in ` +
      "owlet's folder, or `npm rebuild owlet` in a project that depends on it (needs cmake, a C++17 compiler and " +
      '`apt-get install libopenblas-dev libgloo-dev`).', 'load');
  }
  cpuBackend = typed(addon);
  return cpuBackend;
}

/** The CPU addon's process-group and store functions (gloo). */
export function cpuDist(): DistNative {
  const be = cpu() as unknown as Partial<DistNative>;
  if (typeof be.distInit !== 'function' || typeof be.storeServerStart !== 'function') {
    throw new BackendError('this build of the CPU addon has no multi-process support (gloo); rebuild it with `npm run build` ' +
      '(needs `apt-get install libgloo-dev`)', 'load');
  }
  return be as DistNative;
}

/** The CUDA addon: build/Cuda/owlet_cuda.node, prebuilds/linux-x64/owlet_cuda.node, or OWLET_NATIVE_CUDA. */
export function cuda(): NativeBackend {
  if (cudaBackend) return cudaBackend;
  const candidates = [process.env.OWLET_NATIVE_CUDA, join(root, 'build/Cuda/owlet_cuda.node'),
    join(root, `prebuilds/${process.platform}-${process.arch}/owlet_cuda.node`)].filter((p): p is string => !!p);
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new BackendError('the CUDA backend is not built: no owlet_cuda.node in ' + candidates.join(', ') +
      ". Build on a machine with the CUDA toolkit and cuBLAS (`npm run build` in owlet's folder, `npm rebuild owlet` in a " +
      'project that depends on it), or use --device cpu.', 'load');
  }
  try {
    cudaBackend = typed(require(found));
  } catch (e) {
    throw new BackendError(`cannot load the CUDA backend from ${found}: ${(e as Error).message} ` +
      '(it needs libcublas/libcublasLt and an NVIDIA driver)', 'load');
  }
  return cudaBackend;
}

/** The CUDA addon's NCCL functions, or null when it was built without NCCL. */
export function cudaNccl(): NcclNative | null {
  const be = cuda() as unknown as Partial<NcclNative>;
  return typeof be.ncclInit === 'function' ? (be as NcclNative) : null;
}

export function cudaAvailable(): boolean {
  try { cuda(); return true; } catch { return false; }
}

/** The backend that owns tensors of the given device string ("cpu", "cuda", "cuda:1"). */
export function backendFor(device: string): NativeBackend {
  if (device === 'cpu' || device.startsWith('cpu:')) return cpu();
  if (device === 'cuda' || device.startsWith('cuda:')) return cuda();
  throw new BackendError(`unknown device '${device}' (use cpu, cuda or cuda:N)`, 'device');
}
