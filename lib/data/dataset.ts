// JSONL datasets in the official formats, mixed with weights into one seeded, shardable, resumable stream.
//
// Record formats (spec §5.2 and §4.2):
//   instruction: {"text": "<template conversation>", "image": ["a.jpg", …] (optional), "task_type": "llava_sft", …}
//   caption:     {"image": "a.jpg", "text": "a caption"} or {"image": "a.jpg", "caption": "…"}
// `format: 'auto'` (default) takes a record with a `caption` field, or with `image` as a single string and a text that
// is no conversation (no <image>, no "AI:"), as a caption; a conversation with one image path is an instruction record.
// Relative image paths are resolved against `imageRoot` (default: the JSONL file's folder).
//
// Epochs and mixing: in epoch e, source s contributes round(weight·n_s) samples: floor(weight) full copies plus a
// seeded random subset for the fractional part (a different subset each epoch). With `shuffle` the epoch's list is
// permuted with rng(seed, e). The official code just concatenates files (all weights 1).
// Sharding: the epoch list is padded (by repeating its start, as torch's DistributedSampler does) to a multiple of
// worldSize and cut into worldSize contiguous blocks; rank r reads block r. The shards, concatenated in rank order,
// are the unsharded epoch (plus the padding). Training streams interleave instead (ShardOptions.chunk): rank r reads
// every W-th micro-batch of the one global stream, which is what makes W ranks equal to one rank accumulating W×.
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { DataFormatError } from './errors.ts';
import { AI_MARKER, IMAGE_TOKEN } from './template.ts';
import { hashInts, permutation, rng } from './rng.ts';

export type RecordFormat = 'auto' | 'instruction' | 'caption';

export interface DataSource {
  path: string;
  /** Samples per epoch = round(weight · records); default 1. */
  weight?: number;
  format?: RecordFormat;
  /** Folder relative image paths are resolved against (default: the JSONL file's folder). */
  imageRoot?: string;
}

export interface DataRecord {
  /** "file:line" — names the sample in messages and batches. */
  id: string;
  file: string;
  line: number;
  kind: 'instruction' | 'caption';
  /** The conversation (instruction) or the caption. */
  text: string;
  /** Resolved image paths, in `<image>` order. */
  images: string[];
  taskType?: string;
}

export interface DataProblem { id: string; message: string }

/** "file:line: message" (the message of a malformed line names its place already), the first `n` of a list. */
export function describeProblems(ps: readonly DataProblem[], n: number): string {
  return ps.slice(0, n).map((p) => (p.message.startsWith(p.id) ? p.message : `${p.id}: ${p.message}`)).join('; ');
}

export interface LoadOptions {
  /** 'skip' (default): malformed lines are left out and listed in `problems`; 'stop': the first one throws. */
  onError?: 'skip' | 'stop';
}

function parseRecord(obj: unknown, file: string, line: number, format: RecordFormat, root: string): DataRecord {
  const fail = (m: string): never => { throw new DataFormatError(m, file, line); };
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) fail('expected a JSON object');
  const o = obj as Record<string, unknown>;
  const img = o.image;
  // auto: a conversation (its text holds <image> or "AI:") is an instruction record even with "image" as one string, as
  // the official loader reads it; otherwise a `caption` field or a single image path makes a caption record.
  const conversation = typeof o.text === 'string' && (o.text.includes(IMAGE_TOKEN) || o.text.includes(AI_MARKER.trim()));
  const kind = format !== 'auto' ? format
    : typeof o.caption === 'string' || (typeof img === 'string' && !conversation) ? 'caption' : 'instruction';
  const abs = (p: unknown): string => {
    if (typeof p !== 'string' || !p) fail(`"image" entries must be non-empty strings, got ${JSON.stringify(p)}`);
    return isAbsolute(p as string) ? (p as string) : resolve(root, p as string);
  };
  let images: string[];
  if (img === undefined || img === null) images = [];
  else if (typeof img === 'string') images = [abs(img)];
  else if (Array.isArray(img)) images = img.map(abs);
  else images = fail(`"image" must be a path or a list of paths, got ${typeof img}`);
  const text = kind === 'caption' ? (o.caption ?? o.text) : o.text;
  if (typeof text !== 'string') fail(kind === 'caption' ? 'a caption record needs a string "text" or "caption"' : 'an instruction record needs a string "text"');
  if (kind === 'caption' && images.length !== 1) fail(`a caption record needs exactly one image, got ${images.length}`);
  const taskType = typeof o.task_type === 'string' ? o.task_type : undefined;
  return { id: `${file}:${line}`, file, line, kind, text: text as string, images, taskType };
}

