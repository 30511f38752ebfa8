// The data loader: turns a JsonlDataset into batches, with prefetching, skip-and-count of bad samples, and an exact
// resumable position.
//
// Prefetch: up to `prefetch` batches' worth of samples are being prepared at any time. Image decoding runs on
// libvips' threads (sharp), so it proceeds while the caller computes; tokenisation and normalisation run on the main
// thread whenever the caller awaits. Samples are consumed strictly in stream order, so batches do not depend on
// timing: a corrupt sample is replaced by the next one in the stream (as the official dataset moves to the next
// index), and the position counts stream slots consumed, skipped ones included.
// Augmentation randomness is drawn from rng(seed, epoch, position in the epoch, image), never from a running state.
import type { Tokenizer } from './tokenizer.ts';
import { llamaTokenizer } from './tokenizer.ts';
import { tokenizeCaption, tokenizeConversation, type SequenceOptions } from './conversation.ts';
import { preprocessImage, type AugmentOptions } from './image.ts';
import { collate, type Batch, type PreparedSample } from './batch.ts';
import { JsonlDataset, ShardStream, describeProblems, type DataProblem, type DataRecord, type StreamSlot } from './dataset.ts';
import { DataFormatError, ImageError, SampleError, TokenizerError } from './errors.ts';
import { countImageTokens } from './template.ts';
import { rng } from './rng.ts';
import { PreparePool } from './prepare-pool.ts';

export interface SampleOptions extends SequenceOptions {
  tokenizer?: Tokenizer;
  /** Image side R. */
  resolution: number;
  /** 'train': RandomResizedCrop + flip; 'eval': squash resize. */
  mode: 'train' | 'eval';
  augment?: AugmentOptions;
}

/** Tokenises one record and preprocesses its images. Throws SampleError / ImageError for a bad sample. */
export async function prepareSample(rec: DataRecord, o: SampleOptions, seedKeys: readonly number[] = [0]): Promise<PreparedSample> {
  const tok = o.tokenizer ?? llamaTokenizer();
  let tokens;
  if (rec.kind === 'caption') tokens = tokenizeCaption(rec.text, tok, o);
  else {
    const placeholders = countImageTokens(rec.text);
    if (placeholders > rec.images.length) {
      throw new SampleError(`${rec.id}: ${placeholders} <image> placeholders but ${rec.images.length} images`);
    }
    tokens = tokenizeConversation(rec.text, tok, o);
  }
  const images = await Promise.all(rec.images.map((path, k) =>
    preprocessImage(path, { ...o.augment, resolution: o.resolution, mode: o.mode, rng: o.mode === 'train' ? rng(...seedKeys, k) : undefined })));
  return { id: rec.id, tokens, images };
}

/** Where a loader stands; serialise it into a checkpoint and pass it back as `position` to continue identically. */
export interface LoaderPosition {
  version: 1;
  /** Stream slots consumed on this rank (skipped samples included). */
  pos: number;
  /** The epoch the next sample comes from (informative). */
  epoch: number;
  seed: number;
  rank: number;
  worldSize: number;
  shuffle: boolean;
  /** JsonlDataset.fingerprint: the position only fits the same files, sizes and weights. */
  fingerprint: number;
  /** Interleaved layout (ShardOptions.chunk): samples per chunk, and the global position the rank's stream starts at. */
  chunk?: number;
  base?: number;
}

export interface LoaderOptions extends SampleOptions {
  batchSize: number;
  seed?: number;
  /** Default: true in train mode, false in eval mode. */
  shuffle?: boolean;
  rank?: number;
  worldSize?: number;
  /** Interleave the ranks' reads in chunks of this many samples (see ShardOptions.chunk); training passes batchSize.
   *  Epoch ends are not respected then: use it for endless streams. */
  chunk?: number;
  /** Epochs to read; default endless in train mode, 1 in eval mode. */
  epochs?: number;
  /** Batches prepared ahead (default 2). */
  prefetch?: number;
  /** 'skip' (default): a bad sample is counted, listed and replaced by the next; 'stop': its error is thrown. */
  onError?: 'skip' | 'stop';
  /** Continue from a saved position. */
  position?: LoaderPosition;
  /** Worker threads that tokenise and preprocess (default 0: on the main thread while the caller awaits). With
   *  workers, preparation overlaps a training step that keeps the main thread busy; batches are identical. */
  workers?: number;
}

export interface LoaderStats {
  batches: number;
  samples: number;
  skipped: number;
  /** The first 1000 problems (sample id and message). */
  problems: DataProblem[];
}

// `fatal`: an error that is not about the sample (a bug, a data worker that died) — it ends the stream. It is carried
// as a value, never as a rejected promise: samples prefetched behind the one being awaited fail together, and their
// rejections, awaited by no one, used to kill the process (unhandled rejection) before the caller could catch the first.
type Outcome = { ok: true; slot: StreamSlot; sample: PreparedSample } | { ok: false; slot: StreamSlot; error: Error; fatal: boolean };
const isDataError = (e: unknown): e is Error =>
  e instanceof ImageError || e instanceof SampleError || e instanceof DataFormatError || e instanceof TokenizerError;
