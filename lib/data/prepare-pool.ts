// A pool of worker threads running prepareSample (see prepare-worker.ts). Requests go to the least busy worker;
// results come back in whatever order, and the loader consumes them in stream order, so batches are identical to
// in-process preparation. Workers are ref'd only while they have work, so an idle pool never keeps node alive.
import { Worker } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import type { DataRecord } from './dataset.ts';
import type { PreparedSample } from './batch.ts';
import type { SampleOptions } from './loader.ts';
import type { WorkerInit, WorkerMessage, WorkerReply } from './prepare-worker.ts';
import { DataFormatError, ImageError, SampleError, TokenizerError } from './errors.ts';

function rebuildError(e: { name: string; message: string; file?: string }): Error {
  let err: Error;
  if (e.name === 'ImageError') err = new ImageError(e.file ?? '?', '');
  else if (e.name === 'SampleError') err = new SampleError('');
  else if (e.name === 'DataFormatError') err = new DataFormatError('');
  else if (e.name === 'TokenizerError') err = new TokenizerError('');
  else { err = new Error(''); err.name = e.name; }
  err.message = e.message;
  return err;
}

interface Slot {
  worker: Worker;
  pending: Map<number, { resolve: (s: PreparedSample) => void; reject: (e: Error) => void }>;
  /** Why the worker is gone (it threw while starting, crashed or exited), or null while it runs. */
  dead: Error | null;
}

// How long a closed pool's worker may take to finish the samples it is preparing before it is terminated (one sample
// takes milliseconds; this only bounds a worker stuck on one).
const CLOSE_GRACE_MS = 30_000;

export class PreparePool {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private closed = false;

  constructor(size: number, o: SampleOptions) {
    const src = o.tokenizer?.source;
    if (src && src !== 'llama-tokenizer-js' && !existsSync(src)) {
      throw new TokenizerError(`workers need a tokenizer loadable from a file; "${src}" is not one (use workers: 0)`);
    }
    const { tokenizer: _t, ...sample } = o;
    const init: WorkerInit = { tokenizer: src === 'llama-tokenizer-js' ? undefined : src, sample };
    // From the TypeScript sources the worker is TypeScript: node does not carry the main thread's tsx hooks (--import)
    // into worker threads, so a small bootstrap registers tsx there before importing the worker module. From the
    // compiled package (dist/, npm run build:js) it is plain JavaScript.
    const compiled = import.meta.url.endsWith('.js');
    const entry = new URL(compiled ? './prepare-worker.js' : './prepare-worker.ts', import.meta.url).href;
    const boot = compiled ? `import(${JSON.stringify(entry)})`
      : `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;
    for (let i = 0; i < size; i++) {
      const worker = new Worker(boot, { eval: true, workerData: init });
      const slot: Slot = { worker, pending: new Map(), dead: null };
      worker.on('message', (r: WorkerReply) => {
        const p = slot.pending.get(r.id);
        if (!p) return;
        slot.pending.delete(r.id);
        if (!slot.pending.size) worker.unref();
        if (r.ok) p.resolve(r.sample); else p.reject(rebuildError(r.error));
      });
      // A worker that is gone takes no more requests: a message posted to it is dropped, and its promise never settled
      // (the loader waited forever on the next sample sent there).
      worker.on('error', (e) => this.die(slot, new Error(`a data worker stopped: ${e.message}`)));
      worker.on('exit', (code) => { if (!this.closed) this.die(slot, new Error(`a data worker exited (code ${code})`)); });
      worker.unref();
      this.slots.push(slot);
    }
  }

  private die(slot: Slot, e: Error): void {
    slot.dead ??= e;
    this.fail(slot, slot.dead);
  }

  private fail(slot: Slot, e: Error): void {
    for (const p of slot.pending.values()) p.reject(e);
    slot.pending.clear();
  }

  run(record: DataRecord, seedKeys: number[]): Promise<PreparedSample> {
    if (this.closed) return Promise.reject(new Error('the data worker pool was closed'));
    const live = this.slots.filter((s) => !s.dead);
    if (!live.length) return Promise.reject(this.slots[0].dead!);
    const slot = live.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (!slot.pending.size) slot.worker.ref();
      slot.pending.set(id, { resolve, reject });
      slot.worker.postMessage({ id, record, seedKeys } satisfies WorkerMessage);
    });
  }

  /** Fails what is pending; each worker ends once the samples it is preparing are done (prepare-worker.ts: a worker
   *  stopped from outside with terminate() in the middle of opening a file left that descriptor open in the process),
   *  or is terminated after CLOSE_GRACE_MS. The process need not wait for either. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.slots) {
      this.fail(s, new Error('the data worker pool was closed'));
      if (s.dead) continue;
      s.worker.postMessage('close' satisfies WorkerMessage);
      s.worker.unref();
      const stuck = setTimeout(() => void s.worker.terminate(), CLOSE_GRACE_MS).unref();
      s.worker.once('exit', () => clearTimeout(stuck));
    }
  }
}