/** Reads one JSONL file (blank lines ignored). Malformed lines throw or are reported, per `onError`. */
export function readJsonl(source: string | DataSource, o: LoadOptions = {}, problems: DataProblem[] = []): DataRecord[] {
  const spec = typeof source === 'string' ? { path: source } : source;
  let content: string;
  try { content = readFileSync(spec.path, 'utf8'); } catch (e) {
    throw new DataFormatError(`cannot read (${(e as Error).message})`, spec.path);
  }
  // A whole-file JSON array (LLaVA ships its data so) is no record file: each of its lines used to be skipped as
  // "invalid JSON", and the run then stopped on "no samples" without saying why.
  if (/^\uFEFF?\s*\[/.test(content)) {
    throw new DataFormatError('holds a JSON array, not JSON Lines (one record object per line); convert it, e.g. ' +
      "jq -c '.[]' FILE.json > FILE.jsonl (the records need the official fields: \"text\", \"image\")", spec.path);
  }
  const root = spec.imageRoot ?? dirname(resolve(spec.path));
  const out: DataRecord[] = [];
  content.split('\n').forEach((raw, i) => {
    const lineText = raw.trim();
    if (!lineText) return;
    try {
      let obj: unknown;
      try { obj = JSON.parse(lineText); } catch (e) { throw new DataFormatError(`invalid JSON (${(e as Error).message})`, spec.path, i + 1); }
      out.push(parseRecord(obj, spec.path, i + 1, spec.format ?? 'auto', root));
    } catch (e) {
      if (o.onError === 'stop' || !(e instanceof DataFormatError)) throw e;
      problems.push({ id: `${spec.path}:${i + 1}`, message: e.message });
    }
  });
  return out;
}

export class JsonlDataset {
  readonly sources: readonly { spec: DataSource; records: readonly DataRecord[] }[];
  readonly problems: DataProblem[];
  private readonly offsets: number[];
  private readonly orders = new Map<string, Uint32Array>();

  private constructor(sources: { spec: DataSource; records: DataRecord[] }[], problems: DataProblem[]) {
    this.sources = sources;
    this.problems = problems;
    this.offsets = [];
    let n = 0;
    for (const s of sources) { this.offsets.push(n); n += s.records.length; }
  }

  static load(sources: readonly (string | DataSource)[], o: LoadOptions = {}): JsonlDataset {
    if (!sources.length) throw new DataFormatError('no data files given');
    const problems: DataProblem[] = [];
    const loaded = sources.map((s) => {
      const spec = typeof s === 'string' ? { path: s } : { ...s };
      const w = spec.weight ?? 1;
      if (!(w >= 0) || !Number.isFinite(w)) throw new DataFormatError(`weight must be a finite number ≥ 0, got ${spec.weight}`, spec.path);
      return { spec, records: readJsonl(spec, o, problems) };
    });
    return new JsonlDataset(loaded, problems);
  }

  /** Records in all files. */
  get size(): number { return this.sources.reduce((a, s) => a + s.records.length, 0); }
  record(index: number): DataRecord {
    let s = this.sources.length - 1;
    while (s > 0 && this.offsets[s] > index) s--;
    return this.sources[s].records[index - this.offsets[s]];
  }

  /** Samples in one epoch after weighting. */
  get epochLength(): number {
    return this.sources.reduce((a, s) => a + Math.round((s.spec.weight ?? 1) * s.records.length), 0);
  }

  /**
   * A fingerprint of what is read, in order — each record's kind, text and images (relative to its image root) and
   * each file's weight — not of where the files are: a saved position only fits the same mixture, and data moved
   * elsewhere whole is still that mixture. (It hashed the paths, record counts and weights: a file rewritten in
   * another order resumed silently with other samples, and a copy at another path was refused.)
   */
  get fingerprint(): number {
    if (this.contentHash === null) {
      const h = createHash('sha256');
      for (const s of this.sources) {
        const root = s.spec.imageRoot ?? dirname(resolve(s.spec.path));
        h.update(`${s.records.length}|${s.spec.weight ?? 1}\n`);
        for (const r of s.records) h.update(JSON.stringify([r.kind, r.text, r.images.map((i) => relative(root, i))]) + '\n');
      }
      this.contentHash = h.digest().readUInt32LE(0);
    }
    return this.contentHash;
  }
  private contentHash: number | null = null;

  /** The fingerprint positions saved before 2026-11-27 hold (paths, record counts, weights), still accepted. */
  get legacyFingerprint(): number {
    const xs: number[] = [];
    for (const s of this.sources) {
      for (const ch of s.spec.path) xs.push(ch.codePointAt(0)!);
      xs.push(s.records.length, Math.round((s.spec.weight ?? 1) * 1e6));
    }
    return hashInts(...xs);
  }

  /** Record indices of epoch `epoch` in reading order (shuffled with the seed when asked). Cached per epoch. */
  epochOrder(epoch: number, seed: number, shuffle: boolean): Uint32Array {
    const key = `${epoch}/${seed}/${shuffle}`;
    let order = this.orders.get(key);
    if (order) return order;
    const list: number[] = [];
    this.sources.forEach((s, si) => {
      const n = s.records.length, count = Math.round((s.spec.weight ?? 1) * n);
      if (!n) return;
      const full = Math.floor(count / n), rest = count - full * n;
      for (let k = 0; k < full; k++) for (let i = 0; i < n; i++) list.push(this.offsets[si] + i);
      if (rest) {
        const pick = shuffle ? permutation(n, rng(seed, epoch, si, 0x6d6978)) : null;
        for (let i = 0; i < rest; i++) list.push(this.offsets[si] + (pick ? pick[i] : i));
      }
    });
    order = Uint32Array.from(list);
    if (shuffle) {
      const p = permutation(order.length, rng(seed, epoch, 0x73687566));
      order = Uint32Array.from(p, (i) => order![i]);
    }
    if (this.orders.size > 4) this.orders.delete(this.orders.keys().next().value!);
    this.orders.set(key, order);
    return order;
  }
}

export interface ShardOptions {
  seed: number;
  shuffle: boolean;
  rank: number;
  worldSize: number;
  /**
   * Interleaved layout (training): the epochs, unpadded and concatenated, form one global stream; it is cut into
   * chunks of this many samples (one micro-batch) and rank r reads chunks r, r+W, r+2W, … So the ranks' micro-batches
   * of one step are consecutive micro-batches of the global stream, and W ranks read what one rank with W× the
   * gradient accumulation reads. Without it: the block layout below (evaluation).
   */
  chunk?: number;
  /** Interleaved layout: the global stream position this rank's position 0 starts from (a run resumed with another
   *  world size continues from where the saved run was). */
  base?: number;
}

/** Where stream position `pos` of a rank lands: the epoch, the position inside the (unsharded) epoch, the record. */
export interface StreamSlot { pos: number; epoch: number; epochPos: number; record: number }

/** The per-rank stream over epochs: rank r reads block r of each padded epoch, or every W-th chunk (interleaved). */
export class ShardStream {
  /** Positions per epoch on each rank. */
  readonly perRank: number;
  constructor(readonly dataset: JsonlDataset, readonly o: ShardOptions) {
    if (!Number.isInteger(o.worldSize) || o.worldSize < 1) throw new DataFormatError(`worldSize must be a positive integer, got ${o.worldSize}`);
    if (!Number.isInteger(o.rank) || o.rank < 0 || o.rank >= o.worldSize) throw new DataFormatError(`rank must be in [0, ${o.worldSize}), got ${o.rank}`);
    if (o.chunk !== undefined && (!Number.isInteger(o.chunk) || o.chunk < 1)) throw new DataFormatError(`chunk must be a positive integer, got ${o.chunk}`);
    if (o.base !== undefined && (!Number.isInteger(o.base) || o.base < 0)) throw new DataFormatError(`base must be a non-negative integer, got ${o.base}`);
    const n = dataset.epochLength;
    if (n === 0) {
      const files = dataset.sources.map((s) => s.spec.path).join(', ');
      throw new DataFormatError(`the data files hold no samples (${files || 'no file'}${dataset.problems.length ? `; ${dataset.problems.length} malformed line(s)` : ''})`);
    }
    this.perRank = Math.ceil(n / o.worldSize);
  }
  /** The global stream position (interleaved layout) of this rank's position `pos`. */
  globalPos(pos: number): number {
    const c = this.o.chunk!;
    return (this.o.base ?? 0) + (Math.floor(pos / c) * this.o.worldSize + this.o.rank) * c + (pos % c);
  }
  slot(pos: number): StreamSlot {
    if (this.o.chunk !== undefined) {
      const n = this.dataset.epochLength, g = this.globalPos(pos), epoch = Math.floor(g / n);
      const order = this.dataset.epochOrder(epoch, this.o.seed, this.o.shuffle);
      return { pos, epoch, epochPos: g - epoch * n, record: order[g - epoch * n] };
    }
    const epoch = Math.floor(pos / this.perRank);
    const order = this.dataset.epochOrder(epoch, this.o.seed, this.o.shuffle);
    const epochPos = (this.o.rank * this.perRank + (pos - epoch * this.perRank)) % order.length; // wraps into padding
    return { pos, epoch, epochPos, record: order[epochPos] };
  }
}
