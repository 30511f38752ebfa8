// The process group a training process belongs to: `initProcessGroup()` reads torchrun's variables and joins the
// other ranks over gloo (CPU collectives), or returns a group of one when the process runs alone, whose collectives
// do nothing. Trainer and evaluation are written against the `Collectives` interface either way.
//
// CPU tensors go to gloo directly. CUDA tensors go to NCCL when the CUDA addon was built with it (its communicator is
// created on the first collective over CUDA tensors, which every rank reaches together); otherwise, or with
// OWLET_DIST_CUDA=gloo, they are staged through host memory and reduced by gloo (correct, not fast). The NCCL path
// compiles here but has not yet run on several GPUs. Under a launcher each rank's CUDA tensors live on its own GPU
// (device.ts: cuda:LOCAL_RANK), and the NCCL communicator is created there.
//
// The trainer reduces gradients through gradientReducer(): buckets all-reduced while the backward runs (on the GPU on
// a communication stream; see grad-reducer.ts), unless OWLET_DIST_OVERLAP=0.
import { cpu, cpuDist, cudaNccl, type DistNative, type NativeTensor, type NcclNative } from '../native.ts';
import { DistributedError } from '../tensor/errors.ts';
import type { Tensor } from '../tensor/index.ts';
import type { Collectives } from '../train/types.ts';
import { localGpu } from './device.ts';
import { distTimeouts, gradientSyncSettings, readDistEnv, socketInterface, storeLocation, type DistEnv, type DistTimeouts } from './env.ts';
import { byBackend, GradientReducer, type PendingSum } from './grad-reducer.ts';

/** Gradients are reduced in buckets of about this many bytes: one collective per bucket (PyTorch DDP's default). */
export const DEFAULT_BUCKET_BYTES = 25 * 1024 * 1024;

export interface ProcessGroup extends Collectives {
  readonly localRank: number;
  readonly localWorldSize: number;
  /** Sums tensors across ranks, in place. */
  allReduceSum(xs: Tensor[]): void;
  /**
   * Starts summing f32 tensors (one bucket) across ranks, in place. NCCL: queued on the communication stream behind
   * the work queued so far, and wait() makes the compute stream wait for it; gloo: done when this returns.
   */
  startAllReduceSum(xs: Tensor[]): PendingSum;
  /** Gradient all-reduce overlapped with the backward for these parameters; null when turned off (OWLET_DIST_OVERLAP=0). */
  gradientReducer(params: Tensor[]): GradientReducer | null;
  barrier(): void;
  /** Ends the group (closes connections; the rank hosting the store stops it). */
  close(): void;
}

export interface InitOptions {
  /** Default process.env. */
  env?: Record<string, string | undefined>;
  rendezvousTimeoutMs?: number;
  timeoutMs?: number;
  /** Gradient bucket size (default OWLET_DIST_BUCKET_MB, else DEFAULT_BUCKET_BYTES). */
  bucketBytes?: number;
  /** Overlap the gradient all-reduce with the backward (default OWLET_DIST_OVERLAP, else true). */
  overlap?: boolean;
}

const DONE: PendingSum = { wait() {} };

/** The group of a process that runs alone. */
export class SingleProcessGroup implements ProcessGroup {
  readonly rank = 0;
  readonly worldSize = 1;
  readonly localRank = 0;
  readonly localWorldSize = 1;
  allReduceSum(): void {}
  startAllReduceSum(): PendingSum { return DONE; }
  gradientReducer(): GradientReducer | null { return null; }
  allReduceMean(): void {}
  allReduceNumbers(xs: number[]): number[] { return [...xs]; }
  broadcast(): void {}
  barrier(): void {}
  gather(value: string): string[] { return [value]; }
  shareFromRoot(value?: string): string {
    if (value === undefined) throw new DistributedError('shareFromRoot: rank 0 must give the value', 'shareFromRoot');
    return value;
  }
  close(): void {}
}

