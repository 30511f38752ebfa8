// The official training batch (spec §4.4 step 9), as owlet's model consumes it: ids and masks on the host (the
// splice plan and the labels are computed there), pixels as a tensor.
import { ArgumentError, type Tensor } from '../tensor/index.ts';

export interface OwlBatch {
  /** [B, T] row-major, T = max_length + 1; each image is a run of media_token_length ids < 0. */
  inputIds: Int32Array;
  batchSize: number;
  seqLen: number;
  /** Images per sample, in the order of `pixelValues`. */
  numImages: Int32Array;
  /** [B, T - 1] each: 1 where the next token counts (official masks). */
  nonPaddingMask: ArrayLike<number>;
  nonMediaMask: ArrayLike<number>;
  promptMask: ArrayLike<number>;
  /** [N_images, 3, R, R] or null for a text-only batch. */
  pixelValues: Tensor | null;
  /** Optional ids of the samples, for error reports. */
  sampleIds?: string[];
}

/** Where each image's tokens go: LLM sequence rows and the image-token rows they take (spec §1.5). */
export interface SplicePlan {
  rows: Int32Array; // b*T + position
  sources: Int32Array; // image*M + j
  imagesUsed: number;
}

/**
 * The official splice: media runs start where ids[i] < 0 and (i == 0 or ids[i] != ids[i-1]), searched over ids[:-1]
 * in training; sample b consumes images from the offset given by the image counts of the samples before it.
 */
export function splicePlan(b: OwlBatch, M: number, searchLen = b.seqLen - 1): SplicePlan {
  const { inputIds: ids, batchSize: B, seqLen: T, numImages } = b;
  const rows: number[] = [], sources: number[] = [];
  let offset = 0, used = 0;
  for (let s = 0; s < B; s++) {
    let r = 0;
    for (let i = 0; i < searchLen; i++) {
      const id = ids[s * T + i];
      if (id >= 0 || (i > 0 && ids[s * T + i - 1] === id)) continue;
      if (r >= numImages[s]) {
        throw new ArgumentError(`sample ${b.sampleIds?.[s] ?? s}: more <image> runs than its ${numImages[s]} image(s)`, 'splice');
      }
      if (i + M > T) throw new ArgumentError(`sample ${b.sampleIds?.[s] ?? s}: an image run at ${i} does not fit in ${T} tokens`, 'splice');
      const img = offset + r;
      for (let j = 0; j < M; j++) { rows.push(s * T + i + j); sources.push(img * M + j); }
      r++;
      used++;
      i += M - 1;
    }
    offset += numImages[s];
  }
  const nImg = b.pixelValues ? b.pixelValues.shape[0] : 0;
  if (offset > nImg) throw new ArgumentError(`the batch counts ${offset} images but pixel_values holds ${nImg}`, 'splice');
  return { rows: Int32Array.from(rows), sources: Int32Array.from(sources), imagesUsed: used };
}

/** Shifted labels with the official masking: label[b, i] = ids[b, i+1] where all three masks are 1, else ignore. */
export function lossLabels(b: OwlBatch, ignoreIndex = -100): { labels: Int32Array; counted: number } {
  const { inputIds: ids, batchSize: B, seqLen: T } = b;
  const labels = new Int32Array(B * T).fill(ignoreIndex);
  let counted = 0;
  for (let s = 0; s < B; s++) {
    for (let i = 0; i < T - 1; i++) {
      const m = s * (T - 1) + i;
      if (b.nonPaddingMask[m] * b.nonMediaMask[m] * b.promptMask[m] !== 1) continue;
      labels[s * T + i] = ids[s * T + i + 1];
      counted++;
    }
  }
  return { labels, counted };
}
