// Worker-thread side of the sample preparation pool: tokenises records and preprocesses their images off the main
// thread, so they overlap a training step even when that step keeps the main thread busy.
import { parentPort, workerData } from 'node:worker_threads';
import { loadTokenizer } from './tokenizer.ts';
import { prepareSample, type SampleOptions } from './loader.ts';
import type { DataRecord } from './dataset.ts';
import type { PreparedSample } from './batch.ts';

export interface WorkerInit { tokenizer: string | undefined; sample: Omit<SampleOptions, 'tokenizer'> }
export interface WorkerRequest { id: number; record: DataRecord; seedKeys: number[] }
/** What the pool sends: work, or 'close' (PreparePool.close()): finish what is in flight, then end the thread. */
export type WorkerMessage = WorkerRequest | 'close';
export type WorkerReply =
  | { id: number; ok: true; sample: PreparedSample }
  | { id: number; ok: false; error: { name: string; message: string; file?: string } };

const init = workerData as WorkerInit;
const options: SampleOptions = { ...init.sample, tokenizer: loadTokenizer(init.tokenizer) };

let inFlight = 0, closing = false;
// The thread ends by itself once its port is closed and no file read is pending. (terminate() from outside ended it
// wherever it was, and a file it was opening — its own modules while it started, an image — stayed open in the
// process for good: a run resumed over and over leaked descriptors.)
const closeWhenIdle = () => { if (closing && inFlight === 0) parentPort!.close(); };
const reply = (r: WorkerReply, transfer: ArrayBuffer[] = []) => {
  parentPort!.postMessage(r, transfer);
  inFlight--;
  closeWhenIdle();
};

parentPort!.on('message', (req: WorkerMessage) => {
  if (req === 'close') { closing = true; closeWhenIdle(); return; }
  inFlight++;
  prepareSample(req.record, options, req.seedKeys).then(
    (sample) => {
      const t = sample.tokens;
      const transfer = [t.inputIds.buffer, t.promptMask.buffer, t.nonPaddingMask.buffer, t.nonMediaMask.buffer, ...sample.images.map((i) => i.buffer)];
      reply({ id: req.id, ok: true, sample }, transfer as ArrayBuffer[]);
    },
    (e: Error & { file?: string }) => reply({ id: req.id, ok: false, error: { name: e.name, message: e.message, file: e.file } }));
});