const asError = (e: unknown): Error => (e instanceof Error ? e : new Error(`sample preparation failed: ${String(e)}`));

export class DataLoader implements AsyncIterable<Batch> {
  readonly stream: ShardStream;
  readonly stats: LoaderStats = { batches: 0, samples: 0, skipped: 0, problems: [] };
  private readonly o: LoaderOptions & { seed: number; shuffle: boolean; rank: number; worldSize: number; prefetch: number };
  private readonly end: number;
  private consumed: number;
  private launched: number;
  private readonly inflight: { slot: StreamSlot; p: Promise<Outcome> }[] = [];
  private closed = false;
  private readonly pool: PreparePool | null;
  /** Samples skipped since the last one that could be prepared: a whole pass of them means none can be. */
  private skippedInARow = 0;
  /** The error that ended the stream, thrown again by any later next(). */
  private failure: Error | null = null;

  constructor(readonly dataset: JsonlDataset, options: LoaderOptions) {
    const o = {
      ...options, seed: options.seed ?? 0, shuffle: options.shuffle ?? options.mode === 'train',
      rank: options.rank ?? 0, worldSize: options.worldSize ?? 1, prefetch: options.prefetch ?? 2,
    };
    if (!Number.isInteger(o.batchSize) || o.batchSize < 1) throw new DataFormatError(`batchSize must be a positive integer, got ${o.batchSize}`);
    if (!Number.isInteger(o.prefetch) || o.prefetch < 1) throw new DataFormatError(`prefetch must be a positive integer, got ${o.prefetch}`);
    // (a NaN or negative epoch count read no batch at all, as if the data were empty; a fractional or NaN seed drew
    // the samples and augmentations of another seed — 1.5 those of 1, NaN those of 0)
    if (o.epochs !== undefined && o.epochs !== Infinity && !(Number.isInteger(o.epochs) && o.epochs >= 0)) {
      throw new DataFormatError(`epochs must be a whole number >= 0 (or Infinity), got ${o.epochs}`);
    }
    if (!Number.isSafeInteger(o.seed)) throw new DataFormatError(`seed must be a whole number, got ${o.seed}`);
    this.o = o;
    const p = o.position;
    this.stream = new ShardStream(dataset, { ...o, base: o.chunk !== undefined ? p?.base ?? 0 : undefined });
    const epochs = o.epochs ?? (o.mode === 'train' ? Infinity : 1);
    this.end = epochs * this.stream.perRank;
    if (p) {
      const want: Record<string, unknown> = { seed: o.seed, rank: o.rank, worldSize: o.worldSize, shuffle: o.shuffle, fingerprint: dataset.fingerprint };
      // One rank reads the same samples in either layout (from base 0), so its positions fit both.
      if (o.worldSize > 1 || p.worldSize > 1 || (p.base ?? 0) > 0) want.chunk = o.chunk;
      if (p.fingerprint === dataset.legacyFingerprint) want.fingerprint = p.fingerprint; // (saved before content hashing)
      for (const [k, v] of Object.entries(want)) {
        if ((p as unknown as Record<string, unknown>)[k] !== v) {
          const saved = String((p as unknown as Record<string, unknown>)[k]);
          throw new DataFormatError(k === 'fingerprint'
            ? 'cannot resume the data position: the data are not what the checkpoint was reading (records — their text, ' +
              `images or order — or the files' weights changed; fingerprint ${saved} then, ${String(v)} now). Put the original files back, or ` +
              'start a new run from the checkpoint\'s weights (model.weights) with the new data'
            : `cannot resume: the saved position has ${k} = ${saved}, this loader ${String(v)}`);
        }
      }
      if (p.version !== 1 || !Number.isInteger(p.pos) || p.pos < 0) throw new DataFormatError('cannot resume: malformed position');
    }
    this.consumed = this.launched = p?.pos ?? 0;
    const workers = options.workers ?? 0;
    if (!Number.isInteger(workers) || workers < 0) throw new DataFormatError(`workers must be a non-negative integer, got ${workers}`);
    this.pool = workers > 0 ? new PreparePool(workers, o) : null;
  }

  /** Samples being prepared ahead right now. */
  get pending(): number { return this.inflight.length; }

  /** The position after the last batch returned (prefetched samples are not counted). */
  position(): LoaderPosition {
    const { seed, rank, worldSize, shuffle, chunk } = this.o;
    const base = { version: 1 as const, pos: this.consumed, epoch: Math.floor(this.consumed / this.stream.perRank), seed, rank, worldSize, shuffle, fingerprint: this.dataset.fingerprint };
    if (chunk === undefined) return base;
    const epoch = Math.floor(this.stream.globalPos(this.consumed) / this.dataset.epochLength);
    return { ...base, epoch, chunk, base: this.stream.o.base ?? 0 };
  }

