// Reading tensors back without waiting for everything queued after them. A tensor's data() waits for the device to
// finish all the work queued so far; readLater(xs) queues the copies to the host now, behind the work queued so far,
// and take() later waits for those copies only. The trainer reads a step's losses and control block this way after
// it has queued the next step's forward and backward, so the device keeps working while the host waits and prepares
// the step after (lib/train/trainer.ts). On the CPU the copies are made at once.
import { ArgumentError, wrapNativeError } from './errors.ts';
import { sameBackend, typedView, type DType, type Tensor, type TypedArrayOf } from './tensor.ts';
import type { NativeBackend } from '../native.ts';

// Backstop only: a read dropped without take() or drop() still returns its host memory when it is collected.
const unclaimed = new FinalizationRegistry<{ be: NativeBackend; ticket: number }>(({ be, ticket }) => {
  try { be.readDrop(ticket); } catch { /* the device failed since: nothing left to return */ }
});

export class QueuedRead {
  private ticket: number | null;
  private readonly be: NativeBackend;
  private readonly dtypes: DType[];

  constructor(xs: readonly Tensor[]) {
    this.be = sameBackend('readLater', ...xs);
    this.dtypes = xs.map((t) => t.dtype);
    try {
      this.ticket = this.be.readQueue(xs.map((t) => t.handle));
    } catch (e) {
      throw wrapNativeError(e, 'readLater');
    }
    unclaimed.register(this, { be: this.be, ticket: this.ticket }, this);
  }

  /** Whether take() or drop() was called. */
  get claimed(): boolean { return this.ticket === null; }

  /** The tensors' contents as they were when the read was queued, as data() gives them (waits for those copies). */
  take(): TypedArrayOf<DType>[] {
    const t = this.claim('take');
    try {
      return this.be.readTake(t).map((buf, i) => typedView(this.dtypes[i], buf));
    } catch (e) {
      throw wrapNativeError(e, 'readTake');
    }
  }

  /** Forgets the read unread (waits for its copies to land, then returns their memory). Idempotent. */
  drop(): void {
    if (this.ticket === null) return;
    const t = this.claim('drop');
    try { this.be.readDrop(t); } catch (e) { throw wrapNativeError(e, 'readDrop'); }
  }

  private claim(op: string): number {
    if (this.ticket === null) throw new ArgumentError(`QueuedRead.${op}: this read was already taken or dropped`, 'readLater');
    const t = this.ticket;
    this.ticket = null;
    unclaimed.unregister(this);
    return t;
  }
}

/** Queues copies of xs (one backend, one device) to the host now; take() returns their contents later. The tensors
 *  may be disposed right after this returns. */
export function readLater(xs: readonly Tensor[]): QueuedRead {
  if (!Array.isArray(xs)) throw new ArgumentError('readLater: xs must be an array of tensors', 'readLater');
  return new QueuedRead(xs);
}