/** Tensors grouped by where they live; non-CPU ones are copied to host handles and back around a collective. */
function staged(xs: Tensor[], f: (handles: NativeTensor[]) => void, writeBack: boolean): void {
  const host = cpu();
  const handles: NativeTensor[] = [];
  const copies: { t: Tensor; h: NativeTensor }[] = [];
  try {
    for (const t of xs) {
      if (t.backend === host) { handles.push(t.handle); continue; }
      const h = host.fromBuffer(t.dtype, [...t.shape], t.handle.read());
      copies.push({ t, h });
      handles.push(h);
    }
    f(handles);
    if (writeBack) {
      for (const { t, h } of copies) {
        const back = t.backend.fromBuffer(t.dtype, [...t.shape], h.read(), t.device);
        try { t.backend.copyInto(t.handle, back); } finally { back.dispose(); }
      }
    }
  } finally {
    for (const { h } of copies) h.dispose();
  }
}

/** A gloo process group (see native/src/dist). Collectives must be called in the same order on every rank. */
export class GlooProcessGroup implements ProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  readonly localWorldSize: number;
  private readonly bucketBytes: number;
  private readonly overlap: boolean;
  private seq = 0;
  private closed = false;
  /** The NCCL group for CUDA tensors: undefined until the first CUDA collective, null when there is none. */
  private nccl: NcclNative | null | undefined;

  private constructor(private readonly native: DistNative, private readonly d: DistEnv & { storePort: number },
    bucketBytes: number, overlap: boolean, private readonly timeouts: DistTimeouts, private readonly env: Record<string, string | undefined>) {
    this.rank = d.rank;
    this.worldSize = d.worldSize;
    this.localRank = d.localRank;
    this.localWorldSize = d.localWorldSize;
    this.bucketBytes = bucketBytes;
    this.overlap = overlap;
  }

  /** Joins the run `d` describes; throws DistributedError naming the ranks that did not arrive in time. */
  static connect(d: DistEnv, o: InitOptions = {}): GlooProcessGroup {
    const env = o.env ?? process.env;
    const t = distTimeouts(env);
    const store = storeLocation(d, env);
    const native = cpuDist();
    const timeouts = { rendezvousMs: o.rendezvousTimeoutMs ?? t.rendezvousMs, opMs: o.timeoutMs ?? t.opMs };
    const sync = gradientSyncSettings(env);
    const iface = socketInterface(env);
    const port = call('rendezvous', () => native.distInit(d.rank, d.worldSize, d.masterAddr, store.port, store.hostedHere,
      timeouts.rendezvousMs, timeouts.opMs, iface));
    return new GlooProcessGroup(native, { ...d, storePort: port }, o.bucketBytes ?? sync.bucketBytes ?? DEFAULT_BUCKET_BYTES,
      o.overlap ?? sync.overlap, timeouts, env);
  }

  /** NCCL for these tensors when they all live on one GPU and the CUDA addon has it (created on first use). */
  private ncclFor(xs: Tensor[]): NcclNative | null {
    const device = xs[0].device;
    if (!device.startsWith('cuda') || xs.some((t) => t.device !== device) || this.env.OWLET_DIST_CUDA === 'gloo') return null;
    if (this.nccl === undefined) {
      const n = cudaNccl();
      const index = device === 'cuda' ? 0 : Number(device.slice(5));
      // Ranks of one node sharing a GPU would make NCCL fail obscurely ("duplicate GPU"): say what is wrong instead.
      if (n && this.localWorldSize > 1 && index !== localGpu(this.d, this.env)) {
        throw new DistributedError(`rank ${this.rank} (LOCAL_RANK ${this.localRank} of ${this.localWorldSize}) reduces tensors on ` +
          `${device}, but each local rank needs its own GPU: cuda:${localGpu(this.d, this.env)} (run.device cuda or auto)`, 'rendezvous');
      }
      if (n) call('rendezvous', () => n.ncclInit(this.rank, this.worldSize, this.d.masterAddr, this.d.storePort, index, this.timeouts.rendezvousMs, this.timeouts.opMs));
      this.nccl = n;
    }
    return this.nccl;
  }

  allReduceSum(xs: Tensor[]): void {
    if (!xs.length) return;
    const nccl = this.ncclFor(xs);
    if (nccl) { call('allreduce', () => nccl.ncclAllReduce(xs.map((t) => t.handle), this.bucketBytes)); return; }
    staged(xs, (h) => call('allreduce', () => this.native.distAllReduce(h, this.bucketBytes)), true);
  }

  startAllReduceSum(xs: Tensor[]): PendingSum {
    if (!xs.length) return DONE;
    const nccl = this.ncclFor(xs);
    if (nccl) {
      const ticket = call('allreduce', () => nccl.ncclAllReduceStart(xs.map((t) => t.handle)));
      return { wait: () => call('allreduce', () => nccl.ncclAllReduceWait(ticket)) };
    }
    // gloo: one call for the whole bucket (the native side packs it), in this thread.
    const bytes = xs.reduce((n, t) => n + t.numel * 4, 0);
    staged(xs, (h) => call('allreduce', () => this.native.distAllReduce(h, Math.max(4, bytes))), true);
    return DONE;
  }

  gradientReducer(params: Tensor[]): GradientReducer | null {
    return this.overlap ? new GradientReducer(params, this, this.bucketBytes) : null;
  }

  allReduceMean(xs: Tensor[]): void {
    if (!xs.length) return;
    this.allReduceSum(xs);
    for (const group of byBackend(xs)) group[0].backend.scaleInplace(group.map((t) => t.handle), 1 / this.worldSize);
  }

  allReduceNumbers(xs: number[]): number[] {
    const a = Float64Array.from(xs);
    call('allreduce', () => this.native.distAllReduceNumbers(a));
    return Array.from(a);
  }

  broadcast(xs: Tensor[], root = 0): void {
    if (!xs.length) return;
    const nccl = this.ncclFor(xs);
    if (nccl) { call('broadcast', () => nccl.ncclBroadcast(xs.map((t) => t.handle), root, this.bucketBytes)); return; }
    staged(xs, (h) => call('broadcast', () => this.native.distBroadcast(h, root, this.bucketBytes)), this.rank !== root);
  }

  barrier(): void { call('barrier', () => this.native.distBarrier()); }

  // Small exchanges (a config to compare, data positions for a checkpoint, a verdict) ride on gloo all-reduces, not
  // on the store: a store read waited the whole operation timeout (30 min by default) for a key that a rank which had
  // already exited would never set, and ranks that called different exchanges (rank 0 shares the resumed checkpoint,
  // rank 1, started without --resume, gathers configs) waited for each other's keys until both timed out. A gloo
  // collective fails at once when a peer's connections close, and the header below names ranks that are out of step.
  gather(value: string): string[] | null {
    const all = this.exchange('gather', value);
    return this.rank === 0 ? all : null;
  }

  shareFromRoot(value?: string): string {
    if (this.rank === 0 && value === undefined) throw new DistributedError('shareFromRoot: rank 0 must give the value', 'shareFromRoot');
    return this.exchange('shareFromRoot', this.rank === 0 ? value! : '')[0];
  }

  /** Every rank's string, on every rank: a header all-reduce (which exchange, its number, each rank's length), then
   *  the bytes. Every rank computes the same verdict from the same header, so out-of-step ranks all stop together. */
  private exchange(op: 'gather' | 'shareFromRoot', value: string): string[] {
    const W = this.worldSize, seq = this.seq++;
    const bytes = new TextEncoder().encode(value);
    const header = new Float64Array(3 * W);
    header[this.rank] = EXCHANGE_KINDS.indexOf(op) + 1;
    header[W + this.rank] = seq + 1;
    header[2 * W + this.rank] = bytes.length;
    this.exchangeStep(op, header);
    const kinds = header.subarray(0, W), seqs = header.subarray(W, 2 * W), lengths = Array.from(header.subarray(2 * W));
    const at = (r: number) => `${EXCHANGE_KINDS[kinds[r] - 1] ?? 'another collective'} #${seqs[r] - 1}`;
    const apart = Array.from({ length: W }, (_, r) => r).filter((r) => kinds[r] !== kinds[0] || seqs[r] !== seqs[0]);
    if (apart.length) {
      throw new DistributedError(`${op} on rank ${this.rank} of ${W}: the ranks are out of step — rank 0 is at ${at(0)}, ` +
        `${apart.slice(0, 4).map((r) => `rank ${r} at ${at(r)}`).join(', ')} (do all ranks run the same command? ` +
        'e.g. --resume given to some ranks only)', op);
    }
    const offsets = lengths.map((_, r) => lengths.slice(0, r).reduce((a, b) => a + b, 0));
    const total = offsets[W - 1] + lengths[W - 1];
    const packed = packBytes(bytes, offsets[this.rank], total);
    this.exchangeStep(op, packed);
    const all = unpackBytes(packed, total);
    const decoder = new TextDecoder();
    return lengths.map((n, r) => decoder.decode(all.subarray(offsets[r], offsets[r] + n)));
  }

  /** One all-reduce of an exchange; its error says which exchange it was part of. */
  private exchangeStep(op: string, xs: Float64Array): void {
    try {
      this.native.distAllReduceNumbers(xs);
    } catch (e) {
      if (e instanceof DistributedError) throw new DistributedError(`${op}: ${e.message.replace(/^dist\w+: /, '')}`, op);
      throw e;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.nccl?.ncclClose();
    this.native.distClose();
  }
}

