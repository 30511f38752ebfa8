// The official training batch (spec §4.4 item 9, `batchify`): input_ids [B, L+1], num_images [B], the three masks
// [B, L], pixel_values [N, 3, R, R] (all images of the micro-batch, in sample order) or null. owlet keeps ids as i32.
// Also: tensors from a batch, the loss targets the official forward derives from the masks, and conversion to and
// from the fixture's safetensors map (input_ids and masks stored as int64 there).
import { tensor, type Tensor, type Device } from '../tensor/index.ts';
import { DataFormatError } from './errors.ts';
import type { TokenizedSample } from './conversation.ts';

export interface Batch {
  batchSize: number;
  /** L (sequences hold L+1 ids). */
  maxLength: number;
  /** R, or 0 when the batch has no image. */
  resolution: number;
  inputIds: Int32Array;
  numImages: Int32Array;
  nonPaddingMask: Int32Array;
  nonMediaMask: Int32Array;
  promptMask: Int32Array;
  pixelValues: Float32Array | null;
  /** "file:line" of each sample. */
  sampleIds: string[];
  /** Targets that count in the loss (Σ of the product of the three masks). */
  labelCount: number;
  /** Non-padding ids (seq lengths summed), for tokens/s. */
  tokenCount: number;
}

export interface PreparedSample {
  id: string;
  tokens: TokenizedSample;
  /** One CHW Float32Array (3·R·R) per image of the record, in order. */
  images: Float32Array[];
}

/** Stacks prepared samples into one batch. */
export function collate(samples: readonly PreparedSample[], resolution: number): Batch {
  if (!samples.length) throw new DataFormatError('collate: no samples');
  const L = samples[0].tokens.promptMask.length, B = samples.length;
  const plane = 3 * resolution * resolution;
  const inputIds = new Int32Array(B * (L + 1));
  const nonPaddingMask = new Int32Array(B * L), nonMediaMask = new Int32Array(B * L), promptMask = new Int32Array(B * L);
  const numImages = new Int32Array(B);
  const nImages = samples.reduce((a, s) => a + s.images.length, 0);
  const pixelValues = nImages ? new Float32Array(nImages * plane) : null;
  let img = 0, labelCount = 0, tokenCount = 0;
  samples.forEach((s, b) => {
    const t = s.tokens;
    if (t.promptMask.length !== L) throw new DataFormatError(`collate: sample ${s.id} has max_length ${t.promptMask.length}, expected ${L}`);
    inputIds.set(t.inputIds, b * (L + 1));
    nonPaddingMask.set(t.nonPaddingMask, b * L);
    nonMediaMask.set(t.nonMediaMask, b * L);
    promptMask.set(t.promptMask, b * L);
    numImages[b] = s.images.length;
    for (const im of s.images) {
      if (im.length !== plane) throw new DataFormatError(`collate: an image of ${s.id} has ${im.length} values, expected 3·${resolution}²`);
      pixelValues!.set(im, img++ * plane);
    }
    labelCount += t.labelCount;
    tokenCount += t.seqLength;
  });
  return {
    batchSize: B, maxLength: L, resolution: nImages ? resolution : 0, inputIds, numImages, nonPaddingMask, nonMediaMask,
    promptMask, pixelValues, sampleIds: samples.map((s) => s.id), labelCount, tokenCount,
  };
}

/**
 * Next-token targets [B, L] as the official forward builds them: target[b, i] = input_ids[b, i+1] where
 * non_padding · non_media · prompt = 1 at i, else `ignoreIndex` (−100).
 */
export function lossTargets(b: Batch, ignoreIndex = -100): Int32Array {
  const L = b.maxLength, out = new Int32Array(b.batchSize * L);
  for (let r = 0; r < b.batchSize; r++) {
    for (let i = 0; i < L; i++) {
      const k = r * L + i;
      out[k] = b.nonPaddingMask[k] * b.nonMediaMask[k] * b.promptMask[k] === 1 ? b.inputIds[r * (L + 1) + i + 1] : ignoreIndex;
    }
  }
  return out;
}

export interface BatchTensors {
  inputIds: Tensor;
  numImages: Tensor;
  nonPaddingMask: Tensor;
  nonMediaMask: Tensor;
  promptMask: Tensor;
  pixelValues: Tensor | null;
}

/** The batch as tensors (i32 ids/counts/masks, f32 pixels). The caller owns and disposes them. */
export function toTensors(b: Batch, device: Device = 'cpu'): BatchTensors {
  const B = b.batchSize, L = b.maxLength, R = b.resolution;
  const o = { device };
  return {
    inputIds: tensor(b.inputIds, [B, L + 1], o),
    numImages: tensor(b.numImages, [B], o),
    nonPaddingMask: tensor(b.nonPaddingMask, [B, L], o),
    nonMediaMask: tensor(b.nonMediaMask, [B, L], o),
    promptMask: tensor(b.promptMask, [B, L], o),
    pixelValues: b.pixelValues ? tensor(b.pixelValues, [b.pixelValues.length / (3 * R * R), 3, R, R], o) : null,
  };
}

