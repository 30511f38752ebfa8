// Worker-thread side of the sample preparation pool: tokenises records and preprocesses their images off the main
// thread, so they overlap a training step even when that step keeps the main thread busy.
import { parentPort, workerData } from 'node:worker_threads';
import { loadTokenizer } from './tokenizer.ts';
import { prepareSample, type SampleOptions } from './loader.ts';
import type { DataRecord } from './dataset.ts';
import type { PreparedSample } from './batch.ts';

export interface WorkerInit { tokenizer: string | undefined; sample: Omit<SampleOptions, 'tokenizer'> }
export interface WorkerRequest { id: number; record: DataRecord; seedKeys: number[] }
export type WorkerReply =
  | { id: number; ok: true; sample: PreparedSample }
  | { id: number; ok: false; error: { name: string; message: string; file?: string } };

const init = workerData as WorkerInit;
const options: SampleOptions = { ...init.sample, tokenizer: loadTokenizer(init.tokenizer) };

parentPort!.on('message', (req: WorkerRequest) => {
  prepareSample(req.record, options, req.seedKeys).then(
    (sample) => {
      const t = sample.tokens;
      const transfer = [t.inputIds.buffer, t.promptMask.buffer, t.nonPaddingMask.buffer, t.nonMediaMask.buffer, ...sample.images.map((i) => i.buffer)];
      parentPort!.postMessage({ id: req.id, ok: true, sample } satisfies WorkerReply, transfer as ArrayBuffer[]);
    },
    (e: Error & { file?: string }) => {
      parentPort!.postMessage({ id: req.id, ok: false, error: { name: e.name, message: e.message, file: e.file } } satisfies WorkerReply);
    });
});
