// Gradient all-reduce overlapped with the backward pass, as PyTorch's DDP does it.
//
// The trainable parameters are cut into buckets in reverse registration order (the order backward roughly produces
// their gradients): the first bucket holds up to FIRST_BUCKET_BYTES so that the first reduction starts early, the
// others up to the group's bucket size; a parameter larger than a bucket has one of its own. During the backward of
// a step's last micro-batch, autograd reports each parameter whose gradient is final (BackwardOptions.onGradReady);
// once every parameter of a bucket is, that bucket's sum across ranks is started: on the GPU (NCCL) it is queued on a
// communication stream behind the kernels queued so far and runs while the backward goes on; on the CPU (gloo) it
// runs at once, in the calling thread. Buckets start strictly in bucket order (every rank issues the same collectives
// in the same order, which NCCL and gloo both require), so a bucket whose parameters are ready early waits for the
// ones before it. finish() starts what is left (parameters this rank did not use, or every bucket when the last
// micro-batch was not back-propagated), waits for all (on the GPU the compute stream waits for the communication
// stream: no host synchronisation) and divides by the world size.
//
// A parameter without a gradient on this rank is reduced as zeros (its .grad is created), so every rank reduces the
// same buffers; finish() says which parameters had none, so that the caller can drop the gradients that no rank had.
// Sums are elementwise, so the bucket layout does not change a result: on two ranks the gradients are bit-for-bit
// those of the non-overlapped path (sum, then scale by 1/W); on more ranks up to the order of fp32 sums.
import { DistributedError } from '../tensor/errors.ts';
import { keep, zeros, type BackwardOptions, type Tensor } from '../tensor/index.ts';

/** PyTorch DDP's first bucket: small, so that communication starts soon after the backward does. */
export const FIRST_BUCKET_BYTES = 1024 * 1024;

/** A collective started by BucketComm.startAllReduceSum. */
export interface PendingSum {
  /** Makes later work see the sum (GPU: the compute stream waits for it; CPU: it is already done). */
  wait(): void;
}

/** What the reducer needs of a process group. */
export interface BucketComm {
  readonly worldSize: number;
  /** Starts summing these f32 tensors (one bucket) across the ranks, in place. */
  startAllReduceSum(xs: Tensor[]): PendingSum;
}

/** Parameter indices per bucket, in the order buckets are reduced (reverse registration order). */
export function planBuckets(params: readonly Tensor[], bucketBytes: number, firstBucketBytes = Math.min(FIRST_BUCKET_BYTES, bucketBytes)): number[][] {
  const buckets: number[][] = [];
  let bytes = 0;
  for (let i = params.length - 1; i >= 0; i--) {
    const b = params[i].numel * 4;
    const cap = buckets.length === 1 ? firstBucketBytes : bucketBytes; // of the bucket being filled
    if (!buckets.length || bytes + b > cap) {
      buckets.push([i]);
      bytes = b;
    } else {
      buckets[buckets.length - 1].push(i);
      bytes += b;
    }
  }
  return buckets;
}

export class GradientReducer {
  /** Parameter indices per bucket, in reduction order. */
  readonly buckets: number[][];
  private readonly bucketOf: number[];
  private readonly index = new Map<Tensor, number>();
  private remaining: number[] = [];
  private readyParam: boolean[] = [];
  private hadGrad: boolean[] = [];
  private started = 0;
  /** Buckets started during the backward (before finish), for tests and the GPU check. */
  startedEarly = 0;
  private pending: PendingSum[] = [];

  constructor(private readonly params: readonly Tensor[], private readonly comm: BucketComm, bucketBytes: number) {
    if (!(bucketBytes >= 4)) throw new DistributedError(`bucket size must be at least 4 bytes, got ${bucketBytes}`, 'allreduce');
    this.buckets = planBuckets(params, bucketBytes);
    this.bucketOf = new Array<number>(params.length);
    this.buckets.forEach((b, k) => { for (const i of b) this.bucketOf[i] = k; });
    params.forEach((p, i) => this.index.set(p, i));
    this.reset();
  }

  private reset(): void {
    this.remaining = this.buckets.map((b) => b.length);
    this.readyParam = this.params.map(() => false);
    this.hadGrad = this.params.map(() => false);
    this.started = 0;
    this.startedEarly = 0;
    this.pending = [];
  }

  /**
   * The options for the backward of a step's last micro-batch: each bucket's all-reduce starts as soon as its
   * gradients are final. Starts a new round (a round left unfinished by an exception is waited for and dropped).
   */
  backwardOptions(): BackwardOptions {
    this.waitAll();
    this.reset();
    return { onGradReady: (leaf) => this.ready(leaf) };
  }

  private ready(leaf: Tensor): void {
    const i = this.index.get(leaf);
    if (i === undefined || this.readyParam[i]) return;
    this.readyParam[i] = true;
    this.remaining[this.bucketOf[i]]--;
    while (this.started < this.buckets.length && this.remaining[this.started] === 0) {
      this.start(this.started);
      this.startedEarly++;
    }
  }

  private start(k: number): void {
    const grads = this.buckets[k].map((i) => {
      const p = this.params[i];
      this.hadGrad[i] = !!p.grad;
      if (!p.grad) p.grad = keep(zeros([...p.shape], { dtype: p.dtype, device: p.device }));
      if (p.grad.dtype !== 'f32') {
        throw new DistributedError(`gradients are all-reduced in f32; ${p.name ?? `parameter ${i}`} has a ${p.grad.dtype} gradient`, 'allreduce');
      }
      return p.grad;
    });
    this.started = k + 1;
    this.pending.push(this.comm.startAllReduceSum(grads));
  }

  private waitAll(): void {
    const pending = this.pending;
    this.pending = [];
    for (const p of pending) p.wait();
  }

  /**
   * Starts the buckets not started yet, waits for all of them and divides by the world size: every parameter's
   * .grad is then the mean over the ranks. Returns, per parameter, whether it had a gradient on this rank before
   * (those that had none were reduced as zeros).
   */
  finish(): boolean[] {
    const hadGrad = this.hadGrad;
    try {
      while (this.started < this.buckets.length) this.start(this.started);
      this.waitAll();
      const W = this.comm.worldSize;
      if (W > 1) {
        const grads = this.params.map((p) => p.grad!);
        for (const group of byBackend(grads)) group[0].backend.scaleInplace(group.map((t) => t.handle), 1 / W);
      }
      return hadGrad;
    } finally {
      this.reset();
    }
  }
}

/** Tensors grouped by backend and device (one native call per group). */
export function byBackend(xs: Tensor[]): Tensor[][] {
  const m = new Map<string, Tensor[]>();
  for (const t of xs) {
    const k = `${t.backend.backend}/${t.device}`;
    if (!m.has(k)) m.set(k, []);
    m.get(k)!.push(t);
  }
  return [...m.values()];
}