// ---- the fixture format: a map of named arrays, as a safetensors file holds them ----

export type StDType = 'F32' | 'I64' | 'I32';
export interface StTensor { dtype: StDType; shape: number[]; data: Float32Array | BigInt64Array | Int32Array }

const toI64 = (a: Int32Array): BigInt64Array => BigInt64Array.from(a, (v) => BigInt(v));

/** Batch → named arrays in the official/fixture layout (ids, counts and masks int64; pixels f32). */
export function batchToRecord(b: Batch): Record<string, StTensor> {
  const B = b.batchSize, L = b.maxLength;
  const rec: Record<string, StTensor> = {
    input_ids: { dtype: 'I64', shape: [B, L + 1], data: toI64(b.inputIds) },
    num_images: { dtype: 'I64', shape: [B], data: toI64(b.numImages) },
    non_padding_mask: { dtype: 'I64', shape: [B, L], data: toI64(b.nonPaddingMask) },
    non_media_mask: { dtype: 'I64', shape: [B, L], data: toI64(b.nonMediaMask) },
    prompt_mask: { dtype: 'I64', shape: [B, L], data: toI64(b.promptMask) },
  };
  if (b.pixelValues) {
    const R = b.resolution;
    rec.pixel_values = { dtype: 'F32', shape: [b.pixelValues.length / (3 * R * R), 3, R, R], data: b.pixelValues };
  }
  return rec;
}

function ints(rec: Record<string, { dtype: string; shape: readonly number[]; data: ArrayLike<number | bigint> }>, name: string,
  shape: number[]): Int32Array {
  const t = rec[name];
  if (!t) throw new DataFormatError(`batch record: missing "${name}"`);
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new DataFormatError(`batch record: "${name}" has shape [${t.shape.join(',')}], expected [${shape.join(',')}]`);
  }
  const out = new Int32Array(t.data.length);
  for (let i = 0; i < out.length; i++) out[i] = Number(t.data[i]);
  return out;
}

/** Named arrays (any integer/float dtype; e.g. read from batch.safetensors) → Batch. Sample ids are "#0", "#1", …. */
export function batchFromRecord(rec: Record<string, { dtype: string; shape: readonly number[]; data: ArrayLike<number | bigint> }>): Batch {
  const ids = rec.input_ids;
  if (!ids || ids.shape.length !== 2) throw new DataFormatError('batch record: "input_ids" must be [B, L+1]');
  const [B, L1] = ids.shape, L = L1 - 1;
  const inputIds = ints(rec, 'input_ids', [B, L1]);
  const numImages = ints(rec, 'num_images', [B]);
  const px = rec.pixel_values;
  const nImg = numImages.reduce((a, v) => a + v, 0);
  let pixelValues: Float32Array | null = null, resolution = 0;
  if (px && px.shape[0] > 0) {
    if (px.shape.length !== 4 || px.shape[1] !== 3 || px.shape[2] !== px.shape[3]) {
      throw new DataFormatError(`batch record: "pixel_values" must be [N, 3, R, R], got [${px.shape.join(',')}]`);
    }
    resolution = px.shape[2];
    pixelValues = px.data instanceof Float32Array ? px.data : Float32Array.from(px.data as ArrayLike<number>);
  }
  const have = px ? px.shape[0] : 0;
  if (have !== nImg) throw new DataFormatError(`batch record: num_images sums to ${nImg} but pixel_values holds ${have} images`);
  const nonPaddingMask = ints(rec, 'non_padding_mask', [B, L]);
  const nonMediaMask = ints(rec, 'non_media_mask', [B, L]);
  const promptMask = ints(rec, 'prompt_mask', [B, L]);
  let labelCount = 0, tokenCount = 0;
  for (let k = 0; k < B * L; k++) labelCount += nonPaddingMask[k] * nonMediaMask[k] * promptMask[k];
  for (let r = 0; r < B; r++) {
    let n = 0;
    for (let i = 0; i < L; i++) n += nonPaddingMask[r * L + i];
    tokenCount += n + 1;
  }
  return {
    batchSize: B, maxLength: L, resolution, inputIds, numImages, nonPaddingMask, nonMediaMask, promptMask, pixelValues,
    sampleIds: Array.from({ length: B }, (_, i) => `#${i}`), labelCount, tokenCount,
  };
}