  private launch(): void {
    const target = this.o.prefetch * this.o.batchSize;
    while (!this.closed && this.inflight.length < target && this.launched < this.end) {
      const slot = this.stream.slot(this.launched++);
      const rec = this.dataset.record(slot.record);
      const keys = [this.o.seed, slot.epoch, slot.epochPos];
      const p: Promise<Outcome> = (this.pool ? this.pool.run(rec, keys) : prepareSample(rec, this.o, keys)).then(
        (sample) => ({ ok: true as const, slot, sample }),
        (error: unknown) => ({ ok: false as const, slot, error: asError(error), fatal: !isDataError(error) }));
      this.inflight.push({ slot, p });
    }
  }

  /** The next batch, or null once the last epoch is done (a final batch may be smaller). */
  async next(): Promise<Batch | null> {
    if (this.failure) throw this.failure;
    const samples: PreparedSample[] = [];
    while (samples.length < this.o.batchSize) {
      this.launch();
      const head = this.inflight.shift();
      if (!head) break;
      const r = await head.p;
      this.consumed = head.slot.pos + 1;
      if (r.ok) { samples.push(r.sample); this.skippedInARow = 0; continue; }
      const id = this.dataset.record(head.slot.record).id;
      if (this.o.onError === 'stop' || r.fatal) { this.fail(r.error); }
      this.stats.skipped++;
      if (this.stats.problems.length < 1000) this.stats.problems.push({ id, message: r.error.message });
      // A repeating (training) stream whose every sample fails would otherwise skip forever without a word.
      if (++this.skippedInARow >= this.stream.perRank) {
        this.fail(new DataFormatError(`no sample of a whole pass over the data could be prepared (${this.skippedInARow} ` +
          `skipped in a row; on_corrupt: skip). First: ${describeProblems(this.stats.problems, 3)}`));
      }
    }
    this.launch(); // keep the pipeline full while the caller computes
    if (!samples.length) return null;
    this.stats.batches++;
    this.stats.samples += samples.length;
    return collate(samples, this.o.resolution);
  }

  /** Ends the stream on an error: this and every later next() throws it (a closed stream would read as the end of
   *  the data). */
  private fail(e: Error): never {
    this.failure = e;
    this.close();
    throw e;
  }

  /** Stops launching new work (and ends the worker threads); samples in flight are dropped. */
  close(): void {
    this.closed = true;
    this.pool?.close();
    for (const f of this.inflight) f.p.catch(() => undefined);
    this.inflight.length = 0;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Batch> {
    for (;;) {
      const b = await this.next();
      if (!b) return;
      yield b;
    }
  }
}

/**
 * Where a training run stands in the global stream, from every rank's saved position (rank order, interleaved
 * layout): the end of the last round of chunks any rank entered. Without skipped samples every rank stands at the
 * same round end, so this is exact: steps × micro-batch × accumulation × world size samples. A rank that replaced
 * skipped samples may have read into the next round; the rest of that round is then not read by the resumed run.
 */
export function globalStreamPosition(positions: LoaderPosition[]): number {
  if (!positions.length) throw new DataFormatError('cannot resume: no saved data position');
  const world = positions[0].worldSize;
  if (positions.length !== world || positions.some((p, r) => p.rank !== r || p.worldSize !== world)) {
    throw new DataFormatError(`cannot resume: expected the positions of ranks 0..${world - 1} in order, got ${positions.map((p) => `${p.rank}/${p.worldSize}`).join(', ')}`);
  }
  let end = 0;
  for (const p of positions) {
    if (!Number.isInteger(p.pos) || p.pos < 0) throw new DataFormatError('cannot resume: malformed position');
    if (world === 1) { end = (p.base ?? 0) + p.pos; continue; }
    if (p.chunk === undefined) {
      throw new DataFormatError(`cannot resume: the positions were saved by ${world} ranks in the block layout (not a training stream), which does not map onto another world size`);
    }
    end = Math.max(end, (p.base ?? 0) + Math.ceil(p.pos / p.chunk) * world * p.chunk);
  }
  return end;
}

/** Rank `rank` of `worldSize`'s position that continues a run from its saved positions (any world size). */
export function rebasedPosition(positions: LoaderPosition[], rank: number, worldSize: number, chunk: number): LoaderPosition {
  const g = globalStreamPosition(positions);
  const { seed, shuffle, fingerprint } = positions[0];
  for (const p of positions) {
    if (p.seed !== seed || p.shuffle !== shuffle || p.fingerprint !== fingerprint) throw new DataFormatError('cannot resume: the ranks saved positions of different streams');
  }
  return { version: 1, pos: 0, epoch: 0, seed, rank, worldSize, shuffle, fingerprint, chunk, base: g };
}