const EXCHANGE_KINDS = ['gather', 'shareFromRoot'] as const;
/** Bytes per number of an exchange: 6 bytes are 48 bits, exact in a double, and the sum over ranks of numbers whose
 *  bytes never overlap (each rank writes only its own range, zeros elsewhere) is their union. */
const BYTES_PER_NUMBER = 6;

/** `bytes` placed at `offset` of a `total`-byte buffer, packed six bytes to a double. */
function packBytes(bytes: Uint8Array, offset: number, total: number): Float64Array {
  const out = new Float64Array(Math.ceil(total / BYTES_PER_NUMBER));
  for (let i = 0; i < bytes.length; i++) {
    const at = offset + i;
    out[Math.floor(at / BYTES_PER_NUMBER)] += bytes[i] * 256 ** (at % BYTES_PER_NUMBER);
  }
  return out;
}

function unpackBytes(packed: Float64Array, total: number): Uint8Array {
  const out = new Uint8Array(total);
  for (let i = 0; i < total; i++) out[i] = Math.floor(packed[Math.floor(i / BYTES_PER_NUMBER)] / 256 ** (i % BYTES_PER_NUMBER)) % 256;
  return out;
}

/** Runs a native collective; its DistributedError loses the binding's function-name prefix and names `op` instead. */
function call<T>(op: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof DistributedError) throw new DistributedError(e.message.replace(/^(dist|nccl)\w+: /, ''), op);
    throw e;
  }
}

let current: ProcessGroup | null = null;

/**
 * The process group of this process: joins the ranks torchrun's variables describe (RANK, WORLD_SIZE, MASTER_ADDR,
 * MASTER_PORT, …), or a group of one without them. Called again, returns the same group until it is closed.
 */
export function initProcessGroup(o: InitOptions = {}): ProcessGroup {
  if (current) return current;
  const d = readDistEnv(o.env ?? process.env);
  const g = d ? GlooProcessGroup.connect(d, o) : new SingleProcessGroup();
  const close = g.close.bind(g);
  g.close = () => { close(); if (current === g) current = null; };
  current = g;
  return g;
}

/** The group initProcessGroup() made, if any. */
export function currentProcessGroup(): ProcessGroup | null { return current; }

/** Averages tensors (gradients) across the ranks of the current group, in place. */
export function allReduceMean(xs: Tensor[]): void { (current ?? initProcessGroup()).allReduceMean(xs); }
/** Rank 0's values into every rank's tensors. */
export function broadcast(xs: Tensor[], root = 0): void { (current ?? initProcessGroup()).broadcast(xs, root); }
export function barrier(): void { (current ?? initProcessGroup()).barrier(); }
